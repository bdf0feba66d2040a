"""Post-training pruning of layers inside custom Keras 3 layers (KerasHub blocks, user
blocks): their inputs are recorded by a call hook while the model runs, and each is solved
on what the already pruned layers before it give it."""

import keras
import numpy as np
import pytest

import kprune
from kprune.core import layers, layerwise, masks
from kprune.core.plan import HEAD_RULE, LayerRule, PruningPlan
from kprune.engines import capture
from kprune.methods.post_training import prune_post_training


@keras.saving.register_keras_serializable(package="tests_post_training_nested")
class TwoDense(keras.layers.Layer):
    """``x + second(first(x))``; ``second`` is created before ``first``, so the order of
    its sublayers is not the order ``call`` uses them."""

    def __init__(self, width=16, hidden=8, **kwargs):
        super().__init__(**kwargs)
        self.width, self.hidden = width, hidden
        self.second = keras.layers.Dense(width, name="second")
        self.first = keras.layers.Dense(hidden, activation="relu", name="first")

    def call(self, x):
        return x + self.second(self.first(x))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "hidden": self.hidden}


@keras.saving.register_keras_serializable(package="tests_post_training_nested")
class WithSpare(TwoDense):
    """A ``TwoDense`` holding a built Dense that ``call`` never uses."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.spare = keras.layers.Dense(4, name="spare")

    def build(self, shape):
        self.spare.build(shape)


@keras.saving.register_keras_serializable(package="tests_post_training_nested")
class TwoEinsum(keras.layers.Layer):
    """Two ``EinsumDense`` sublayers: a transposed kernel ``[out, in]`` ("abc,dc->abd"), then
    a rank-3 one ``[in, 2, 8]`` ("abc,cde->abde") whose output is folded back to ``x``'s."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj_t = keras.layers.EinsumDense("abc,dc->abd", (None, 8), name="proj_t")
        self.proj_3d = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 8), name="proj_3d")

    def call(self, x):
        y = self.proj_3d(keras.ops.relu(self.proj_t(x)))
        return x + keras.ops.reshape(y, keras.ops.shape(x))


@keras.saving.register_keras_serializable(package="tests_post_training_nested")
class DenseNorm(keras.layers.Layer):
    """``norm_in(x)``, then ``norm(fc(...))``: batch norms before and after a Dense."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm_in = keras.layers.BatchNormalization(name="norm_in")
        self.fc = keras.layers.Dense(16, name="fc")
        self.norm = keras.layers.BatchNormalization(name="norm")

    def call(self, x, training=None):
        return self.norm(self.fc(self.norm_in(x, training=training)), training=training)


def block_model(block, seed=0):
    """(batch, 4, 16) -> ``block`` -> head: Dense 3, with seeded weights."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 16), name="x")
    outputs = keras.layers.Dense(3, name="head")(block(name="block")(inputs))
    return keras.Model(inputs, outputs)


def calibration(count=48, seed=1):
    return np.random.default_rng(seed).normal(size=(count, 4, 16)).astype("float32")


def rows_of(x):
    """A captured (batch, sequence, d) input as the [rows, d] matrix the kernel multiplies."""
    x = np.asarray(x, np.float64)
    return x.reshape(-1, x.shape[-1])


def stats_of(x):
    stats = layerwise.InputStatistics(x.shape[-1])
    stats.add(rows_of(x))
    return stats


def kernel(model, path):
    return np.asarray(dict(layers.weight_layers(model))[path].kernel, np.float64)


def test_wanda_masks_of_inner_dense_layers_are_those_of_the_inputs_they_receive():
    model = block_model(TwoDense)
    x = calibration()
    pruned, report = prune_post_training(model, x, PruningPlan.uniform(0.5), method="wanda")
    assert {row.name for row in report.pruned} == {"block/first", "block/second"}
    w_first, w_second = kernel(model, "block/first"), kernel(model, "block/second")
    expected_first = w_first * layerwise.wanda_mask(w_first, stats_of(x).input_norms(),
                                                    sparsity=0.5)
    np.testing.assert_array_equal(kernel(pruned, "block/first"), expected_first)
    # What ``second`` really receives: the pruned ``first``'s outputs, by calling it here.
    h = keras.ops.convert_to_numpy(pruned.get_layer("block").first(x))
    expected_second = w_second * layerwise.wanda_mask(w_second, stats_of(h).input_norms(),
                                                      sparsity=0.5)
    np.testing.assert_array_equal(kernel(pruned, "block/second"), expected_second)
    assert report["block/second"].rows == 48 * 4 and report["block/second"].inputs == 8
    assert kprune.sparsity_report(pruned, strict=True).ok


