"""kprune.structural.drop_blocks(unit="transformer"): whole transformer blocks (attention and
feed-forward together) dropped from functional transformers and KerasHub backbones, checked
against the same model built without those blocks."""

import keras as keras3
import numpy as np
import pytest

from kprune import structural
from kprune.engines.tfkeras import loader

ENGINES = {"keras3": keras3, "tf_keras": loader.keras}
TOKENS, WIDTH = 6, 16
HUB = dict(vocabulary_size=200, num_layers=3, num_heads=2, hidden_dim=32, intermediate_dim=64,
           max_sequence_length=16)


def transformer(k, blocks=(1, 2, 3), *, post_ln=False):
    """Token features -> Dense -> transformer blocks (named by their number in ``blocks``)
    -> pooling -> head. Pre-LN: ``x + mha(ln(x))``, ``x + ffn(ln(x))``; post-LN:
    ``ln(x + mha(x))``, ``ln(h + ffn(h))``."""
    L = k.layers
    i = k.Input((TOKENS, 8), name="features")
    x = L.Dense(WIDTH, name="embed")(i)
    for b in blocks:
        h = x if post_ln else L.LayerNormalization(name=f"ln_a{b}")(x)
        x = L.Add(name=f"add_a{b}")([x, L.MultiHeadAttention(2, 8, name=f"mha{b}")(h, h)])
        if post_ln:
            x = L.LayerNormalization(name=f"ln_a{b}")(x)
        h = x if post_ln else L.LayerNormalization(name=f"ln_f{b}")(x)
        h = L.Dense(32, activation="relu", name=f"up{b}")(h)
        x = L.Add(name=f"add_f{b}")([x, L.Dense(WIDTH, name=f"down{b}")(h)])
        if post_ln:
            x = L.LayerNormalization(name=f"ln_f{b}")(x)
    pooled = L.GlobalAveragePooling1D(name="pool")(L.LayerNormalization(name="ln")(x))
    return k.Model(i, L.Dense(3, name="head")(pooled))


