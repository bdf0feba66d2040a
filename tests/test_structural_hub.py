"""kprune.structural inside KerasHub's TransformerEncoder and TransformerDecoder (Keras 3,
TensorFlow backend): their heads and feed-forward neurons are groups that BertBackbone and
GPT2Backbone lose, the backbone still running (kprune.structural.hub_blocks)."""

import re

import keras
import numpy as np
import pytest

import kprune
from kprune import measure, structural
from kprune.engines.keras3 import sized_blocks
from tests.fisher_reference import assert_same_scores, per_example_fisher

keras_hub = pytest.importorskip("keras_hub")  # in the dev extra: kprune never imports it

SIZES = dict(vocabulary_size=200, num_layers=2, num_heads=4, hidden_dim=64,
             intermediate_dim=128, max_sequence_length=32)
BLOCKS = ("transformer_layer_0", "transformer_layer_1")


@pytest.fixture(scope="module")
def backbones():
    """One BertBackbone and one GPT2Backbone, random weights (tests restore what they change)."""
    keras.utils.set_random_seed(0)
    return {"bert": keras_hub.models.BertBackbone(**SIZES),
            "gpt2": keras_hub.models.GPT2Backbone(**SIZES)}


def _inputs(model, count=3, seed=0):
    """Token ids and a padding mask (the last four positions of one row padded)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, SIZES["vocabulary_size"], (count, 32)).astype("int32")
    mask = np.ones_like(tokens)
    mask[0, -4:] = 0
    x = {"token_ids": tokens, "padding_mask": mask}
    if "segment_ids" in model.input:
        x["segment_ids"] = (np.arange(32)[None] >= 16).astype("int32").repeat(count, 0)
    return x


def _flat(outputs):
    """A model's outputs (a dict for BERT) as one array, in a fixed order."""
    if isinstance(outputs, dict):
        return np.concatenate([np.asarray(outputs[k]).reshape(len(outputs[k]), -1)
                               for k in sorted(outputs)], axis=1)
    return np.asarray(outputs).reshape(len(outputs), -1)


def _zero_heads(block, dead):
    """Zero heads ``dead`` of a block's attention: q/k/v kernel slices and biases, output rows."""
    attention = block._self_attention_layer
    weights = attention.get_weights()  # q kernel, q bias, k ..., v ..., output kernel, bias
    for index in range(6):
        axis = 1 if weights[index].ndim == 3 else 0
        np.moveaxis(weights[index], axis, 0)[dead] = 0.0
    weights[6][dead] = 0.0
    attention.set_weights(weights)


def _zero_neurons(block, dead):
    """Zero neurons ``dead``: intermediate kernel columns and bias, output kernel rows."""
    up, down = block._feedforward_intermediate_dense, block._feedforward_output_dense
    kernel, bias = up.get_weights()
    kernel[:, dead], bias[dead] = 0.0, 0.0
    up.set_weights([kernel, bias])
    kernel, bias = down.get_weights()
    kernel[dead] = 0.0
    down.set_weights([kernel, bias])


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_zero_heads_and_neurons_of_hub_blocks_go_without_changing_the_outputs(backbones, kind):
    model = backbones[kind]
    original = model.get_weights()
    dead_heads = {BLOCKS[0]: [1, 3], BLOCKS[1]: [0, 2]}
    dead_neurons = {BLOCKS[0]: np.arange(0, 128, 2), BLOCKS[1]: np.arange(64)}
    try:
        for name in BLOCKS:
            _zero_heads(model.get_layer(name), dead_heads[name])
            _zero_neurons(model.get_layer(name), dead_neurons[name])
        zeroed = model.get_weights()
        x = _inputs(model)
        expected = _flat(model(x, training=False))
        smaller = structural.prune(model, 0.5, scope="layer")
        assert type(smaller) is keras.Model or type(smaller).__name__ == "Functional"
        assert np.abs(_flat(smaller(x, training=False)) - expected).max() <= 1e-5
        assert np.abs(_flat(smaller.predict(x, verbose=0)) - expected).max() <= 1e-5
        for name in BLOCKS:
            block, old = smaller.get_layer(name), model.get_layer(name)
            config = block.get_config()
            assert (config["num_heads"], config["intermediate_dim"]) == (2, 64)
            attention = block._self_attention_layer.get_config()
            assert (attention["num_heads"], attention["key_dim"], attention["value_dim"]) == (
                2, 16, 16)  # the head size stays hidden_dim // 4
            kept = [h for h in range(4) if h not in dead_heads[name]]
            np.testing.assert_array_equal(
                block._self_attention_layer.get_weights()[0],
                old._self_attention_layer.get_weights()[0][:, kept, :])
        assert re.search(r"transformer_layer_0 +Transformer(En|De)coder +4 +2 ",
                         structural.summary(model, smaller))
        # the same heads and neurons are found dead (remove_units(model, dead) removes them)
        dead = structural.nonzero_units(model)
        assert sorted(dead) == sorted(f"{b}/{unit}" for b in BLOCKS for unit in ("heads",
                                                                                  "neurons"))
        assert [list(dead[f"{b}/heads"]) for b in BLOCKS] == [[0, 2], [1, 3]]
        assert list(dead[f"{BLOCKS[0]}/neurons"]) == list(range(1, 128, 2))
        assert list(dead[f"{BLOCKS[1]}/neurons"]) == list(range(64, 128))
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), zeroed))
    finally:
        model.set_weights(original)


