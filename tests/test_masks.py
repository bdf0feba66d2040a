"""kprune.masks: keep-masks in numpy, property-based invariants and every error path."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kprune import masks

FAST = settings(max_examples=50, deadline=None)

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
fractions = st.floats(0, 0.99, allow_nan=False)
small_arrays = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6), elements=finite
)
matrices = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8), elements=finite
)


@st.composite
def n_m_cases(draw, full=True):
    """(w, n, m, axis) with the grouping axis a multiple of m when ``full``."""
    m = draw(st.integers(2, 8))
    n = draw(st.integers(1, m - 1))
    ndim = draw(st.integers(1, 4))
    axis = ndim - 2 if ndim >= 2 else 0
    shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
    shape[axis] = m * draw(st.integers(1, 3)) if full else draw(st.integers(1, 2 * m + 1))
    w = draw(hnp.arrays(np.float32, tuple(shape), elements=finite))
    return w, n, m, axis


def _groups(values, axis, m):
    moved = np.moveaxis(values, axis, -1)
    return moved.reshape(-1, m)


# -- n_m ----------------------------------------------------------------------------


@FAST
@given(n_m_cases())
def test_n_m_keeps_the_n_largest_of_every_full_group(case):
    w, n, m, axis = case
    keep = masks.n_m(w, n, m)
    assert keep.shape == w.shape and keep.dtype == bool
    groups, kept = _groups(np.abs(w), axis, m), _groups(keep, axis, m)
    assert (kept.sum(axis=-1) == n).all()
    for values, k in zip(groups, kept):
        assert values[k].min() >= values[~k].max()


@FAST
@given(n_m_cases())
def test_is_n_m_holds_on_n_m_output_for_full_groups(case):
    w, n, m, _ = case
    pruned = masks.apply_mask(w, masks.n_m(w, n, m))
    assert masks.is_n_m(pruned, n, m)
    assert masks.n_m_violations(pruned, n, m) == 0


@FAST
@given(n_m_cases(full=False))
def test_n_m_partial_group_keeps_length_minus_pruned_slots(case):
    w, n, m, axis = case
    keep = masks.n_m(w, n, m)
    length = w.shape[axis]
    tail = length % m
    moved = np.moveaxis(keep, axis, -1)
    if tail:
        assert (moved[..., length - tail:].sum(axis=-1) == max(0, tail - (m - n))).all()
    if tail == 0 or tail >= m - n:
        assert masks.is_n_m(masks.apply_mask(w, keep), n, m)


def test_n_m_default_axis_is_the_input_channel_axis():
    dense = np.arange(1.0, 9.0).reshape(4, 2)  # (in, out): groups run down each column
    assert masks.n_m(dense, 2, 4).tolist() == [[False, False]] * 2 + [[True, True]] * 2
    conv = np.zeros((1, 1, 4, 1)) + np.arange(1.0, 5.0).reshape(1, 1, 4, 1)
    assert masks.n_m(conv, 2, 4)[0, 0, :, 0].tolist() == [False, False, True, True]
    row = np.array([4.0, 3.0, 2.0, 1.0])
    assert masks.n_m(row, 2, 4).tolist() == [True, True, False, False]
    assert masks.n_m(dense.T, 1, 2, axis=1).tolist() == [[False, True] * 2] * 2


def test_one_of_four_and_two_of_eight():
    w = np.arange(1.0, 17.0)
    keep14 = masks.n_m(w, 1, 4)
    assert keep14.sum() == 4 and keep14[[3, 7, 11, 15]].all()
    keep28 = masks.n_m(w, 2, 8)
    assert keep28.sum() == 4 and keep28[[6, 7, 14, 15]].all()
    assert masks.is_n_m(w * keep14, 1, 4) and masks.is_n_m(w * keep28, 2, 8)
    assert not masks.is_n_m(w * keep28, 1, 4)


def test_length_one_axis_is_never_two_of_four():
    w = np.ones((1, 8), np.float32)  # Dense kernel with one input: the tfmot padding trap
    assert not masks.is_n_m(w, 2, 4)
    assert masks.n_m_violations(w, 2, 4) == 8
    keep = masks.n_m(w, 2, 4)
    assert not keep.any()  # padding never stands in for a pruned weight


def test_n_m_violations_counts_groups():
    w = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    assert masks.n_m_violations(w, 2, 4) == 1
    assert masks.n_m_violations(w, 3, 4) == 0


# -- magnitude and threshold ---------------------------------------------------------


@FAST
@given(small_arrays, fractions)
def test_magnitude_keeps_the_documented_count_of_the_largest(w, sparsity):
    keep = masks.magnitude(w, sparsity)
    assert keep.shape == w.shape and keep.dtype == bool
    assert keep.sum() == w.size - round(w.size * sparsity)
    if keep.any() and (~keep).any():
        assert np.abs(w[keep]).min() >= np.abs(w[~keep]).max()


def test_magnitude_breaks_ties_by_earlier_index():
    w = np.array([0.5, -0.5, 0.5, 0.1, 0.5])
    assert masks.magnitude(w, 0.6).tolist() == [True, True, False, False, False]
    assert masks.magnitude(w, 0.0).all()


@FAST
@given(small_arrays, st.floats(0, 100), st.floats(0, 100))
def test_threshold_is_monotone_in_t(w, t1, t2):
    t1, t2 = min(t1, t2), max(t1, t2)
    low, high = masks.threshold(w, t1), masks.threshold(w, t2)
    assert not (high & ~low).any()


def test_article_example_keeps_abs_at_least_point_two():
    w = np.array([[0.1, -0.25, 0.2], [-0.05, 0.9, -0.19]])
    keep = masks.threshold(w, 0.2)
    assert keep.tolist() == [[False, True, True], [False, True, False]]
    assert masks.apply_mask(w, keep).tolist() == [[0.0, -0.25, 0.2], [0.0, 0.9, 0.0]]
    assert masks.sparsity(masks.apply_mask(w, keep)) == 0.5


# -- idempotence -------------------------------------------------------------------------

METHODS = {
    "threshold": lambda w: masks.threshold(w, 1.0),
    "magnitude": lambda w: masks.magnitude(w, 0.5),
    "n_m": lambda w: masks.n_m(w, 2, 4),
    "block": lambda w: masks.block(w, (2, 3), 0.5),
    "block_max": lambda w: masks.block(w, (3, 2), 0.4, pool="max"),
    "vector_rows": lambda w: masks.vector(w, 0, sparsity=0.5),
    "vector_cols_l2": lambda w: masks.vector(w, 1, sparsity=0.3, norm="l2"),
    "random": lambda w: masks.random(w, 0.5, seed=3),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@settings(max_examples=25, deadline=None)
@given(w=matrices)
def test_masks_are_idempotent(method, w):
    make = METHODS[method]
    keep = make(w)
    pruned = masks.apply_mask(w, keep)
    again = make(pruned)
    assert np.array_equal(again, keep)
    assert np.array_equal(masks.apply_mask(pruned, again), pruned)


# -- block -------------------------------------------------------------------------------


def test_block_prunes_whole_blocks_with_partial_edges():
    w = np.ones((5, 5))
    w[:2, :2] = 0.01
    w[4, 4] = 0.02  # a 1x1 edge block: pooled over what exists
    keep = masks.block(w, (2, 2), 2 / 9)
    assert not keep[:2, :2].any() and not keep[4, 4]
    assert keep.sum() == 25 - 5


def test_block_pool_max_differs_from_mean():
    w = np.array([[5.0, 0.0, 1.0, 1.0]])
    assert masks.block(w, (1, 2), 0.5, pool="mean").tolist() == [[True, True, False, False]]
    w = np.array([[1.9, 0.0, 1.0, 1.0]])
    assert masks.block(w, (1, 2), 0.5, pool="mean").tolist() == [[False, False, True, True]]
    assert masks.block(w, (1, 2), 0.5, pool="max").tolist() == [[True, True, False, False]]


# -- vector and shrink ---------------------------------------------------------------------


@FAST
@given(
    hnp.arrays(np.float32, (8, 8), elements=finite),
    st.integers(0, 7),
    st.integers(0, 7),
)
def test_vector_and_shrink_remove_exactly_one_row_and_column(w, row, col):
    rows = masks.vector(w, 0, indices=[row])
    cols = masks.vector(w, 1, indices=[col])
    assert (~rows).sum() == 8 and not rows[row].any() and rows[np.arange(8) != row].all()
    assert not cols[:, col].any() and cols[:, np.arange(8) != col].all()
    small, kept = masks.shrink(w, rows & cols)
    assert small.shape == (7, 7)
    assert kept[0].tolist() == [i for i in range(8) if i != row]
    assert kept[1].tolist() == [j for j in range(8) if j != col]
    assert np.array_equal(small, w[np.ix_(*kept)])


@FAST
@given(small_arrays, fractions, st.sampled_from(["l1", "l2"]), st.data())
def test_vector_sparsity_removes_the_smallest_slices(w, sparsity, norm, data):
    axis = data.draw(st.integers(0, w.ndim - 1))
    keep = masks.vector(w, axis, sparsity=sparsity, norm=norm)
    others = tuple(a for a in range(w.ndim) if a != axis)
    slice_kept = keep.all(axis=others)
    assert np.array_equal(keep.any(axis=others), slice_kept)  # whole slices only
    count = w.shape[axis]
    assert (~slice_kept).sum() == round(count * sparsity)
    if norm == "l1":
        scores = np.abs(w.astype(float)).sum(axis=others)
    else:
        scores = np.sqrt(np.square(w.astype(float)).sum(axis=others))
    if slice_kept.any() and (~slice_kept).any():
        assert scores[slice_kept].min() >= scores[~slice_kept].max()


def test_shrink_keeps_unstructured_zeros_and_handles_higher_rank():
    w = np.arange(1.0, 25.0).reshape(2, 3, 4)
    keep = masks.vector(w, 2, indices=[0, -1]) & masks.threshold(w, 3.0)
    small, kept = masks.shrink(w, keep)
    assert small.shape == (2, 3, 2)
    assert [k.tolist() for k in kept] == [[0, 1], [0, 1, 2], [1, 2]]
    assert small[0, 0].tolist() == [0.0, 3.0]  # pruned inside a kept slice stays zero


# -- random, apply_mask, sparsity ----------------------------------------------------------


def test_random_has_the_magnitude_count_and_is_reproducible():
    w = np.random.default_rng(0).normal(size=(7, 9))
    keep = masks.random(w, 0.45, seed=1)
    assert keep.sum() == masks.magnitude(w, 0.45).sum() == 63 - round(63 * 0.45)
    assert np.array_equal(keep, masks.random(w, 0.45, seed=1))
    assert not np.array_equal(keep, masks.random(w, 0.45, seed=2))


def test_apply_mask_keeps_dtype_and_returns_a_new_array():
    w = np.array([[1.0, -2.0], [3.0, 4.0]], np.float32)
    out = masks.apply_mask(w, np.array([[1, 0], [0, 1]]))
    assert out.dtype == np.float32 and out.tolist() == [[1.0, 0.0], [0.0, 4.0]]
    assert w[0, 1] == -2.0
    assert masks.apply_mask(np.array([3, 4]), [True, False]).dtype == np.array([3]).dtype


def test_sparsity_counts_exact_zeros():
    assert masks.sparsity(np.array([0.0, -0.0, 1e-9, 2.0])) == 0.5
    assert masks.sparsity(np.zeros((0,))) == 0.0
    assert isinstance(masks.sparsity([1.0, 0.0]), float)


# -- errors ----------------------------------------------------------------------------------

W = np.ones((4, 4))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: masks.n_m(W, 4, 4), ValueError, r"0 < n < m\. Received: n=4, m=4"),
        (lambda: masks.n_m(W, 5, 4), ValueError, r"Received: n=5, m=4"),
        (lambda: masks.n_m(W, 0, 4), ValueError, r"Received: n=0, m=4"),
        (lambda: masks.n_m(W, 2.0, 4), ValueError, r"Received: n=2\.0"),
        (lambda: masks.is_n_m(W, 2, 2), ValueError, r"Received: n=2, m=2"),
        (lambda: masks.n_m_violations(W, -1, 4), ValueError, r"Received: n=-1"),
        (lambda: masks.magnitude(W, 1.5), ValueError,
         r"Argument `sparsity` must be a fraction in \[0, 1\)\. Received: sparsity=1\.5"),
        (lambda: masks.magnitude(W, 1.0), ValueError, r"Received: sparsity=1\.0"),
        (lambda: masks.magnitude(W, -0.1), ValueError, r"Received: sparsity=-0\.1"),
        (lambda: masks.magnitude(W, float("nan")), ValueError, r"Received: sparsity=nan"),
        (lambda: masks.random(W, 1, seed=0), ValueError, r"Received: sparsity=1"),
        (lambda: masks.block(W, (2, 2), 2.0), ValueError, r"Received: sparsity=2\.0"),
        (lambda: masks.vector(W, 0, sparsity=1.0), ValueError, r"Received: sparsity=1\.0"),
        (lambda: masks.block(W, (2,), 0.5), ValueError,
         r"Argument `shape` must be a tuple of 2 positive integers.*Received: shape=\(2,\)"),
        (lambda: masks.block(W, (2, 0), 0.5), ValueError, r"Received: shape=\(2, 0\)"),
        (lambda: masks.block(W, (2, -1), 0.5), ValueError, r"Received: shape=\(2, -1\)"),
        (lambda: masks.block(W, 2, 0.5), ValueError, r"Received: shape=2"),
        (lambda: masks.block(W, (2, 2), 0.5, pool="median"), ValueError,
         r"Argument `pool` must be one of 'mean', 'max'\. Received: pool='median'"),
        (lambda: masks.vector(W, 0, sparsity=0.5, norm="linf"), ValueError,
         r"Argument `norm` must be one of 'l1', 'l2'\. Received: norm='linf'"),
        (lambda: masks.vector(W, 2, sparsity=0.5), ValueError,
         r"Argument `axis` must be an integer in \[-2, 2\).*Received: axis=2"),
        (lambda: masks.vector(W, -3, sparsity=0.5), ValueError, r"Received: axis=-3"),
        (lambda: masks.n_m(W, 2, 4, axis=5), ValueError, r"Received: axis=5"),
        (lambda: masks.is_n_m(W, 2, 4, axis=2), ValueError, r"Received: axis=2"),
        (lambda: masks.vector(W, 0), ValueError,
         r"Exactly one of arguments `sparsity` and `indices`"),
        (lambda: masks.vector(W, 0, sparsity=0.5, indices=[1]), ValueError,
         r"Received: sparsity=0\.5, indices=\[1\]"),
        (lambda: masks.vector(W, 0, indices=[4]), ValueError,
         r"Argument `indices` must hold indices in \[-4, 4\).*Received: indices=\[4\]"),
        (lambda: masks.vector(W, 0, indices=[0.5]), ValueError,
         r"Argument `indices` must be a 1-D sequence of integers"),
        (lambda: masks.threshold(W, -0.1), ValueError,
         r"Argument `t` must be a finite number >= 0\. Received: t=-0\.1"),
        (lambda: masks.threshold(W, float("inf")), ValueError, r"Received: t=inf"),
        (lambda: masks.threshold(W, float("nan")), ValueError, r"Received: t=nan"),
        (lambda: masks.magnitude(np.array([1.0, np.nan]), 0.5), ValueError,
         r"Argument `w` must contain only finite values\. Received: w with 1 non-finite"),
        (lambda: masks.n_m(np.array([np.inf, 1, 2, 3]), 2, 4), ValueError,
         r"only finite values"),
        (lambda: masks.threshold([np.inf, -np.inf], 0.1), ValueError, r"w with 2 non-finite"),
        (lambda: masks.block(np.full((2, 2), np.nan), (1, 1), 0.5), ValueError, "finite"),
        (lambda: masks.vector(np.full((2, 2), np.nan), 0, sparsity=0.5), ValueError, "finite"),
        (lambda: masks.random(np.array([np.nan]), 0.5, seed=0), ValueError, "finite"),
        (lambda: masks.magnitude(np.array(["a"]), 0.5), TypeError,
         r"Argument `w` must be a real numeric array\. Received: w with dtype <U1"),
        (lambda: masks.threshold(np.array([True]), 0.5), TypeError, r"dtype bool"),
        (lambda: masks.random(W, 0.5, seed=-1), ValueError,
         r"Argument `seed` must be an integer >= 0\. Received: seed=-1"),
        (lambda: masks.random(W, 0.5, seed=None), ValueError, r"Received: seed=None"),
        (lambda: masks.apply_mask(W, np.ones((4, 3))), ValueError,
         r"Argument `mask` must have the shape of `w`, \(4, 4\)\. Received: mask with shape \(4, 3\)"),
        (lambda: masks.shrink(W, np.ones(4)), ValueError, r"shape of `w`"),
        (lambda: masks.n_m(np.float32(1.0), 2, 4), ValueError,
         r"Argument `w` must have at least 1 dimension"),
    ],
)
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- import hygiene and layers ------------------------------------------------------------------


def test_import_does_not_start_tensorflow():
    code = (
        "import sys\nfrom kprune import masks\n"
        "loaded = [m for m in ('tensorflow', 'tf_keras', 'kprune.engines.tfkeras.loader') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class _Variable:
    def __init__(self, value):
        self.value = np.asarray(value, np.float32)

    def numpy(self):
        return self.value.copy()

    def assign(self, value):
        self.value = np.asarray(value, np.float32)


class _Depthwise:
    name = "dw"

    def __init__(self):
        self.depthwise_kernel = _Variable(np.arange(1.0, 9.0).reshape(2, 2, 2, 1))


def test_prune_layer_on_a_real_dense_layer():
    from kprune.engines.tfkeras import loader

    keras = loader.keras
    layer = keras.layers.Dense(4, name="fc")
    layer.build((None, 8))
    layer.kernel.assign(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    before = layer.kernel.numpy()
    keep = masks.prune_layer(layer, "n_m", n=2, m=4)
    after = layer.kernel.numpy()
    assert np.array_equal(keep, masks.n_m(before, 2, 4))
    assert np.array_equal(after, before * keep)
    assert masks.is_n_m(after, 2, 4) and masks.sparsity(after) == 0.5
    keep = masks.prune_layer(layer, "vector", axis=1, indices=[0])
    assert not layer.kernel.numpy()[:, 0].any()
    keep = masks.prune_layer(layer, "magnitude", sparsity=0.75)
    assert np.count_nonzero(layer.kernel.numpy()) == 8
    assert np.array_equal(layer.bias.numpy(), np.zeros(4))


def test_prune_layer_uses_the_depthwise_kernel():
    layer = _Depthwise()
    keep = masks.prune_layer(layer, "threshold", t=4.5)
    assert keep.sum() == 4 and np.count_nonzero(layer.depthwise_kernel.value) == 4


def test_prune_layer_errors():
    with pytest.raises(ValueError, match=r"Argument `method` must be one of 'block', "
                       r"'magnitude', 'n_m', 'random', 'threshold', 'vector'\. "
                       r"Received: method='l1'"):
        masks.prune_layer(_Depthwise(), "l1")

    class Flatten:
        name = "flatten"

    with pytest.raises(ValueError, match=r"Layer 'flatten' \(Flatten\) has no kernel to prune"):
        masks.prune_layer(Flatten(), "magnitude", sparsity=0.5)
    with pytest.raises(ValueError, match=r"Received: sparsity=1\.5"):
        masks.prune_layer(_Depthwise(), "magnitude", sparsity=1.5)