def _randomize(model, seed=0):
    """Random weights everywhere (norms' scale and offset too), so that no block is a no-op."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3 + (
            1.0 if "gamma" in getattr(v, "path", getattr(v, "name", "")) else 0.0)
            for w, v in zip(layer.get_weights(), layer.weights)])


def _copied(reference, source):
    """``reference`` with each layer's weights taken from ``source``'s layer of that name."""
    for layer in reference.layers:
        layer.set_weights(source.get_layer(layer.name).get_weights())
    return reference


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(4, TOKENS, 8)).astype("float32")


@pytest.mark.parametrize("post_ln", [False, True], ids=["pre_ln", "post_ln"])
@pytest.mark.parametrize("engine", ENGINES)
def test_dropping_a_transformer_block_gives_the_model_built_without_it(engine, post_ln):
    k = ENGINES[engine]
    model = transformer(k, post_ln=post_ln)
    _randomize(model)
    found = structural.residual_blocks(model, unit="transformer")
    assert [(b.name, b.adds, b.droppable, b.kind) for b in found] == [
        (f"add_f{b}", (f"add_a{b}", f"add_f{b}"), True, "transformer") for b in (1, 2, 3)]
    # post-LN: the norm after each Add goes with the block (the next block reads this
    # block's input, already normalized by the previous block's ln_f)
    assert found[1].branch == (("mha2", "add_a2", "ln_a2", "up2", "down2", "ln_f2") if post_ln
                               else ("ln_a2", "mha2", "add_a2", "ln_f2", "up2", "down2"))
    assert found[1].shortcut == ("ln_f1" if post_ln else "add_f1")
    assert "transformer block of 7 layers, droppable" in str(found[1])
    shorter = structural.drop_blocks(model, ["add_a2"], unit="transformer")  # either Add
    expected = _copied(transformer(k, (1, 3), post_ln=post_ln), model)
    assert sorted(layer.name for layer in shorter.layers) == sorted(
        layer.name for layer in expected.layers)
    x = _x()
    assert np.abs(np.asarray(shorter(x)) - np.asarray(expected(x))).max() <= 1e-5
    assert np.abs(np.asarray(shorter(x)) - np.asarray(model(x))).max() > 1e-3  # it did change
    first = structural.drop_blocks(model, ["add_f1", "add_f3"], unit="transformer")
    expected = _copied(transformer(k, (2,), post_ln=post_ln), model)
    assert np.abs(np.asarray(first(x)) - np.asarray(expected(x))).max() <= 1e-5


@pytest.mark.parametrize("engine", ENGINES)
def test_influence_drops_the_block_made_the_identity_first(engine):
    k = ENGINES[engine]
    model = transformer(k)
    _randomize(model)
    for name in ("mha2", "down2"):  # the attention output projection, the feed-forward one
        layer = model.get_layer(name)
        weights = layer.get_weights()
        weights[-2:] = [w * 0.0 for w in weights[-2:]]
        layer.set_weights(weights)
    x = _x()
    scores = structural.block_scores(model, criterion="influence", data=x, unit="transformer")
    assert list(scores) == ["add_f1", "add_f2", "add_f3"]
    assert scores["add_f2"] == pytest.approx(0.0, abs=1e-6)
    assert min(scores["add_f1"], scores["add_f3"]) > 1e-3
    shorter = structural.drop_blocks(model, 1, unit="transformer", criterion="influence",
                                     data=x)
    assert "mha2" not in [layer.name for layer in shorter.layers]
    assert np.abs(np.asarray(shorter(x)) - np.asarray(model(x))).max() <= 1e-5
    assert set(structural.block_scores(model, criterion="l1", unit="transformer")) == set(scores)


def test_bad_input_says_what_is_wrong_and_leaves_the_model_alone():
    model = transformer(keras3)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"between 1 and one less than the 3 transformer blocks "
                                         r"\(one must stay\) \(2: .*Received: blocks=3"):
        structural.drop_blocks(model, 3, unit="transformer", criterion="l1")
    with pytest.raises(ValueError, match="names all 3 transformer blocks; one must stay"):
        structural.drop_blocks(model, ["add_f1", "add_f2", "add_a3"], unit="transformer")
    with pytest.raises(ValueError, match=r"'add_ff1', which is not a layer of the model; the "
                                         r"transformer blocks are \['add_f1', 'add_f2', "
                                         r"'add_f3'\]\. Did you mean 'add_f1'"):
        structural.drop_blocks(model, ["add_ff1"], unit="transformer")
    with pytest.raises(ValueError, match="'up1', which is not a transformer block"):
        structural.drop_blocks(model, ["up1"], unit="transformer")
    with pytest.raises(ValueError, match=r"criterion='influence' .* pass data=x .*"
                                         r"Received: data=None"):
        structural.drop_blocks(model, 1, unit="transformer", criterion="influence")
    with pytest.raises(ValueError, match=r"Argument `data` must be \(x_val, y_val\)"):
        structural.drop_blocks(model, 1, unit="transformer")
    with pytest.raises(ValueError, match="Argument `unit` must be one of"):
        structural.residual_blocks(model, unit="transformers")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def _hub_model(kind, **sizes):
    import keras_hub  # in the dev extra: kprune itself never imports it

    backbone = {"bert": keras_hub.models.BertBackbone, "gpt2": keras_hub.models.GPT2Backbone}
    keras3.utils.set_random_seed(3)
    return backbone[kind](**{**HUB, **sizes})


def _hub_x(model, seed=0):
    tokens = np.random.default_rng(seed).integers(0, 200, (2, 16)).astype("int32")
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    if "segment_ids" in model.input:
        x["segment_ids"] = np.zeros_like(tokens)
    return x


def _outputs(model, x):
    found = model(x, training=False)
    return [np.asarray(t) for t in (found.values() if isinstance(found, dict) else [found])]


def test_a_bert_backbone_loses_whole_layers_and_stays_a_bert_backbone(tmp_path):
    model = _hub_model("bert")
    found = structural.residual_blocks(model, unit="transformer")
    assert [(b.name, b.droppable) for b in found] == [
        (f"transformer_layer_{i}", True) for i in range(3)]
    assert found[1].shortcut == "transformer_layer_0"
    shorter = structural.drop_blocks(model, ["transformer_layer_1"], unit="transformer")
    assert type(shorter) is type(model) and shorter.num_layers == 2
    expected = _hub_model("bert", num_layers=2)  # kept blocks' weights copied in order
    for old, new in (("transformer_layer_0", "transformer_layer_0"),
                     ("transformer_layer_2", "transformer_layer_1")):
        expected.get_layer(new).set_weights(model.get_layer(old).get_weights())
    for layer in expected.layers:
        if not layer.name.startswith("transformer_layer_"):
            layer.set_weights(model.get_layer(layer.name).get_weights())
    x = _hub_x(model)
    for got, want in zip(_outputs(shorter, x), _outputs(expected, x)):
        assert np.abs(got - want).max() <= 1e-5
    assert shorter.count_params() < model.count_params() and model.num_layers == 3
    shorter.save(tmp_path / "shorter.keras")  # saves and loads as its class
    loaded = keras3.saving.load_model(tmp_path / "shorter.keras")
    assert type(loaded) is type(model) and loaded.num_layers == 2
    for got, want in zip(_outputs(loaded, x), _outputs(shorter, x)):
        assert np.abs(got - want).max() <= 1e-5
    with pytest.raises(ValueError, match="Did you mean 'transformer_layer_1'"):
        structural.drop_blocks(model, ["transformer_layer1"], unit="transformer")
    with pytest.raises(ValueError, match=r"\(0: \[\]\).*pass unit='transformer'"):
        structural.drop_blocks(model, 1, criterion="l1")  # its Adds are inside its layers


def _identity_block(model, name):
    """Zero the output projections of a KerasHub pre-LN block: it adds nothing."""
    for weight in model.get_layer(name).weights:
        if weight.path.endswith(("attention_output/kernel", "attention_output/bias",
                                 "feedforward_output_dense/kernel",
                                 "feedforward_output_dense/bias")):
            weight.assign(np.zeros(weight.shape, "float32"))


def test_influence_drops_the_gpt2_block_made_the_identity_first():
    model = _hub_model("gpt2")
    _identity_block(model, "transformer_layer_1")
    x = _hub_x(model)
    scores = structural.block_scores(model, criterion="influence", data=x, unit="transformer")
    assert scores["transformer_layer_1"] == pytest.approx(0.0, abs=1e-6)
    assert min(scores["transformer_layer_0"], scores["transformer_layer_2"]) > 1e-3
    shorter = structural.drop_blocks(model, 1, unit="transformer", criterion="influence",
                                     data=x)
    assert shorter.num_layers == 2
    assert np.abs(_outputs(shorter, x)[0] - _outputs(model, x)[0]).max() <= 1e-5


def test_a_classifier_around_a_gpt2_backbone_is_rewired_around_the_dropped_layer():
    model = _hub_model("gpt2", num_layers=2)
    _identity_block(model, "transformer_layer_0")
    inputs = {name: keras3.Input((16,), dtype="int32", name=name) for name in model.input}
    pooled = keras3.layers.GlobalAveragePooling1D(name="pool")(model(inputs))
    classifier = keras3.Model(inputs, keras3.layers.Dense(3, name="head")(pooled))
    shorter = structural.drop_blocks(classifier, ["transformer_layer_0"], unit="transformer")
    names = [layer.name for layer in shorter.layers]
    assert "transformer_layer_0" not in names and "transformer_layer_1" in names
    x = _hub_x(model)
    assert np.abs(_outputs(shorter, x)[0] - _outputs(classifier, x)[0]).max() <= 1e-5
