"""Weights wherever they sit (Keras 3): layers inside custom layers and KerasHub blocks are
rows of the plan at their path, pruned by masks on their variables, through fit, strip,
the strict report, saving and TFLite, on TensorFlow and JAX."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kprune
from kprune import LayerRule, PruningPlan
from kprune.core import layers, masks
from kprune.engines.keras3 import wrap

ROOT = Path(__file__).resolve().parents[1]


@keras.saving.register_keras_serializable(package="tests")
class ThreeDense(keras.layers.Layer):
    """A custom layer made of three Dense sublayers (a residual feed-forward block)."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.fc_a = keras.layers.Dense(width, activation="relu", name="fc_a")
        self.fc_b = keras.layers.Dense(width, activation="relu", name="fc_b")
        self.fc_c = keras.layers.Dense(width, name="fc_c")

    def call(self, x):
        return x + self.fc_c(self.fc_b(self.fc_a(x)))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def block_model(width=16):
    inputs = keras.Input((width,))
    x = ThreeDense(width, name="block")(inputs)
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs)


def fit(pruned, x, y, epochs=1):
    pruned.compile(optimizer="adam", loss="mse")
    pruned.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=kprune.callbacks())
    return pruned


def random_data(shape, count=32, outputs=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(count, *shape)).astype("float32"), rng.normal(
        size=(count, outputs)).astype("float32")


def test_a_custom_layers_dense_sublayers_are_rows_at_their_path():
    plan = PruningPlan.default().resolve(block_model(), steps_per_epoch=4, epochs=1)
    rows = {row.name: row for row in plan}
    assert list(rows) == ["block", "block/fc_a", "block/fc_b", "block/fc_c", "head"]
    assert rows["block"].reason == "ThreeDense: its sublayers are rows of their own"
    assert [rows[f"block/fc_{k}"].method_label for k in "abc"] == ["2:4"] * 3
    assert rows["head"].method == "skip"


def test_a_layer_inside_a_custom_layer_is_never_the_models_first_or_last_layer():
    """A bare backbone (no head): the default plan's head rule (the last Dense) must not
    skip the last block's inner Dense; a Dense in the graph before the block is the last."""
    inputs = keras.Input((16,))
    headless = keras.Model(inputs, ThreeDense(16, name="block")(inputs))
    rows = {row.name: row for row in PruningPlan.default().resolve(headless)}
    assert [rows[f"block/fc_{k}"].method_label for k in "abc"] == ["2:4"] * 3
    stem = keras.layers.Dense(16, name="stem")(inputs)
    rows = {row.name: row for row in PruningPlan.default().resolve(
        keras.Model(inputs, ThreeDense(16, name="block")(stem)))}
    assert rows["stem"].reason == "classifier head" and rows["block/fc_c"].method_label == "2:4"


def test_nested_layers_prune_through_fit_strip_report_and_save(tmp_path):
    model = block_model()
    before = [w.copy() for w in model.get_weights()]
    x, y = random_data((16,))
    pruned = fit(kprune.apply(model, steps_per_epoch=4, epochs=2), x, y)
    mask = wrap.kernel_masks(pruned)
    assert sorted(mask) == ["block/fc_a", "block/fc_b", "block/fc_c"]
    for by_label in mask.values():  # 2:4 along the inputs, in the masks already
        assert masks.n_m_violations(by_label["kernel"].astype(float), 2, 4, axis=0) == 0

    kprune.save_model(pruned, tmp_path / "mid.keras")  # mid-pruning: masks and step kept
    resumed = kprune.load_model(tmp_path / "mid.keras")
    assert {p: m["kernel"].tolist() for p, m in wrap.kernel_masks(resumed).items()} == {
        p: m["kernel"].tolist() for p, m in mask.items()}
    assert int(wrap.wrapped_layers(resumed)[0][1].pruning_step.numpy()) == 4
    fit(resumed, x, y)
    final = kprune.strip(resumed)
    report = kprune.sparsity_report(final, strict=True)
    assert {row.name: row.achieved for row in report.rows if row.method} == {
        "block/fc_a": 0.5, "block/fc_b": 0.5, "block/fc_c": 0.5, "head": 0.0}
    inner = final.get_layer("block")
    assert np.count_nonzero(inner.fc_b.kernel.numpy()) == 16 * 16 // 2
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # untouched
    kprune.save_model(final, tmp_path / "final.keras")
    loaded = kprune.load_model(tmp_path / "final.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), final.predict(x, verbose=0),
                               atol=1e-6)


