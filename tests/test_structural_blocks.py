"""kprune.structural.blocks: residual blocks found from the graph, branches dropped."""

import keras as keras3
import numpy as np
import pytest

from kprune.engines.tfkeras import loader
from kprune.structural import blocks as B
from tests.test_structural_heads import patch_transformer

keras = loader.keras
L = keras.layers


def _x(shape, n=8, seed=0):
    return np.random.default_rng(seed).random((n, *shape)).astype("float32")


def _identity(h, i, *, relu=True):
    b = L.Conv2D(8, 3, padding="same", name=f"b{i}_conv")(h)
    b = L.BatchNormalization(name=f"b{i}_bn")(b)
    b = L.ReLU(name=f"b{i}_relu")(b)
    b = L.Conv2D(8, 1, name=f"b{i}_conv2")(b)
    b = L.BatchNormalization(name=f"b{i}_bn2")(b)
    s = L.Add(name=f"b{i}_add")([h, b])
    return L.ReLU(name=f"b{i}_out")(s) if relu else s


def _resnet(relu=True):
    """stem, identity blocks b1 and b2, a projection block b3, a head."""
    x = keras.Input((8, 8, 3), name="x")
    h = L.Conv2D(8, 3, padding="same", name="stem")(x)
    h = _identity(h, 1, relu=relu)
    h = _identity(h, 2, relu=relu)
    p = L.Conv2D(16, 1, name="proj")(h)
    b = L.Conv2D(16, 3, padding="same", name="b3_conv")(h)
    b = L.BatchNormalization(name="b3_bn")(b)
    h = L.Add(name="b3_add")([b, p])
    out = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model(x, out, name="tiny_resnet")
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.random(w.shape).astype("float32") + 0.5
                               for w in layer.get_weights()])
    return model


def _zero_branch(model, bn):
    layer = model.get_layer(bn)
    weights = layer.get_weights()
    weights[0][:] = 0.0  # gamma
    weights[1][:] = 0.0  # beta
    layer.set_weights(weights)


def _weights(model):
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(
        len(a[k]) == len(b[k]) and all(np.array_equal(x, y) for x, y in zip(a[k], b[k]))
        for k in a)


def test_blocks_found_with_flags_and_reasons():
    found = {b.name: b for b in B.residual_blocks(_resnet())}
    assert list(found) == ["b1_add", "b2_add", "b3_add"]
    assert found["b1_add"].droppable and found["b1_add"].shortcut == "stem"
    assert found["b1_add"].branch == ("b1_conv", "b1_bn", "b1_relu", "b1_conv2", "b1_bn2")
    assert found["b2_add"].droppable and found["b2_add"].shortcut == "b1_out"
    assert not found["b3_add"].droppable
    assert found["b3_add"].reason == "shortcut is a projection (proj)"
    assert "droppable" in str(found["b1_add"])


def test_refused_blocks_say_why():
    x = keras.Input((4,), name="x")
    y = keras.Input((4,), name="y")
    h = L.Dense(4, name="h")(x)
    three = L.Add(name="three")([h, L.Dense(4, name="d1")(h), L.Dense(4, name="d2")(h)])
    other = L.Add(name="other")([three, L.Dense(4, name="from_y")(y)])
    deep = L.Dense(4, name="d4")(L.Dense(4, name="d3")(other))
    pooled = L.Add(name="pooled")([L.ReLU(name="act")(other), deep])
    used = L.Dense(4, name="used")(pooled)
    leak = L.Add(name="leak")([pooled, used])
    gated = L.Multiply(name="gate")([leak, used])
    out = L.Concatenate(name="cat")([gated, L.Dense(2, name="also")(used)])
    found = {b.name: b for b in B.residual_blocks(keras.Model([x, y], out))}
    assert "gate" not in found  # Multiply is not a residual sum
    assert found["three"].reason == "more than two inputs (3)"
    assert found["other"].reason == "the branch's input is not the shortcut"
    assert found["pooled"].reason == "shortcut is not an identity (act)"
    assert not found["leak"].droppable
    assert found["leak"].reason.startswith(
        "the output of branch layer 'used' is also read outside the block (by ")


def test_same_tensor_twice_and_sequential():
    x = keras.Input((4,))
    h = L.Dense(4, name="h")(x)
    found = B.residual_blocks(keras.Model(x, L.Add(name="twice")([h, h])))
    assert found[0].reason == "its inputs are the same tensor"
    assert B.residual_blocks(keras.Sequential([keras.Input((3,)), L.Dense(2)])) == []