def test_the_global_budget_prunes_heads_and_neurons_and_leaves_the_stream_whole(backbones,
                                                                               tmp_path):
    model = backbones["bert"]
    before = model.get_weights()
    groups = structural.groups(model)
    assert [g.id for g in groups if g.removable] == [
        f"{b}/{unit}" for b in BLOCKS for unit in ("heads", "neurons")]
    keep = structural.select(model, 0.5)
    removed, prunable = keep.budget()
    assert (removed, prunable) == (132, 2 * 4 + 2 * 128)
    assert 0 < keep.budget("heads")[0] < 8 and 0 < keep.budget("channels")[0] < 256
    text = str(keep)
    assert ("residual stream through embeddings_add, transformer_layer_0, transformer_layer_1"
            in text)
    assert "token_embedding, position_embedding, segment_embedding" in text
    halves = structural.select(model, {"heads": 0.5, "channels": 0.5})
    assert halves.budget("heads") == (4, 8) and halves.budget("channels") == (128, 256)
    smaller = structural.prune(model, {"heads": 0.5, "channels": 0.5})
    assert [smaller.get_layer(b).get_config()["num_heads"] for b in BLOCKS] == [
        len(halves[f"{b}/heads"]) for b in BLOCKS]
    assert smaller.count_params() < model.count_params()
    x = _inputs(model)
    assert _flat(smaller(x)).shape == _flat(model(x)).shape
    # a block that lost heads keeps its head size in its config: it saves and loads, also
    # where the process has not pruned (kprune.load_model registers the class again)
    assert smaller.get_layer(BLOCKS[0]).get_config()["head_size"] == 16
    kprune.save_model(smaller, tmp_path / "pruned.keras")
    keras.saving.get_custom_objects().pop("kprune>TransformerEncoder")
    sized_blocks._SIZED.clear()
    loaded = kprune.load_model(tmp_path / "pruned.keras")
    assert np.abs(_flat(loaded(x)) - _flat(smaller(x))).max() <= 1e-6
    with pytest.raises(ValueError, match=r"criterion='fisher' takes the gradient of a "
                       r"classifier's loss: model 'bert_backbone(_\d+)?' has 2 outputs"):
        structural.select(model, 0.5, criterion="fisher", data=_inputs(model, 2))
    # on a classifier built on the backbone's sequence output, the stream is no output:
    # strict=True names the layers that stop it
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(model.output["sequence_output"])
    classifier = keras.Model(model.input, keras.layers.Dense(3, name="head")(pooled))
    with pytest.raises(ValueError, match=r"Cannot prune group 'transformer_layer_0' \(producers "
                       r"\['transformer_layer_0', 'transformer_layer_1'\]\): layer "
                       r"'token_embedding' \(ReversibleEmbedding\).*strict=False"):
        structural.prune(classifier, 0.5, strict=True)
    with pytest.warns(structural.LeftWhole, match=r"residual stream through embeddings_add"):
        structural.prune(classifier, 0.5)
    fisher = structural.select(classifier, 0.5, criterion="fisher", data=_inputs(model, 2))
    assert sorted(fisher) == sorted(g.id for g in groups if g.removable)
    with pytest.raises(ValueError, match=r"`round_to` counts heads.*impossible in layer "
                       r"'transformer_layer_0', which has 4\."):
        structural.select(model, 0.5, round_to={"heads": 8})
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


