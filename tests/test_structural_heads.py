"""kprune.structural on transformers: attention heads as groups (kprune.structural.heads),
feed-forward neurons, and a budget that leaves whole what it cannot prune, on both engines."""

import re
import warnings

import keras
import numpy as np
import pytest

from kprune import measure, structural
from kprune.engines.tfkeras import loader

tf_keras = loader.keras
ENGINES = {"keras3": keras, "tf_keras": tf_keras}


def text_transformer(k, heads=4, *, gate=False):
    """Embedding, twice MHA + Add + LayerNorm + Dense 128 -> Dense 64 + Add + LayerNorm, pool, head."""
    L = k.layers
    i = k.Input((12,), dtype="int32", name="tokens")
    x = L.Embedding(50, 64, name="embed")(i)
    for b in (1, 2):
        extra = {"use_gate": True} if gate else {}
        a = L.MultiHeadAttention(heads, 16, name=f"mha_{b}", **extra)(x, x)
        x = L.LayerNormalization(name=f"ln_a{b}")(L.Add(name=f"add_a{b}")([x, a]))
        f = L.Dense(128, activation="relu", name=f"ffn_up_{b}")(x)
        f = L.Dense(64, name=f"ffn_down_{b}")(f)
        x = L.LayerNormalization(name=f"ln_f{b}")(L.Add(name=f"add_f{b}")([x, f]))
    o = L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(x))
    return k.Model(i, o, name="text_transformer")


def cross_attention(k):
    """Queries from the tokens, keys and values from a context of another width (a Dense)."""
    L = k.layers
    i = k.Input((6,), dtype="int32", name="tokens")
    c = k.Input((5, 10), name="context")
    x = L.Embedding(30, 32, name="embed")(i)
    ctx = L.Dense(24, activation="relu", name="ctx")(c)
    a = L.MultiHeadAttention(4, 8, value_dim=6, name="cross")(x, ctx)
    x = L.Add(name="add")([x, a])
    o = L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(x))
    return k.Model([i, c], o, name="cross_attention")


def _tokens(n=4, length=12, vocab=50):
    return np.random.default_rng(0).integers(0, vocab, (n, length)).astype("int32")


def _out(model, x):
    return np.asarray(model(x, training=False))


def _zero_heads(layer, dead):
    """Zero heads ``dead`` of an attention layer: q/k/v slices and biases, output rows."""
    weights = layer.get_weights()  # q kernel, q bias, k kernel, k bias, v ..., out kernel, bias
    for index in range(6):
        axis = 1 if weights[index].ndim == 3 else 0
        np.moveaxis(weights[index], axis, 0)[dead] = 0.0
    weights[6][dead] = 0.0
    layer.set_weights(weights)


def _zero_neurons(model, up, down, dead):
    kernel, bias = model.get_layer(up).get_weights()
    kernel[:, dead], bias[dead] = 0.0, 0.0
    model.get_layer(up).set_weights([kernel, bias])
    kernel, bias = model.get_layer(down).get_weights()
    kernel[dead] = 0.0
    model.get_layer(down).set_weights([kernel, bias])


def _snapshot(model):
    return [w.copy() for w in model.get_weights()]


def _unchanged(model, before):
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_heads_and_neurons_go_without_changing_the_outputs(engine):
    k = ENGINES[engine]
    k.utils.set_random_seed(0)
    model = text_transformer(k)
    _zero_heads(model.get_layer("mha_1"), [1, 3])
    _zero_heads(model.get_layer("mha_2"), [0, 2])
    _zero_neurons(model, "ffn_up_1", "ffn_down_1", np.arange(0, 128, 2))
    _zero_neurons(model, "ffn_up_2", "ffn_down_2", np.arange(64))
    before = _snapshot(model)
    x = _tokens()
    with pytest.warns(structural.LeftWhole, match=r"residual stream.*'embed' \(Embedding\)"):
        smaller = structural.prune(model, 0.5, scope="layer")
    assert np.abs(_out(smaller, x) - _out(model, x)).max() <= 1e-5
    for name, kept in (("mha_1", [0, 2]), ("mha_2", [1, 3])):
        config = smaller.get_layer(name).get_config()
        assert (config["num_heads"], config["key_dim"], config["value_dim"]) == (2, 16, 16)
        q = smaller.get_layer(name).get_weights()[0]
        np.testing.assert_array_equal(q, model.get_layer(name).get_weights()[0][:, kept, :])
    assert [smaller.get_layer(f"ffn_up_{b}").get_config()["units"] for b in (1, 2)] == [64, 64]
    assert smaller.count_params() < model.count_params()
    assert re.search(r"mha_1 +MultiHeadAttention +4 +2 ", structural.summary(model, smaller))
    assert type(smaller).__module__.startswith(k.Model.__module__.split(".")[0])
    # the same heads and neurons are found dead, and removed alike
    dead = structural.nonzero_units(model)
    assert [list(dead[g]) for g in ("mha_1/heads", "mha_2/heads")] == [[0, 2], [1, 3]]
    exact = structural.remove_units(model, dead)
    assert np.abs(_out(exact, x) - _out(model, x)).max() <= 1e-5
    assert _unchanged(model, before)


