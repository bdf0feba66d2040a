"""Post-training pruning on real models of both engines: propagation, agreement, refusals."""


import keras
import numpy as np
import pytest

import kprune
from kprune.core import layerwise
from kprune.core.plan import LayerRule, PruningPlan
from kprune.engines.tfkeras import loader
from kprune.methods.post_training import prune_post_training
from tests import helpers

tf_keras = loader.keras


def two_dense(k, seed=0):
    """x (12) -> a: Dense 8 relu -> b: Dense 4 -> head: Dense 3, with seeded weights."""
    k.utils.set_random_seed(seed)
    inputs = k.Input((12,))
    h = k.layers.Dense(8, activation="relu", name="a")(inputs)
    h = k.layers.Dense(4, name="b")(h)
    return k.Model(inputs, k.layers.Dense(3, name="head")(h))


def small_cnn(k):
    return k.Sequential([
        k.Input((10, 10, 2)),
        k.layers.Conv2D(8, 3, activation="relu", name="conv_a"),
        k.layers.Conv2D(8, 3, strides=2, padding="same", name="conv_b"),
        k.layers.Flatten(),
        k.layers.Dense(16, activation="relu", name="fc"),
        k.layers.Dense(3, name="head"),
    ])


def weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_each_layer_is_solved_on_the_outputs_of_the_already_pruned_layers_before_it():
    model = two_dense(tf_keras)
    x = np.random.default_rng(0).normal(size=(300, 12)).astype("float32")
    plan = PruningPlan.uniform(0.5)
    pruned, report = prune_post_training(model, x, plan, method="sparsegpt", block_size=4)
    w_a, b_a = (np.asarray(v, np.float64) for v in model.get_layer("a").get_weights())
    w_b = np.asarray(model.get_layer("b").kernel, np.float64)
    stats_a = layerwise.InputStatistics(12)
    stats_a.add(x)
    a_pruned = layerwise.sparsegpt(w_a, stats_a.hessian(), sparsity=0.5, block_size=4)
    np.testing.assert_allclose(pruned.get_layer("a").kernel.numpy(), a_pruned, rtol=1e-5,
                               atol=1e-6)
    stats_b = layerwise.InputStatistics(8)  # b sees a's *pruned* outputs
    stats_b.add(np.maximum(x @ a_pruned + b_a, 0))
    b_pruned = layerwise.sparsegpt(w_b, stats_b.hessian(), sparsity=0.5, block_size=4)
    np.testing.assert_allclose(pruned.get_layer("b").kernel.numpy(), b_pruned, rtol=1e-4,
                               atol=1e-5)
    stats_dense = layerwise.InputStatistics(8)  # ... not the dense model's
    stats_dense.add(np.maximum(x @ w_a + b_a, 0))
    b_from_dense = layerwise.sparsegpt(w_b, stats_dense.hessian(), sparsity=0.5, block_size=4)
    assert not np.allclose(b_pruned, b_from_dense, atol=1e-4)
    assert report["b"].rows == 300 and report["head"].reason == "classifier head"


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_keras3_and_tf_keras_models_get_the_same_masks(method):
    x = np.random.default_rng(1).normal(size=(64, 10, 10, 2)).astype("float32")
    models = [small_cnn(tf_keras), small_cnn(keras)]
    models[1].set_weights(models[0].get_weights())
    results = [prune_post_training(m, x, method=method)[0] for m in models]
    for a, b in zip(weights(results[0]), weights(results[1])):
        assert np.array_equal(a == 0, b == 0)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    kprune.sparsity_report(results[1], strict=True)  # conv_a unstructured, the rest 2:4


def test_the_input_model_is_untouched_and_the_plan_is_verified_and_saved(tmp_path):
    model = small_cnn(tf_keras)
    before = weights(model)
    x = np.random.default_rng(2).normal(size=(40, 10, 10, 2)).astype("float32")
    pruned, report = prune_post_training(model, x, method="wanda")
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(model)))
    strict = kprune.sparsity_report(pruned, strict=True)
    assert strict["conv_b"].n_m_violations == 0 and strict["fc"].achieved == 0.5
    assert [r.name for r in report.pruned] == ["conv_a", "conv_b", "fc"]
    assert "wanda 2:4" in str(report) and report.examples == 40
    path = kprune.save_model(pruned, tmp_path / "pruned.keras")
    kprune.sparsity_report(kprune.load_model(path), strict=True)