def test_masked_nested_weights_stay_zero_while_training():
    x, y = random_data((16,))
    pruned = fit(kprune.apply(block_model(), steps_per_epoch=4, epochs=3), x, y, epochs=3)
    views = dict(layers.weight_layers(pruned))
    for path in ("block/fc_a", "block/fc_c"):
        view = views[path]
        kernel, keep = view.layer.kernel.numpy(), view.masks[0].numpy()
        assert np.all(kernel[keep == 0] == 0), path


def test_a_model_nested_in_a_model_holding_a_custom_layer():
    inner = block_model()
    inputs = keras.Input((16,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="out")(inner(inputs)))
    x, y = random_data((16,), outputs=2)
    final = kprune.strip(fit(kprune.apply(outer, steps_per_epoch=4, epochs=1), x, y))
    report = {row.name: row for row in kprune.sparsity_report(final, strict=True).rows}
    prefix = inner.name
    assert report[f"{prefix}/block/fc_a"].achieved == 0.5
    assert report[f"{prefix}/head"].method == "2:4"  # only the last Dense is the head
    assert report["out"].method == "skip"


def test_rule_selectors_see_nested_layers():
    model = block_model()
    by_regex = PruningPlan((LayerRule(r".*/fc_[ab]", by="regex", target=0.7),)).resolve(model)
    assert [row.name for row in by_regex.pruned] == ["block/fc_a", "block/fc_b"]
    by_name = PruningPlan((LayerRule("fc_c", target=0.6),)).resolve(model)
    assert [(row.name, row.target) for row in by_name.pruned] == [("block/fc_c", 0.6)]
    by_type = PruningPlan((LayerRule("Dense", by="type", target=0.3),)).resolve(model)
    assert len(by_type.pruned) == 4


def test_a_rule_path_that_matches_nothing_suggests_the_closest_paths():
    plan = PruningPlan((LayerRule("block/fc_d", target=0.5),))
    with pytest.raises(ValueError, match=r"names layer 'block/fc_d'.*Did you mean.*block/fc_"):
        plan.resolve(block_model())


# -- EinsumDense -------------------------------------------------------------------------------


def einsum_model(equation, output_shape, bias_axes=None):
    inputs = keras.Input((8, 16))
    x = keras.layers.EinsumDense(equation, output_shape, bias_axes=bias_axes,
                                 name="proj")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def test_einsum_dense_takes_n_m_along_its_contracted_axis():
    # abc,cde->abde: the kernel is (c=16 inputs, d=4, e=8), contracted on its first axis
    model = einsum_model("abc,cde->abde", (8, 4, 8))
    assert layers.n_m_axis(model.get_layer("proj")) == -3
    assert layers.kind(model.get_layer("proj")) == "dense"
    x, y = random_data((8, 16))
    final = kprune.strip(fit(kprune.apply(model, steps_per_epoch=4, epochs=1), x, y))
    kernel = final.get_layer("proj").kernel.numpy()
    assert kernel.shape == (16, 4, 8)
    assert masks.n_m_violations(kernel, 2, 4, axis=0) == 0
    assert np.count_nonzero(kernel) == kernel.size // 2
    # and not along the default axis (-2): groups of 4 there are not 2:4
    assert masks.n_m_violations(kernel, 2, 4, axis=-2) > 0
    assert kprune.sparsity_report(final, strict=True).ok