def test_a_block_inside_a_nested_model_is_found_and_dropped():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="branch")], name="inner")
    x = keras.Input((4,))
    model = keras.Model(x, L.Add(name="add")([x, inner(x)]))
    assert [(b.name, b.branch) for b in B.residual_blocks(model)] == [("add", ("branch",))]
    shorter = B.drop_blocks(model, 1, criterion="l1")
    assert "branch" not in [layer.name for layer in shorter.layers]
    data = np.random.default_rng(0).random((3, 4)).astype("float32")
    np.testing.assert_allclose(shorter(data).numpy(), data, atol=1e-6)


@pytest.mark.parametrize("relu", [True, False])
def test_dropping_a_zero_branch_keeps_outputs(relu):
    model = _resnet(relu=relu)
    _zero_branch(model, "b2_bn2")
    before = _weights(model)
    smaller = B.drop_blocks(model, ["b2_add"])
    x = _x((8, 8, 3))
    diff = np.abs(smaller.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
    assert diff <= 1e-5
    assert smaller.count_params() < model.count_params()
    names = [layer.name for layer in smaller.layers]
    for gone in ("b2_conv", "b2_bn", "b2_relu", "b2_conv2", "b2_bn2", "b2_add"):
        assert gone not in names
    assert "b1_add" in names and "proj" in names
    assert _same_weights(before, _weights(model))  # input model unchanged
    assert len(model.layers) == len(before)


def test_dropping_consecutive_blocks_without_activation_between():
    # b2's shortcut is b1's Add output: dropping both chains the shortcuts to the stem
    model = _resnet(relu=False)
    _zero_branch(model, "b1_bn2")
    _zero_branch(model, "b2_bn2")
    smaller = B.drop_blocks(model, ["b1_add", "b2_add", "b1_add"])
    x = _x((8, 8, 3))
    assert np.abs(smaller.predict(x, verbose=0) - model.predict(x, verbose=0)).max() <= 1e-5
    assert not any(layer.name.startswith(("b1_", "b2_")) for layer in smaller.layers)


def test_wrapped_model_reads_like_the_stripped_one():
    model = _resnet()
    _zero_branch(model, "b1_bn2")
    wrapped = loader.tfmot.sparsity.keras.prune_low_magnitude(model)
    found = B.residual_blocks(wrapped)
    assert found == B.residual_blocks(model)  # names of the wrapped layers
    x = _x((8, 8, 3))
    for names in (["b1_add"], ["prune_low_magnitude_b1_add"]):
        smaller = B.drop_blocks(wrapped, names)
        assert isinstance(smaller.get_layer("prune_low_magnitude_stem"), loader.PruneLowMagnitude)
        assert smaller.count_params() < wrapped.count_params()
        diff = np.abs(smaller.predict(x, verbose=0) - wrapped.predict(x, verbose=0)).max()
        assert diff <= 1e-5
    assert set(B.block_scores(wrapped, criterion="l1")) == {"b1_add", "b2_add"}


def test_drop_by_count_l1():
    model = _resnet()
    layer = model.get_layer("b2_conv")
    layer.set_weights([w * 1e-3 for w in layer.get_weights()])
    scores = B.block_scores(model, criterion="l1")
    assert set(scores) == {"b1_add", "b2_add"}
    assert scores["b2_add"] < scores["b1_add"]
    smaller = B.drop_blocks(model, 1, criterion="l1")
    names = {layer.name for layer in smaller.layers}
    assert "b2_add" not in names and "b1_add" in names


@pytest.mark.slow
def test_drop_by_count_sensitivity():
    keras.utils.set_random_seed(0)
    model = _resnet()
    _zero_branch(model, "b2_bn2")  # dropping b2 changes nothing; b1 (made large) does
    big = model.get_layer("b1_bn2")
    big.set_weights([w * 5 if i < 2 else w for i, w in enumerate(big.get_weights())])
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype("float32") * 3
    head = model.get_layer("head")  # centre the logits so that every class occurs
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias - model.predict(x, verbose=0).mean(axis=0)])
    y = np.argmax(model.predict(x, verbose=0), axis=-1)  # accuracy 1.0 before dropping
    scores = B.block_scores(model, data=(x, y))
    assert scores["b2_add"] == 0.0 and scores["b1_add"] > 0.0
    smaller = B.drop_blocks(model, 1, criterion="sensitivity", data=(x, y))
    names = {layer.name for layer in smaller.layers}
    assert "b2_add" not in names and "b1_add" in names