def test_calibration_forms_give_the_same_result():
    model = helpers.nested_model()
    x = np.random.default_rng(3).normal(size=(96, 8)).astype("float32")
    dataset = loader.tf.data.Dataset.from_tensor_slices((x, np.zeros(96))).batch(32)
    forms = [x, dataset, ((x[i:i + 32], None) for i in range(0, 96, 32)), {"input_1": x}]
    name = model.inputs[0].name.split(":")[0]
    forms[3] = {name: x}
    results = [prune_post_training(model, form, PruningPlan.uniform(0.5), batch_size=32)[0]
               for form in forms]
    for other in results[1:]:
        for a, b in zip(weights(results[0]), weights(other)):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    assert np.mean(results[0].get_layer("block").get_layer("fc").kernel.numpy() == 0) == 0.5


def test_layers_it_cannot_solve_are_skipped_with_the_reason():
    inputs = tf_keras.Input((6, 6, 4))
    h = tf_keras.layers.SeparableConv2D(8, 3, name="sep")(inputs)
    h = tf_keras.layers.Flatten()(h)
    shared = tf_keras.layers.Dense(8, name="shared")
    h = shared(shared(tf_keras.layers.Dense(8, name="fc")(h)))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="head")(h))
    x = np.random.default_rng(4).normal(size=(32, 6, 6, 4)).astype("float32")
    pruned, report = prune_post_training(model, x, PruningPlan.uniform(0.5))
    assert "not a Dense, EinsumDense or convolution kernel" in report["sep"].reason
    assert "called 2 times" in report["shared"].reason
    assert report["fc"].achieved == 0.5
    kprune.sparsity_report(pruned, strict=True)  # the skipped rows are not checked as pruned


def test_a_layer_whose_inputs_are_not_a_multiple_of_m_takes_the_plans_fallback():
    model = tf_keras.Sequential([tf_keras.Input((6,)), tf_keras.layers.Dense(8, name="fc"),
                                 tf_keras.layers.Dense(2, name="head")])
    x = np.random.default_rng(5).normal(size=(32, 6)).astype("float32")
    pruned, report = prune_post_training(model, x)  # the default plan: 2:4, else unstructured
    assert report["fc"].method == "sparsegpt unstructured"
    explicit = PruningPlan((LayerRule("fc", method="m_by_n"),))
    with pytest.raises(ValueError, match="'fc' cannot take 2:4 sparsity: 6 input channels"):
        prune_post_training(model, x, explicit)


def test_fewer_rows_than_inputs_works_with_a_warning():
    model = two_dense(tf_keras)
    x = np.random.default_rng(6).normal(size=(5, 12)).astype("float32")
    with pytest.warns(layerwise.SingularHessianWarning, match="'a' has 12 inputs but saw 5"):
        pruned, _ = prune_post_training(model, x, PruningPlan.uniform(0.5))
    assert np.all(np.isfinite(pruned.get_layer("a").kernel.numpy()))


@pytest.mark.parametrize("calibration, error, match", [
    (np.zeros((8, 11)), ValueError, r"shaped like the model's input .*\(None, 12\).*"
                                    r"Received: a batch of shape \(8, 11\)"),
    (np.array([["a"] * 12]), TypeError, "must hold numbers .* Received: an array of dtype <U1"),
    (np.zeros((0, 12)), ValueError, "`calibration` is empty"),
    (np.full((4, 12), np.nan), ValueError, "NaN or infinite"),
    (np.full((4, 12), np.inf), ValueError, "NaN or infinite"),
    (iter([]), ValueError, "`calibration` is empty"),
    (42, TypeError, "must be an array, a dict of arrays, a tf.data.Dataset"),
])
def test_bad_calibration_is_refused_in_one_line(calibration, error, match):
    model = two_dense(tf_keras)
    with pytest.raises(error, match=match) as caught:
        prune_post_training(model, calibration)
    assert "\n" not in str(caught.value)