def test_sparsegpt_solves_the_second_inner_layer_on_the_pruned_first_layers_outputs():
    model = block_model(TwoDense)
    x = calibration()
    pruned, report = prune_post_training(model, x, PruningPlan.uniform(0.5), method="sparsegpt",
                                         block_size=4)
    w_first, w_second = kernel(model, "block/first"), kernel(model, "block/second")
    b_first = np.asarray(model.get_layer("block").first.bias, np.float64)
    first_pruned = layerwise.sparsegpt(w_first, stats_of(x).hessian(), sparsity=0.5,
                                       block_size=4)
    np.testing.assert_allclose(kernel(pruned, "block/first"), first_pruned, rtol=1e-5, atol=1e-6)
    h_pruned = np.maximum(rows_of(x) @ first_pruned + b_first, 0)  # what ``second`` receives
    second_pruned = layerwise.sparsegpt(w_second, stats_of(h_pruned).hessian(), sparsity=0.5,
                                        block_size=4)
    got = kernel(pruned, "block/second")
    np.testing.assert_allclose(got, second_pruned, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got == 0, second_pruned == 0)
    h_dense = np.maximum(rows_of(x) @ w_first + b_first, 0)  # ... not the dense model's
    second_from_dense = layerwise.sparsegpt(w_second, stats_of(h_dense).hessian(), sparsity=0.5,
                                            block_size=4)
    assert not np.allclose(got, second_from_dense, atol=1e-4)
    assert 0 < report["block/second"].error < 1


def test_match_dense_fits_an_inner_layer_to_the_dense_blocks_outputs():
    model = block_model(TwoDense)
    x = calibration()
    pruned, _ = prune_post_training(model, x, PruningPlan.uniform(0.5), method="sparsegpt",
                                    block_size=4, match_dense=True)
    w_first, w_second = kernel(model, "block/first"), kernel(model, "block/second")
    b_first = np.asarray(model.get_layer("block").first.bias, np.float64)

    def solve(w, ours, dense):
        stats = layerwise.InputStatistics(w.shape[0], paired=True)
        stats.add(rows_of(ours), rows_of(dense))
        return layerwise.sparsegpt(stats.dense_targets(w), stats.hessian(), sparsity=0.5,
                                   block_size=4)

    first_pruned = solve(w_first, x, x)
    np.testing.assert_allclose(kernel(pruned, "block/first"), first_pruned, rtol=1e-4,
                               atol=1e-5)
    # ``second``: its inputs from the pruned ``first``, its targets from the dense one
    second_pruned = solve(w_second, np.maximum(rows_of(x) @ first_pruned + b_first, 0),
                          np.maximum(rows_of(x) @ w_first + b_first, 0))
    np.testing.assert_allclose(kernel(pruned, "block/second"), second_pruned, rtol=1e-4,
                               atol=1e-5)


JAX_SCRIPT = """
import keras
from tests import test_post_training_nested as nested
assert keras.backend.backend() == "jax"
for name in ("test_sparsegpt_solves_the_second_inner_layer_on_the_pruned_first_layers_outputs",
             "test_match_dense_fits_an_inner_layer_to_the_dense_blocks_outputs",
             "test_inner_einsum_dense_layers_take_2_4_along_their_contracted_kernel_axis",
             "test_a_batch_norm_inside_a_custom_layer_gets_the_statistics_of_its_new_inputs"):
    getattr(nested, name)()
    print("passed", name)
"""