def test_einsum_dense_with_an_ambiguous_input_axis_is_refused_with_the_reason():
    # abcd,cde->abe contracts two kernel axes (c and d) with the input
    inputs = keras.Input((8, 4, 4))
    x = keras.layers.EinsumDense("abcd,cde->abe", (8, 8), name="proj")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    rule = LayerRule("proj", method="m_by_n", n=2, m=4)
    with pytest.raises(ValueError, match=r"'proj' cannot take 2:4 sparsity: its equation "
                                         r"'abcd,cde->abe' contracts 2 kernel axes \(c, d\)"):
        PruningPlan((rule,)).resolve(model)
    fallback = PruningPlan((LayerRule("proj", method="m_by_n", fallback="unstructured"),))
    (row,) = fallback.resolve(model).pruned
    assert row.method == "unstructured" and "contracts 2 kernel axes" in row.reason


# -- what kprune cannot mask, said in the row --------------------------------------------------


@keras.saving.register_keras_serializable(package="tests")
class OwnWeight(keras.layers.Layer):
    """A custom layer with a variable of its own beside a Dense sublayer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(8, name="fc")

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(8,), initializer="ones")
        self.fc.build(input_shape)

    def call(self, x):
        return self.fc(x) * self.scale


def test_a_variable_created_outside_any_known_layer_is_named_in_its_row():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(OwnWeight(name="own")(inputs)))
    rows = {row.name: row for row in PruningPlan.default().resolve(model)}
    assert rows["own"].method == "skip"
    assert "holds variables of its own (own/scale)" in rows["own"].reason
    assert rows["own/fc"].method_label == "2:4"


class Tied(keras.layers.Layer):
    """Two Dense sublayers, the second using the first's kernel (tied weights)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.enc = keras.layers.Dense(8, name="enc")
        self.dec = keras.layers.Dense(8, name="dec")

    def build(self, input_shape):
        self.enc.build(input_shape)
        self.dec.build(input_shape)
        object.__setattr__(self.dec, "_kernel", self.enc._kernel)  # past Keras's tracking

    def call(self, x):
        return self.dec(self.enc(x))


def test_a_variable_shared_between_two_layers_is_skipped_with_the_reason():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(Tied(name="tied")(inputs)))
    rows = {row.name: row for row in PruningPlan.default().resolve(model)}
    assert rows["tied/enc"].method_label == "2:4"
    assert rows["tied/dec"].method == "skip"
    assert rows["tied/dec"].reason == ("kernel is shared with tied/enc: a shared variable "
                                       "cannot take two masks")


# -- KerasHub backbones, on TensorFlow and JAX -------------------------------------------------


def check_hub_facts(facts, kind, backend):
    assert facts["backend"] == backend
    blocks = ("transformer_layer_0", "transformer_layer_1")
    backbone = f"{kind}_backbone"
    expected = [f"{backbone}/{block}/feedforward_{dense}_dense" for block in blocks
                   for dense in ("intermediate", "output")]
    if kind == "bert":  # the backbone's pooler, a Dense like any other
        expected.append("bert_backbone/pooled_dense")
    assert facts["pruned"] == dict.fromkeys(expected, "2:4")
    assert facts["report_ok"]
    for path in expected:
        assert facts["achieved"][path] == 0.5
        assert facts["n_m_violations"][path] == 0
    dense = {path: value for path, value in facts["achieved"].items() if path not in expected}
    assert "head" in dense and any("token_embedding" in path for path in dense)
    assert set(dense.values()) == {0.0}  # head, embeddings and attention left dense
    assert facts["skipped"]["head"] == "classifier head"
    assert facts["model_untouched"]
    assert facts["loaded_difference"] < 1e-5
    assert facts["mid_step"] == 8
    if backend == "tensorflow":
        assert facts["tflite_difference"] < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_keras_hub_classifiers_prune_to_the_default_plan(backend, tmp_path, request):
    env = {**(request.getfixturevalue("jax_env") if backend == "jax" else os.environ),
           "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "tests.keras3_hub", str(tmp_path), "gpt2",
                             "bert"], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(facts) == ["bert", "gpt2"]
    for kind, found in facts.items():
        check_hub_facts(found, kind, backend)