def test_the_global_budget_leaves_the_residual_stream_whole_and_says_why():
    keras.utils.set_random_seed(1)
    model = text_transformer(keras)
    before = _snapshot(model)
    keep = structural.select(model, 0.3)
    assert set(keep) == {"mha_1/heads", "ffn_up_1", "mha_2/heads", "ffn_up_2"}
    left = {group.id: why for group, why in keep.left}
    assert set(left) == {"mha_1", "head"}  # the residual stream (made by the embedding)
    assert "layer 'embed' (Embedding)" in left["mha_1"]
    removed, prunable = keep.budget()
    assert prunable == 2 * 4 + 2 * 128 and removed == int(0.3 * prunable)
    text = str(keep)
    assert "fraction 0.3 (global) of the prunable budget: removed 79 of 264" in text
    assert "residual stream through add_a1, add_f1, add_a2, add_f2" in text
    assert "embed, mha_1, ffn_down_1, mha_2, ffn_down_2" in text
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        smaller = structural.prune(model, 0.3)
    assert [w.category for w in caught] == [structural.LeftWhole]
    assert smaller.get_layer("ffn_down_1").get_config()["units"] == 64
    with pytest.raises(ValueError, match=r"Cannot prune group 'mha_1' \(producers \['mha_1', "
                       r"'ffn_down_1', .*layer 'embed' \(Embedding\).*strict=False"):
        structural.prune(model, 0.3, strict=True)
    with pytest.raises(TypeError, match=r"Argument `strict` must be True or False\. "
                       r"Received: strict='yes'"):
        structural.select(model, 0.3, strict="yes")
    costs = structural.select(model, 0.3, cost="params")
    removed, prunable = costs.budget()
    assert f"removed {removed:,.0f} of {prunable:,.0f} params of the prunable channels and " \
           "heads" in str(costs) and removed <= 0.3 * prunable
    assert _unchanged(model, before)


@pytest.mark.parametrize("engine", ENGINES)
def test_cross_attention_couples_query_and_key_value_inputs_apart(engine):
    k = ENGINES[engine]
    k.utils.set_random_seed(2)
    model = cross_attention(k)
    gs = structural.groups(model)
    assert [m.layer for m in gs["ctx"].members] == ["ctx", "cross"]  # keys and values read it
    assert not gs["cross"].removable  # the query side is the embedding's residual stream
    assert gs["cross/heads"].size == 4
    kernel, bias = model.get_layer("ctx").get_weights()
    kernel[:, :10], bias[:10] = 0.0, 0.0  # relu(0) = 0: ten dead context channels
    model.get_layer("ctx").set_weights([kernel, bias])
    _zero_heads(model.get_layer("cross"), [3])
    dead = structural.nonzero_units(model)
    assert list(dead["ctx"]) == list(range(10, 24)) and list(dead["cross/heads"]) == [0, 1, 2]
    smaller = structural.remove_units(model, dead)
    cross = smaller.get_layer("cross")
    shapes = [tuple(w.shape) for w in cross.get_weights()]
    assert shapes[0] == (32, 3, 8) and shapes[2] == (14, 3, 8) and shapes[4] == (14, 3, 6)
    assert shapes[6] == (3, 6, 32)
    rng = np.random.default_rng(0)
    x = [_tokens(3, 6, 30), rng.random((3, 5, 10)).astype("float32")]
    assert np.abs(_out(smaller, x) - _out(model, x)).max() <= 1e-5