@pytest.mark.slow
def test_on_jax_inner_layers_are_solved_on_what_they_receive(jax_env):
    """The nested-layer tests above, run on Keras 3's JAX backend in a subprocess (the call
    hook records JAX arrays there)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], cwd=root, text=True,
                            capture_output=True, timeout=600,
                            env={**jax_env, "PYTHONPATH": str(root), "KPRUNE_QUIET": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("passed") == 4, result.stdout


def test_inner_einsum_dense_layers_take_2_4_along_their_contracted_kernel_axis():
    model = block_model(TwoEinsum)
    x = calibration()
    plan = PruningPlan((HEAD_RULE, LayerRule(r"block/.*", by="regex", method="m_by_n")))
    pruned, report = prune_post_training(model, x, plan, method="wanda")
    assert [row.name for row in report.pruned] == ["block/proj_t", "block/proj_3d"]
    w_t, w_3d = kernel(model, "block/proj_t"), kernel(model, "block/proj_3d")  # [8, 16], [8, 2, 8]
    expected_t = w_t * layerwise.wanda_mask(w_t.T, stats_of(x).input_norms(), n_m=(2, 4)).T
    got_t = kernel(pruned, "block/proj_t")
    np.testing.assert_array_equal(got_t, expected_t)
    h = keras.ops.convert_to_numpy(keras.ops.relu(pruned.get_layer("block").proj_t(x)))
    matrix = w_3d.reshape(8, 16)
    expected_3d = (matrix * layerwise.wanda_mask(matrix, stats_of(h).input_norms(),
                                                 n_m=(2, 4))).reshape(w_3d.shape)
    got_3d = kernel(pruned, "block/proj_3d")
    np.testing.assert_array_equal(got_3d, expected_3d)
    assert masks.n_m_violations(got_t, 2, 4, axis=-1) == 0  # groups along the inputs (c)
    assert masks.n_m_violations(got_3d, 2, 4, axis=0) == 0
    assert report["block/proj_3d"].achieved == 0.5
    assert kprune.sparsity_report(pruned, strict=True).ok


def attention_model(k):
    """(batch, 4, 16) -> self-attention (2 heads of 8) -> head: Dense 3, seeded, on Keras ``k``."""
    k.utils.set_random_seed(3)
    inputs = k.Input((4, 16), name="x")
    attention = k.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")
    return k.Model(inputs, k.layers.Dense(3, name="head")(attention(inputs, inputs)))


def test_attention_projections_are_each_solved_on_what_they_receive():
    model = attention_model(keras)
    x = calibration(32)
    pruned, report = prune_post_training(model, x, PruningPlan.uniform(0.5), method="wanda")
    assert report["attention"].achieved == 0.5

    def projection(name):
        dense = getattr(model.get_layer("attention"), f"_{name}_dense")
        kernel = np.asarray(dense.kernel, np.float64)
        return kernel, np.asarray(dense.bias, np.float64)

    def wanda(kernel, inputs):  # the kernel as [inputs, outputs], Wanda at 50 %
        matrix = kernel.reshape(inputs.shape[-1], -1)
        norms = stats_of(inputs).input_norms()
        return (matrix * layerwise.wanda_mask(matrix, norms, sparsity=0.5)).reshape(kernel.shape)

    got = {name: np.asarray(getattr(pruned.get_layer("attention"), f"_{name}_dense").kernel)
           for name in ("query", "key", "value", "output")}
    projected = {}
    for name in ("query", "key", "value"):  # [16, heads, dim], each fed x
        kernel, bias = projection(name)
        np.testing.assert_array_equal(got[name], wanda(kernel, x))
        projected[name] = np.einsum("bsc,chd->bshd", x.astype(np.float64), got[name]) + bias
    # The output projection sees the attention of the *pruned* query, key and value.
    scores = np.einsum("bqhd,bkhd->bhqk", projected["query"], projected["key"]) / np.sqrt(8)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhqk,bkhd->bqhd", weights, projected["value"])  # [b, s, heads, dim]
    kernel, _ = projection("output")  # [heads, dim, 16]
    np.testing.assert_array_equal(got["output"] == 0,
                                  wanda(kernel, heads.reshape(*heads.shape[:2], -1)) == 0)
    assert kprune.sparsity_report(pruned, strict=True).ok


def test_attention_gets_the_same_masks_on_tf_keras_and_keras3():
    from kprune.engines.tfkeras import loader

    models = [attention_model(loader.keras), attention_model(keras)]
    models[1].set_weights(models[0].get_weights())
    x = calibration(32)
    results = [prune_post_training(m, x, PruningPlan.uniform(0.5), method="sparsegpt")
               for m in models]
    for a, b in zip(*(m.get_weights() for m, _ in results)):
        np.testing.assert_array_equal(a == 0, b == 0)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert [report["attention"].achieved for _, report in results] == [0.5, 0.5]
    assert kprune.sparsity_report(results[0][0], strict=True).ok


def test_a_sublayer_the_model_never_calls_is_skipped_with_the_reason():
    model = block_model(WithSpare)
    pruned, report = prune_post_training(model, calibration(16), PruningPlan.uniform(0.5),
                                         method="magnitude")
    assert report["block/spare"].reason == ("the model did not call it on a calibration batch: "
                                            "no inputs to solve it from")
    assert report["block/first"].achieved == 0.5
    assert kprune.sparsity_report(pruned, strict=True).ok


class SpareFirst(TwoDense):
    """A ``TwoDense`` whose first-created sublayer (``spare``) ``call`` never uses."""

    def __init__(self, **kwargs):
        keras.layers.Layer.__init__(self, **kwargs)
        self.width, self.hidden = 16, 8
        self.spare = keras.layers.Dense(4, name="spare")
        self.second = keras.layers.Dense(16, name="second")
        self.first = keras.layers.Dense(8, activation="relu", name="first")

    def build(self, shape):
        self.spare.build(shape)


def test_layers_are_solved_in_the_order_the_model_runs_them_around_an_uncalled_sublayer():
    """A never-called sublayer of one block does not shift the next block's layers before
    the graph layer between them (each is solved on what the layers before it give)."""
    from kprune.methods import post_training

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 16), name="x")
    x = keras.layers.Dense(16, name="mid")(SpareFirst(name="a")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(TwoDense(name="b")(x)))
    resolved = PruningPlan.uniform(0.5).resolve(model)
    steps, uncalled = post_training._steps(model, resolved, calibration(8), recalibrate=False)
    assert [path for path, _ in steps] == ["a/first", "a/second", "mid", "b/first", "b/second"]
    assert uncalled == ["a/spare"]


def test_a_batch_norm_inside_a_custom_layer_gets_the_statistics_of_its_new_inputs():
    model = block_model(DenseNorm)
    x = calibration(32) * 3.0 + 2.0
    pruned, report = prune_post_training(model, x, PruningPlan.uniform(0.5), method="magnitude")
    assert report.recalibrated == ("block/norm",)  # norm_in comes before the pruned fc
    block = pruned.get_layer("block")
    outputs = rows_of(keras.ops.convert_to_numpy(block.fc(block.norm_in(x, training=False))))
    np.testing.assert_allclose(np.asarray(block.norm.moving_mean), outputs.mean(axis=0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(block.norm.moving_variance), outputs.var(axis=0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(block.norm_in.moving_mean),
                                  np.asarray(model.get_layer("block").norm_in.moving_mean))


def test_the_call_hook_is_removed_after_an_error_and_the_input_model_is_untouched():
    model = block_model(TwoDense)
    before = [w.copy() for w in model.get_weights()]
    first = model.get_layer("block").first
    with pytest.raises(ValueError, match=r"is incompatible .*found shape=\(2, 4, 15\)"):
        next(capture.layer_inputs(model, "block/first", [np.zeros((2, 4, 15), "float32")]))
    assert "call" not in vars(first)
    pruned, _ = prune_post_training(model, calibration(16), PruningPlan.uniform(0.5))
    assert pruned is not model and "call" not in vars(pruned.get_layer("block").first)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_pruned_model_saves_and_reloads_with_its_plan(tmp_path):
    pruned, _ = prune_post_training(block_model(TwoDense), calibration(16),
                                    PruningPlan.uniform(0.5), method="wanda")
    kprune.save_model(pruned, tmp_path / "pruned.keras")
    reloaded = kprune.load_model(tmp_path / "pruned.keras")
    assert kprune.sparsity_report(reloaded, strict=True).ok
    np.testing.assert_array_equal(kernel(reloaded, "block/second"), kernel(pruned, "block/second"))


def test_calibration_of_the_wrong_shape_for_a_nested_model_names_the_expected_input():
    with pytest.raises(ValueError, match=r"shaped like the model's input 'x' \(None, 4, 16\) "
                                         r"float32. Received: a batch of shape \(8, 16\)"):
        prune_post_training(block_model(TwoDense), np.zeros((8, 16), "float32"))


def gpt2_language_model():
    """KerasHub's GPT2Backbone (random weights, from arguments) with a Dense LM head."""
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=200, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=16)
    return keras.Model(backbone.input, keras.layers.Dense(200, name="lm_head")(backbone.output))


