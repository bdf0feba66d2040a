"""Layer-wise post-training solvers against their published definitions, written here directly."""

import numpy as np
import pytest

from kprune.core import layerwise


def correlated_inputs(rows, inputs, seed=0):
    """Inputs whose features are correlated (a random mixing of independent ones)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, inputs)) @ rng.normal(size=(inputs, inputs))


def hessian_of(x):
    stats = layerwise.InputStatistics(x.shape[1])
    for start in range(0, len(x), 50):  # streamed in batches, as the method gathers it
        stats.add(x[start:start + 50])
    return stats.hessian()


def sparsegpt_by_definition(kernel, hessian, keep, dampening=0.01):
    """Column by column in order: zero the pruned weights of input j, then compensate
    the change delta_j on the inputs not yet processed, F, by solving
    H_FF Delta_F = -H_Fj delta_j (H dampened)."""
    w = kernel.astype(np.float64).copy()  # [inputs, outputs]
    h = hessian.copy()
    h[np.diag_indices_from(h)] += dampening * np.mean(np.diag(h))
    inputs = w.shape[0]
    for j in range(inputs):
        delta = np.where(keep[j], w[j], 0.0) - w[j]
        w[j] += delta
        rest = slice(j + 1, inputs)
        if j + 1 < inputs:
            w[rest] += np.linalg.solve(h[rest, rest], -np.outer(h[rest, j], delta))
    return w


@pytest.mark.parametrize("inputs, block_size", [(16, 8), (48, 16), (64, 128)])
def test_sparsegpt_equals_its_definition_for_a_given_mask(inputs, block_size):
    x = correlated_inputs(400, inputs)
    kernel = np.random.default_rng(1).normal(size=(inputs, 6))
    keep = np.random.default_rng(2).random(kernel.shape) > 0.5
    hessian = hessian_of(x)
    got = layerwise.sparsegpt(kernel, hessian, mask=keep, block_size=block_size)
    want = sparsegpt_by_definition(kernel, hessian, keep)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-8 * np.abs(want).max())
    assert np.all(got[~keep] == 0)


def test_sparsegpt_error_is_below_wanda_and_magnitude_on_correlated_inputs():
    x = correlated_inputs(512, 64, seed=3)
    kernel = np.random.default_rng(4).normal(size=(64, 32))
    stats = layerwise.InputStatistics(64)
    stats.add(x)
    hessian = stats.hessian()
    for target in (dict(sparsity=0.5), dict(n_m=(2, 4))):
        errors = {
            "magnitude": kernel * layerwise.magnitude_mask(kernel, **target),
            "wanda": kernel * layerwise.wanda_mask(kernel, stats.input_norms(), **target),
            "sparsegpt": layerwise.sparsegpt(kernel, hessian, block_size=16, **target),
        }
        errors = {k: layerwise.reconstruction_error(kernel, v, hessian) for k, v in errors.items()}
        assert errors["sparsegpt"] < errors["wanda"] and errors["sparsegpt"] < errors["magnitude"]
        assert errors["sparsegpt"] < 0.8 * errors["magnitude"], errors


def test_reconstruction_error_is_the_relative_output_error():
    x = correlated_inputs(100, 8)
    kernel = np.random.default_rng(5).normal(size=(8, 3))
    pruned = kernel * (np.random.default_rng(6).random(kernel.shape) > 0.5)
    want = np.sum((x @ (pruned - kernel)) ** 2) / np.sum((x @ kernel) ** 2)
    assert layerwise.reconstruction_error(kernel, pruned, hessian_of(x)) == pytest.approx(want)


def test_wanda_mask_equals_the_published_score_per_output():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 20)) * rng.uniform(0.1, 3.0, size=20)
    kernel = rng.normal(size=(20, 5))
    stats = layerwise.InputStatistics(20, gram=False)
    stats.add(x)
    keep = layerwise.wanda_mask(kernel, stats.input_norms(), sparsity=0.5)
    score = np.abs(kernel) * np.linalg.norm(x, axis=0)[:, None]  # |W_ij| * ||X_j||_2
    for out in range(5):  # per output: the 10 highest scores kept
        assert set(np.flatnonzero(keep[:, out])) == set(np.argsort(-score[:, out])[:10])


def test_n_m_groups_hold_along_the_inputs_for_every_method():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 16))
    kernel = rng.normal(size=(16, 4))
    stats = layerwise.InputStatistics(16)
    stats.add(x)
    results = [kernel * layerwise.magnitude_mask(kernel, n_m=(2, 4)),
               kernel * layerwise.wanda_mask(kernel, stats.input_norms(), n_m=(2, 4)),
               layerwise.sparsegpt(kernel, stats.hessian(), n_m=(2, 4), block_size=8)]
    for result in results:
        nonzero_per_group = (result.reshape(4, 4, 4) != 0).sum(axis=1)  # [groups, outputs]
        assert nonzero_per_group.max() == 2


def test_dead_inputs_are_zeroed_and_do_not_break_the_factorisation():
    x = correlated_inputs(200, 8)
    x[:, 3] = 0.0  # an input that never fires
    kernel = np.random.default_rng(9).normal(size=(8, 4))
    pruned = layerwise.sparsegpt(kernel, hessian_of(x), sparsity=0.25)
    assert np.all(pruned[3] == 0) and np.all(np.isfinite(pruned))


def test_patches_times_the_kernel_is_the_convolution():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 7, 6, 3))
    kernel = rng.normal(size=(3, 2, 3, 4))
    cols = layerwise.patches(x, (3, 2), strides=(2, 1), padding="same", dilation_rate=(1, 1))
    want = np.zeros((2, 4, 6, 4))  # "same": output ceil(7/2) x 6, padded (1, 1) and (0, 1)
    padded = np.pad(x, ((0, 0), (1, 1), (0, 1), (0, 0)))
    for i in range(4):
        for j in range(6):
            want[:, i, j] = np.einsum("nabc,abco->no", padded[:, 2 * i:2 * i + 3, j:j + 2], kernel)
    np.testing.assert_allclose(cols @ kernel.reshape(-1, 4), want.reshape(-1, 4), atol=1e-12)


def test_bad_arguments_are_refused():
    kernel = np.ones((6, 2))
    with pytest.raises(ValueError, match="exactly one of `sparsity`, `n_m` or `mask`"):
        layerwise.sparsegpt(kernel, np.eye(6), sparsity=0.5, n_m=(2, 4))
    with pytest.raises(ValueError, match="whole groups of 4. Received: 6 inputs"):
        layerwise.sparsegpt(kernel, np.eye(6), n_m=(2, 4))
    with pytest.raises(ValueError, match="whole groups of 4"):
        layerwise.wanda_mask(kernel, np.ones(6), n_m=(2, 4))
    with pytest.raises(ValueError, match="No calibration rows"):
        layerwise.InputStatistics(3).hessian()


def test_centered_hessian_is_twice_the_covariance_and_a_constant_input_is_dead():
    x = correlated_inputs(300, 6) + 5.0  # inputs with large means, as after a ReLU
    x[:, 2] = 3.0  # constant: all of it is mean
    stats = layerwise.InputStatistics(6)
    for start in range(0, 300, 64):
        stats.add(x[start:start + 64])
    centered = stats.hessian(centered=True)
    expected = 2 * np.cov(x, rowvar=False, bias=True)
    expected[2, :] = expected[:, 2] = 0.0
    np.testing.assert_allclose(centered, expected, rtol=1e-9, atol=1e-9)
    assert np.all(centered[2] == 0) and not np.allclose(centered, stats.hessian())
    pruned = layerwise.sparsegpt(np.ones((6, 2)), centered, sparsity=0.5)
    assert np.all(pruned[2] == 0)  # its weights only shift the mean: zeroed as dead


def test_dense_targets_are_the_least_squares_fit_of_the_dense_outputs():
    rng = np.random.default_rng(3)
    dense_x = correlated_inputs(400, 8, seed=3)
    x = dense_x + 0.3 * rng.normal(size=dense_x.shape)  # what a pruned model gives instead
    kernel = rng.normal(size=(8, 3))
    stats = layerwise.InputStatistics(8, paired=True)
    for start in range(0, 400, 64):
        stats.add(x[start:start + 64], dense_x[start:start + 64])
    h = 2 * x.T @ x / 400
    expected = np.linalg.solve(h + 0.01 * np.mean(np.diag(h)) * np.eye(8),
                               2 * x.T @ dense_x @ kernel / 400)
    np.testing.assert_allclose(stats.dense_targets(kernel), expected, rtol=1e-9)
    exact = stats.dense_targets(kernel, dampening=0.0)
    lstsq = np.linalg.lstsq(x, dense_x @ kernel, rcond=None)[0]
    np.testing.assert_allclose(exact, lstsq, rtol=1e-7, atol=1e-9)
    # the error measured from the statistics is the direct one
    pruned = layerwise.sparsegpt(exact, stats.hessian(), sparsity=0.5)
    direct = (np.sum((x @ pruned - dense_x @ kernel) ** 2)
              / np.sum((dense_x @ kernel) ** 2))
    assert layerwise.dense_output_error(kernel, pruned, stats) == pytest.approx(direct, rel=1e-7)
    centered = [a - a.mean(axis=0) for a in (x @ pruned, dense_x @ kernel)]
    assert layerwise.dense_output_error(kernel, pruned, stats, centered=True) == pytest.approx(
        np.sum((centered[0] - centered[1]) ** 2) / np.sum(centered[1] ** 2), rel=1e-7)


def test_paired_statistics_refuse_a_batch_without_its_dense_rows():
    paired = layerwise.InputStatistics(3, paired=True)
    with pytest.raises(ValueError, match="Paired statistics take `dense` rows with every batch"):
        paired.add(np.ones((2, 3)))
    with pytest.raises(ValueError, match="without the dense model's inputs .paired=False.: no"):
        layerwise.InputStatistics(3).dense_targets(np.ones((3, 1)))