def test_bad_options_are_refused():
    model = two_dense(tf_keras)
    x = np.zeros((8, 12), "float32")
    with pytest.raises(ValueError, match="one of .*'sparsegpt'.* Did you mean 'sparsegpt'"):
        prune_post_training(model, x, method="sparsgpt")
    with pytest.raises(ValueError, match="`block_size` must be a multiple of the N:M group size 4"):
        prune_post_training(small_cnn(tf_keras), np.zeros((4, 10, 10, 2), "float32"), block_size=6)
    with pytest.raises(ValueError, match="takes unstructured and N:M rows; layer 'a' asks for blocks"):
        prune_post_training(model, x, PruningPlan((LayerRule("a", method="block", block=4),)))
    with pytest.raises(TypeError, match="`plan` must be a kprune.PruningPlan"):
        prune_post_training(model, x, plan="default")
    with pytest.raises(ValueError, match="`dampening` must be a non-negative number"):
        prune_post_training(model, x, dampening=float("nan"))


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_sparsegpt_beats_magnitude_at_70_percent_on_mnist_without_fine_tune(mnist_small,
                                                                            architecture, seeded):
    (x, y), (x_test, y_test) = mnist_small
    model = helpers.tiny_mlp() if architecture == "mlp" else small_mnist_cnn()
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    accuracy = {"dense": model.evaluate(x_test, y_test, verbose=0)[1]}
    for method in ("magnitude", "sparsegpt"):
        pruned, _ = prune_post_training(model, x[:512], PruningPlan.uniform(0.7), method=method)
        kprune.sparsity_report(pruned, strict=True)
        pruned.compile(metrics=["accuracy"],
                       loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        accuracy[method] = pruned.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy["dense"] > 0.85, accuracy
    assert accuracy["sparsegpt"] > accuracy["magnitude"], accuracy
    assert accuracy["sparsegpt"] > accuracy["dense"] - 0.05, accuracy


def small_mnist_cnn():
    return tf_keras.Sequential([
        tf_keras.Input((28, 28, 1)),
        tf_keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
        tf_keras.layers.MaxPooling2D(),
        tf_keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
        tf_keras.layers.MaxPooling2D(),
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(64, activation="relu", name="fc1"),
        tf_keras.layers.Dense(10, name="head"),
    ])


def bn_model(k):
    k.utils.set_random_seed(0)
    inputs = k.Input((6, 6, 3))
    h = k.layers.BatchNormalization(name="bn_in")(inputs)
    h = k.layers.Conv2D(8, 3, name="conv")(h)
    h = k.layers.BatchNormalization(name="bn")(h)
    h = k.layers.GlobalAveragePooling2D()(k.layers.ReLU()(h))
    return k.Model(inputs, k.layers.Dense(2, name="head")(h))


@pytest.mark.parametrize("engine", [tf_keras, keras], ids=["tf_keras", "keras3"])
def test_batch_norm_after_a_pruned_layer_gets_the_statistics_of_its_new_inputs(engine):
    model = bn_model(engine)
    x = np.random.default_rng(7).normal(2.0, 3.0, size=(64, 6, 6, 3)).astype("float32")
    before = {name: [np.asarray(v) for v in model.get_layer(name).get_weights()]
              for name in ("bn_in", "bn")}
    plan = PruningPlan.uniform(0.5)
    pruned, report = prune_post_training(model, x, plan, method="magnitude")
    assert report.recalibrated == ("bn",)  # bn_in comes before the first pruned layer
    bn_in = pruned.get_layer("bn_in")
    np.testing.assert_array_equal(np.asarray(bn_in.moving_mean), before["bn_in"][2])
    conv = pruned.get_layer("conv")
    outputs = np.asarray(conv(bn_in(x, training=False)), np.float64).reshape(-1, 8)
    bn = pruned.get_layer("bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), outputs.mean(axis=0), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), outputs.var(axis=0), rtol=1e-4,
                               atol=1e-5)
    kept, report = prune_post_training(model, x, plan, method="magnitude", recalibrate=False)
    assert report.recalibrated == ()
    np.testing.assert_array_equal(np.asarray(kept.get_layer("bn").moving_variance),
                                  before["bn"][3])


JAX_SCRIPT = """
import numpy as np, keras, kprune
from kprune.core import layerwise
from tests.test_post_training import small_cnn
assert keras.backend.backend() == "jax"
x = np.random.default_rng(1).normal(size=(64, 10, 10, 2)).astype("float32")
model = small_cnn(keras)
np.save("weights.npy", np.array(model.get_weights(), dtype=object), allow_pickle=True)
pruned, report = kprune.prune_post_training(model, x, method="sparsegpt")
kprune.sparsity_report(pruned, strict=True)
np.save("pruned.npy", np.array(pruned.get_weights(), dtype=object), allow_pickle=True)
print("layers", len(report.pruned))
"""


@pytest.mark.slow
def test_on_jax_the_same_masks_as_on_tensorflow(tmp_path, jax_env):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], cwd=tmp_path, text=True,
                            capture_output=True, timeout=600,
                            env={**jax_env, "PYTHONPATH": str(root), "KPRUNE_QUIET": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "layers 3" in result.stdout
    model = small_cnn(keras)  # on this process's TensorFlow backend, the JAX run's weights
    model.set_weights(list(np.load(tmp_path / "weights.npy", allow_pickle=True)))
    x = np.random.default_rng(1).normal(size=(64, 10, 10, 2)).astype("float32")
    here, _ = prune_post_training(model, x, method="sparsegpt")
    for a, b in zip(weights(here), np.load(tmp_path / "pruned.npy", allow_pickle=True)):
        assert np.array_equal(a == 0, np.asarray(b) == 0)
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def conv_matrix_solution(model, x, *, centered):
    """SparseGPT at 50 % of bn_model's conv, on its inputs from bn_in, written out here."""
    inputs = np.asarray(model.get_layer("bn_in")(x, training=False), np.float64)
    stats = layerwise.InputStatistics(3 * 3 * 3)
    stats.add(layerwise.patches(inputs, (3, 3), strides=(1, 1), padding="valid",
                                dilation_rate=(1, 1)))
    kernel = np.asarray(model.get_layer("conv").kernel, np.float64)
    return layerwise.sparsegpt(kernel.reshape(-1, 8), stats.hessian(centered=centered),
                               sparsity=0.5).reshape(kernel.shape)


@pytest.mark.parametrize("engine", [tf_keras, keras], ids=["tf_keras", "keras3"])
def test_sparsegpt_fits_a_layer_before_a_recalibrated_batch_norm_on_centered_inputs(engine):
    # the batch norm recalibrated after conv undoes any shift of conv's mean output, so
    # SparseGPT spends nothing on the mean: it fits conv on its inputs less their mean
    model = bn_model(engine)
    x = np.random.default_rng(7).normal(2.0, 3.0, size=(64, 6, 6, 3)).astype("float32")
    plan = PruningPlan.uniform(0.5)
    pruned, _ = prune_post_training(model, x, plan, method="sparsegpt",
                                    center_before_batch_norm=True)
    centered = conv_matrix_solution(model, x, centered=True)
    np.testing.assert_allclose(np.asarray(pruned.get_layer("conv").kernel), centered,
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(centered, conv_matrix_solution(model, x, centered=False), atol=1e-3)
    # by default, and with the batch norm kept as trained (the mean then matters), the
    # published, uncentered fit
    for options in (dict(), dict(center_before_batch_norm=True, recalibrate=False)):
        kept, _ = prune_post_training(model, x, plan, method="sparsegpt", **options)
        np.testing.assert_allclose(np.asarray(kept.get_layer("conv").kernel),
                                   conv_matrix_solution(model, x, centered=False),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("engine", [tf_keras, keras], ids=["tf_keras", "keras3"])
def test_readers_are_the_layers_taking_a_layers_output(engine):
    from kprune.engines import capture

    model = bn_model(engine)
    assert capture.readers(model, "conv") == ["bn"]
    assert capture.readers(model, "head") is None  # a model output: read outside the graph
    branched = two_dense(engine)
    assert capture.readers(branched, "a") == ["b"]


def test_match_dense_fits_each_layer_to_the_dense_models_outputs():
    model = two_dense(tf_keras)
    x = np.random.default_rng(0).normal(size=(300, 12)).astype("float32")
    plan = PruningPlan.uniform(0.5)
    pruned, report = prune_post_training(model, x, plan, method="sparsegpt", block_size=4,
                                         match_dense=True)
    w_a, b_a = (np.asarray(v, np.float64) for v in model.get_layer("a").get_weights())
    w_b = np.asarray(model.get_layer("b").kernel, np.float64)

    def solve(kernel, ours, dense):
        stats = layerwise.InputStatistics(kernel.shape[0], paired=True)
        stats.add(ours, dense)
        target = stats.dense_targets(kernel)
        return layerwise.sparsegpt(target, stats.hessian(), sparsity=0.5, block_size=4)

    a_pruned = solve(w_a, x, x)  # a's inputs are the same in both models
    np.testing.assert_allclose(pruned.get_layer("a").kernel.numpy(), a_pruned, rtol=1e-4,
                               atol=1e-5)
    # b: its inputs from the pruned a, its targets from the dense a's outputs
    b_pruned = solve(w_b, np.maximum(x @ a_pruned + b_a, 0), np.maximum(x @ w_a + b_a, 0))
    np.testing.assert_allclose(pruned.get_layer("b").kernel.numpy(), b_pruned, rtol=1e-4,
                               atol=1e-5)
    plain, _ = prune_post_training(model, x, plan, method="sparsegpt", block_size=4)
    assert not np.allclose(plain.get_layer("b").kernel.numpy(), b_pruned, atol=1e-4)
    dense_b = np.maximum(x @ w_a + b_a, 0) @ w_b
    pruned_b = np.maximum(x @ a_pruned + b_a, 0) @ b_pruned
    assert report["b"].error == pytest.approx(
        np.sum((pruned_b - dense_b) ** 2) / np.sum(dense_b ** 2), rel=1e-3)
    with pytest.raises(ValueError, match="`match_dense` needs method='sparsegpt'"):
        prune_post_training(model, x, plan, method="wanda", match_dense=True)
    with pytest.raises(ValueError, match="`center_before_batch_norm` needs method='sparsegpt'"):
        prune_post_training(model, x, plan, method="magnitude", center_before_batch_norm=True)