@pytest.mark.slow
def test_gpt2_blocks_inner_dense_layers_reach_50_percent_and_2_4():
    model = gpt2_language_model()
    before = [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(2)
    tokens = {"token_ids": rng.integers(0, 200, (32, 16)).astype("int32"),
              "padding_mask": np.ones((32, 16), "int32")}
    inner = ("transformer_layer_0/feedforward_intermediate_dense",
             "transformer_layer_0/feedforward_output_dense")

    pruned, report = prune_post_training(model, tokens, PruningPlan.uniform(0.5),
                                         method="sparsegpt", batch_size=16)
    for path in inner:
        assert report[path].achieved == 0.5 and 0 < report[path].error < 1
        assert report[path].rows == 32 * 16
        assert np.mean(kernel(pruned, path) == 0) == 0.5
    assert report["transformer_layer_0/self_attention"].achieved == 0.5  # its 4 projections
    assert kprune.sparsity_report(pruned, strict=True).ok

    pruned, report = prune_post_training(model, tokens, method="wanda", batch_size=16)  # 2:4
    for path in inner:
        assert report[path].method == "wanda 2:4" and 0 < report[path].error < 1
        assert masks.n_m_violations(kernel(pruned, path), 2, 4, axis=0) == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(ValueError, match=r"the model's input 'token_ids' \(None, None\) int32"):
        prune_post_training(model, {**tokens, "token_ids": tokens["token_ids"][:, 0]})