def test_a_tied_reversible_embedding_says_so_in_its_row():
    import keras_hub  # in the dev extra: kprune itself never imports it

    inputs = keras.Input((8,), dtype="int32")
    embedding = keras_hub.layers.ReversibleEmbedding(50, 16, tie_weights=True, name="tokens")
    x = keras.layers.GlobalAveragePooling1D()(embedding(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    rows = {row.name: row for row in PruningPlan.default().resolve(model)}
    assert layers.kind(embedding) == "embedding"
    assert rows["tokens"].weights == ("embeddings",)
    assert "tied: also the output projection" in rows["tokens"].reason


# -- subclassed models ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_subclassed_model_prunes_to_the_default_plan_on_real_mnist(backend, mnist_dir,
                                                                    tmp_path, request):
    env = {**(request.getfixturevalue("jax_env") if backend == "jax" else os.environ),
           "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "tests.keras3_subclassed", str(mnist_dir),
                             "30000", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["backend"] == backend and facts["type"] == "SubclassedCNN"
    assert facts["report"] == {"conv1": ["unstructured", 0.5], "conv2": ["2:4", 0.5],
                               "fc1": ["2:4", 0.5], "head": ["skip", 0.0]}
    assert facts["accuracy"] > 0.95, facts["accuracy"]
    assert facts["loaded_difference"] < 1e-5
    assert "is a subclassed model being pruned" in facts["mid_save_refused"]


def test_a_subclassed_models_layers_are_rows_and_its_input_is_untouched():
    from tests.keras3_subclassed import SubclassedCNN

    model = SubclassedCNN(classes=4)
    x, y = random_data((12, 12, 1), outputs=4)
    model(x[:1])
    before = [w.copy() for w in model.get_weights()]
    rows = PruningPlan.default().resolve(model)
    assert [row.name for row in rows.pruned] == ["conv1", "conv2", "fc1"]
    pruned = fit(kprune.apply(model, steps_per_epoch=4, epochs=1), x, y)
    assert type(pruned) is SubclassedCNN and pruned is not model
    assert sorted(wrap.kernel_masks(pruned)) == ["conv1", "conv2", "fc1"]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    with pytest.raises(ValueError, match="is a subclassed model being pruned.*Save it once "
                                         "stripped"):
        kprune.save_model(pruned, "unused.keras")


def test_an_unbuilt_subclassed_model_is_refused_with_what_to_do():
    from tests.keras3_subclassed import SubclassedCNN

    with pytest.raises(ValueError, match="is not built: call it on a batch first"):
        kprune.apply(SubclassedCNN(), steps_per_epoch=1, epochs=1)


def test_post_training_solves_layers_inside_custom_layers():
    # The masks against direct computations: tests/test_post_training_nested.py.
    x, _ = random_data((16,), count=64)
    pruned, report = kprune.prune_post_training(block_model(), x, method="wanda")
    rows = {row.name: row for row in report.rows}
    assert [rows[f"block/fc_{k}"].method for k in "abc"] == ["wanda 2:4"] * 3
    assert [rows[f"block/fc_{k}"].achieved for k in "abc"] == [0.5] * 3
    assert kprune.sparsity_report(pruned, strict=True).ok


def test_tf_keras_keeps_tfmots_limits_a_custom_layer_row_says_what_to_implement():
    from kprune.engines.tfkeras import loader

    tk = loader.keras

    class Block(tk.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.fc = tk.layers.Dense(8, name="fc")

        def call(self, x):
            return self.fc(x)

    inputs = tk.Input((8,))
    model = tk.Model(inputs, tk.layers.Dense(2, name="head")(Block(name="block")(inputs)))
    rows = {row.name: row for row in PruningPlan.default().resolve(model)}
    assert list(rows) == ["block", "head"]  # no rows inside: tfmot cannot enter the layer
    assert rows["block"].method == "skip"
    assert rows["block"].reason == ("Block is not in tfmot's registry (implement "
                                    "tfmot.sparsity.keras.PrunableLayer to prune it)")