def test_one_head_is_left_whole_and_round_to_counts_heads():
    keras.utils.set_random_seed(3)
    one = text_transformer(keras, heads=1)
    keep = structural.select(one, 0.5, scope="layer")
    left = {group.id: why for group, why in keep.left}
    assert "one head, which is never removed" in left["mha_1/heads"]
    with pytest.warns(structural.LeftWhole, match=r"mha_1/heads .* 'mha_1' has one head"):
        smaller = structural.prune(one, 0.5, scope="layer")
    assert smaller.get_layer("mha_2").get_config()["num_heads"] == 1

    model = text_transformer(keras)
    before = _snapshot(model)
    kept = structural.select(model, 0.9, scope="layer", round_to={"channels": 8, "heads": 2})
    assert len(kept["mha_1/heads"]) == 2 and len(kept["ffn_up_1"]) == 16
    never_zero = structural.select(model, 0.9, scope="layer", max_fraction_per_group=1.0)
    assert len(never_zero["mha_1/heads"]) == 1 and len(never_zero["ffn_up_1"]) == 13
    with pytest.raises(ValueError, match=r"`round_to` counts heads.*multiple of 8 heads is "
                       r"impossible in layer 'mha_1', which has 4\. Pass round_to="
                       r"\{'channels': 8, 'heads': 1\}.*Received: round_to=8"):
        structural.select(model, 0.5, round_to=8)
    for bad in ({"head": 2}, {"heads": 0}, 0, 2.0):
        with pytest.raises(ValueError, match=r"Argument `round_to` must be None, a positive "
                           r"integer, or a dict .*Received: round_to="):
            structural.prune(model, 0.5, round_to=bad)
    taylor = structural.select(model, 0.5, criterion="taylor",
                               data=(_tokens(8), np.arange(8) % 3))
    assert len(taylor["mha_2/heads"]) >= 1
    assert _unchanged(model, before)


def test_attention_it_cannot_slice_is_refused_with_the_reason():
    gated = text_transformer(keras, gate=True)
    gs = structural.groups(gated)
    assert "mha_1/heads" not in gs and gs["ffn_up_1"].removable
    assert any("'mha_1' (MultiHeadAttention): use_gate=True: kprune does not slice the "
               "attention gate" in group.reason for group in gs)
    with pytest.raises(ValueError, match=r"'mha_1' \(MultiHeadAttention\): use_gate=True"):
        structural.prune(gated, 0.5, strict=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_attention_layer_costs_its_projections_scores_and_values(engine):
    model = cross_attention(ENGINES[engine])  # 6 queries of 32, 5 values of 24, 4 heads
    macs = structural.channel_costs(model, "macs")
    expected = (6 * 32 * 4 * 8 + 5 * 24 * 4 * (8 + 6) + 6 * 5 * 4 * (8 + 6) + 6 * 4 * 6 * 32)
    assert measure.count_macs(model, by_layer=True)["cross"] == expected == 19152
    assert macs["cross/heads"] == pytest.approx(expected / 4)  # every term is linear in heads


def patch_transformer(k):
    """A residual stream made by a Dense (no embedding, no norm): prunable through attention."""
    L = k.layers
    i = k.Input((9, 12), name="patches")
    x = L.Dense(16, name="patch")(i)
    x = L.Add(name="add_a")([x, L.MultiHeadAttention(2, 4, name="mha")(x, x)])
    f = L.Dense(16, name="ffn_down")(L.Dense(32, activation="relu", name="ffn_up")(x))
    x = L.Add(name="add_f")([x, f])
    o = L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(x))
    return k.Model(i, o, name="patch_transformer")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_residual_stream_through_attention_loses_its_query_key_value_rows_and_output_columns(
        engine):
    k = ENGINES[engine]
    k.utils.set_random_seed(4)
    model = patch_transformer(k)
    stream = structural.groups(model)["patch"]
    assert stream.removable and {"mha:in", "mha:out"} <= set(map(str, stream.members))
    dead = [1, 5, 6, 11]
    for name in ("patch", "ffn_down"):
        kernel, bias = model.get_layer(name).get_weights()
        kernel[:, dead], bias[dead] = 0.0, 0.0
        model.get_layer(name).set_weights([kernel, bias])
    weights = model.get_layer("mha").get_weights()
    weights[6][..., dead], weights[7][dead] = 0.0, 0.0  # output columns and bias
    model.get_layer("mha").set_weights(weights)
    keep = structural.nonzero_units(model)
    assert len(keep["patch"]) == 12
    smaller = structural.remove_units(model, keep)
    shapes = [tuple(w.shape) for w in smaller.get_layer("mha").get_weights()]
    assert shapes[0] == shapes[2] == shapes[4] == (12, 2, 4) and shapes[6:] == [(2, 4, 12), (12,)]
    x = np.random.default_rng(0).random((3, 9, 12)).astype("float32")
    assert np.abs(_out(smaller, x) - _out(model, x)).max() <= 1e-5