def _stacked(block_count_heads, *, cross=False):
    """Dense patches into one KerasHub block (a decoder reading an encoder sequence with
    ``cross``), pooled into a Dense head."""
    L = keras.layers
    i = keras.Input((6, 12), name="patches")
    x = L.Dense(16, name="patch")(i)
    if cross:
        context = keras.Input((5, 16), name="context")
        block = keras_hub.layers.TransformerDecoder(32, block_count_heads, name="block")
        x = block(x, context)
        inputs = [i, context]
    else:
        x = keras_hub.layers.TransformerEncoder(32, block_count_heads, name="block")(x)
        inputs = i
    o = L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(x))
    return keras.Model(inputs, o)


def test_batched_fisher_scores_of_hub_heads_and_neurons_equal_those_one_example_at_a_time(
        backbones):
    model = backbones["bert"]
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(model.output["sequence_output"])
    classifier = keras.Model(model.input, keras.layers.Dense(3, name="head")(pooled))
    x = _inputs(model, 3)
    found = structural.group_scores(classifier, "fisher", data=x)
    assert {"transformer_layer_0/heads", "transformer_layer_1/neurons"} <= set(found)
    assert_same_scores(found, per_example_fisher(classifier, x))


def test_a_block_with_one_head_or_cross_attention_keeps_its_heads_and_says_why():
    keras.utils.set_random_seed(1)
    one = _stacked(1)
    assert structural.groups(one)["patch"].reason == (
        "layer 'block' (TransformerEncoder): kprune does not slice hidden_dim inside a KerasHub "
        "block (its heads and neurons are groups of their own)")
    keep = structural.select(one, 0.5, scope="layer")
    # 6 positions of 16 channels: attention 7,296 MACs (one head of 16), feed-forward 6,144
    assert measure.count_macs(one, by_layer=True)["block"] == 7296 + 6144
    assert structural.channel_costs(one, "macs")["block/neurons"] == 6144 / 32
    assert structural.channel_costs(one, "params")["block/neurons"] == 16 + 1 + 16
    left = {group.id: why for group, why in keep.left}
    assert "layer 'block' has one head, which is never removed" in left["block/heads"]
    assert len(keep["block/neurons"]) == 16
    with pytest.warns(structural.LeftWhole, match=r"block/heads .* 'block' has one head"):
        smaller = structural.prune(one, 0.5, scope="layer")
    assert smaller.get_layer("block").get_config()["intermediate_dim"] == 16
    x = np.random.default_rng(0).random((2, 6, 12)).astype("float32")
    assert np.asarray(smaller(x)).shape == (2, 3)

    decoder = _stacked(2, cross=True)
    groups = structural.groups(decoder)
    assert not groups["block/heads"].removable and groups["block/neurons"].removable
    assert "has cross-attention, whose heads share num_heads" in groups["block/heads"].reason
    assert "it reads this tensor as a mask or encoder sequence" in groups["input:context"].reason
    with pytest.warns(structural.LeftWhole, match=r"block/heads .* has cross-attention"):
        smaller = structural.prune(decoder, 0.5, scope="layer")
    assert smaller.get_layer("block").get_config()["num_heads"] == 2
    context = np.random.default_rng(1).random((2, 5, 16)).astype("float32")
    assert np.asarray(smaller([x, context])).shape == (2, 3)


def test_macs_of_a_backbone_of_unknown_sequence_length_say_how_to_count_them(backbones):
    with pytest.raises(ValueError, match=r"count_macs needs every input dimension but the "
                       r"batch to be known: call the model on inputs of fixed sizes .* "
                       r"Received: layer 'token_embedding' with input shape \(None, None\)"):
        measure.count_macs(backbones["gpt2"])