def test_errors():
    model = _resnet()
    before = _weights(model)
    with pytest.raises(ValueError, match=r"Block 'b3_add' cannot be dropped: shortcut is a "
                                         r"projection \(proj\)"):
        B.drop_blocks(model, ["b1_add", "b3_add"])
    with pytest.raises(ValueError, match="'b2_ad', which is not a layer.*Did you mean 'b2_add'"):
        B.drop_blocks(model, ["b2_ad"])
    with pytest.raises(ValueError, match="'stem', which is not an Add layer"):
        B.drop_blocks(model, ["stem"])
    with pytest.raises(ValueError, match=r"between 1 and the number of droppable blocks \(2"):
        B.drop_blocks(model, 3, criterion="l1")
    with pytest.raises(ValueError, match="Received: blocks=0"):
        B.drop_blocks(model, 0, criterion="l1")
    with pytest.raises(ValueError, match=r"Argument `data` must be \(x_val, y_val\)"):
        B.drop_blocks(model, 1)
    with pytest.raises(ValueError, match="Argument `criterion` must be one of"):
        B.drop_blocks(model, 1, criterion="l2")
    with pytest.raises(ValueError, match="Argument `blocks` must be a non-empty list"):
        B.drop_blocks(model, [])
    assert _same_weights(before, _weights(model))


@pytest.mark.slow
def test_resnet50_blocks_and_drop():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    found = B.residual_blocks(model)
    assert len(found) == 16
    for block in found:
        first = block.name.endswith("_block1_add")
        assert block.droppable is not first, block
        if first:
            stage = block.name.split("_")[0]
            assert block.reason == f"shortcut is a projection ({stage}_block1_0_conv)"
        else:
            assert len(block.branch) == 8
    _zero_branch(model, "conv3_block3_3_bn")
    before = _weights(model)
    smaller = B.drop_blocks(model, ["conv3_block3_add"])
    x = _x((32, 32, 3), n=4)
    assert np.abs(smaller.predict(x, verbose=0) - model.predict(x, verbose=0)).max() <= 1e-5
    assert smaller.count_params() < model.count_params()
    assert _same_weights(before, _weights(model))
    assert len(B.residual_blocks(smaller)) == 15
    three = B.drop_blocks(model, 3, criterion="l1")
    assert len(three.layers) == len(model.layers) - 3 * 9


@pytest.mark.parametrize("engine", ["keras3", "tf_keras"])
def test_block_influence_ranks_a_transformer_sub_block_that_changes_nothing_first(engine):
    k = keras3 if engine == "keras3" else keras
    k.utils.set_random_seed(6)
    model = patch_transformer(k)
    kernel, bias = model.get_layer("ffn_down").get_weights()
    model.get_layer("ffn_down").set_weights([kernel * 0.0, bias * 0.0])  # adds nothing
    x = np.random.default_rng(0).random((6, 9, 12)).astype("float32")
    scores = B.block_scores(model, criterion="influence", data=x)
    assert set(scores) == {"add_a", "add_f"}
    assert scores["add_f"] == pytest.approx(0.0, abs=1e-6) and scores["add_a"] > 1e-3
    feed = k.Model(model.inputs[0], [model.get_layer("patch").output,
                                     model.get_layer("add_a").output])
    before, after = (np.asarray(t).reshape(-1, 16) for t in feed(x))
    cosine = np.sum(before * after, 1) / np.linalg.norm(before, axis=1) / np.linalg.norm(
        after, axis=1)
    assert scores["add_a"] == pytest.approx(float(np.mean(1 - cosine)), rel=1e-4)
    shorter = B.drop_blocks(model, 1, criterion="influence", data=x)
    assert "ffn_up" not in [layer.name for layer in shorter.layers]
    assert np.abs(np.asarray(shorter(x)) - np.asarray(model(x))).max() <= 1e-5
    with pytest.raises(ValueError, match=r"criterion='influence' .* pass data=x"):
        B.block_scores(model, criterion="influence")
    with pytest.raises(ValueError, match=r"must hold batches shaped like the model's input"):
        B.drop_blocks(model, 1, criterion="influence", data=x[:, :4])
