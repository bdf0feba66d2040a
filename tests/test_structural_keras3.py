"""kprune.structural on Keras 3 models: the same groups and selected channels as the tf_keras
twin with the same weights, Keras 3 models back whose outputs equal the original's with the
removed channels zeroed; on the TensorFlow backend in-process and on JAX in a subprocess."""

import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kprune
from kprune import structural
from kprune.engines.keras3 import helpers
from kprune.engines.tfkeras import loader
from kprune.structural.nesting import inline

tf_keras = loader.keras


# -- the same architectures, built with either Keras -------------------------------------------


def sequential_cnn(k):
    L = k.layers
    return k.Sequential([k.Input((10, 10, 2)), L.Conv2D(8, 3, activation="relu", name="conv1"),
                         L.BatchNormalization(name="bn1"), L.MaxPooling2D(2, name="pool"),
                         L.Conv2D(12, 3, padding="same", name="conv2"), L.ReLU(name="relu2"),
                         L.GlobalAveragePooling2D(name="gap"),
                         L.Dense(16, activation="relu", name="fc"), L.Dense(4, name="head")],
                        name="sequential_cnn")


def residual_projection(k):
    L = k.layers
    i = k.Input((8, 8, 3), name="x")
    a = L.ReLU(name="a1_relu")(L.BatchNormalization(name="a1_bn")(
        L.Conv2D(6, 3, padding="same", name="a1")(i)))
    a = L.BatchNormalization(name="a2_bn")(L.Conv2D(8, 3, padding="same", name="a2")(a))
    p = L.BatchNormalization(name="proj_bn")(L.Conv2D(8, 1, name="proj")(i))
    s = L.Activation("relu", name="add_relu")(L.Add(name="add")([a, p]))
    b = L.Conv2D(8, 3, padding="same", name="b1")(s)
    s = L.Add(name="add2")([s, b])  # an identity block
    o = L.Dense(4, name="head")(L.GlobalAveragePooling2D(name="gap")(L.Conv2D(5, 3, name="c3")(s)))
    return k.Model(i, o, name="residual_projection")


def concatenated(k):
    L = k.layers
    i = k.Input((8, 8, 3), name="x")
    a = L.Conv2D(5, 3, padding="same", activation="relu", name="left")(i)
    b = L.Conv2D(7, 1, activation="relu", name="right")(i)
    c = L.BatchNormalization(name="cat_bn")(L.Concatenate(name="cat")([a, b]))
    c = L.Conv2D(6, 3, name="mix")(c)
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(c))
    return k.Model(i, o, name="concatenated")


def depthwise_bn(k):
    L = k.layers
    i = k.Input((8, 8, 3), name="x")
    x = L.ReLU(6.0, name="r1")(L.BatchNormalization(name="bn1")(L.Conv2D(8, 1, name="expand")(i)))
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.ReLU(6.0, name="r2")(L.BatchNormalization(name="bn2")(x))
    x = L.Conv2D(6, 1, name="project")(x)
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x))
    return k.Model(i, o, name="depthwise_bn")


def flatten_dense(k):
    L = k.layers
    i = k.Input((6, 6, 2), name="x")
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(L.Conv2D(5, 3, name="conv")(i)))
    x = L.Dense(7, activation="relu", name="fc")(L.Flatten(name="flat")(L.MaxPooling2D(2, name="pool")(x)))
    o = L.Dense(3, name="head")(L.Dropout(0.3, name="drop")(x))
    return k.Model(i, o, name="flatten_dense")


MODELS = {f.__name__: f for f in (sequential_cnn, residual_projection, concatenated, depthwise_bn,
                                  flatten_dense)}
# on JAX (a subprocess, the slowest test): an Add with a projection and an identity block,
# Flatten -> Dense, batch norms in both
ON_JAX_MODELS = ("flatten_dense", "residual_projection")
# (criterion, scope, cost) combinations compared with the tf_keras twin
SELECTIONS = [("l1", "global", None), ("l2", "layer", None), ("bn", "global", "macs"),
              ("l1", "global", "params")]


def random_weights(model, seed=0):
    """Weights away from the initial ones (batch norms too; variances positive)."""
    rng = np.random.default_rng(seed)
    return [np.abs(w) + 0.5 if "variance" in v.name else rng.normal(0, 0.5, w.shape).astype("float32")
            for w, v in zip(model.get_weights(), model.weights)]


def twins(name):
    """``name`` built in tf_keras and in Keras 3, with the same random weights."""
    theirs = MODELS[name](tf_keras)
    theirs.set_weights(random_weights(theirs))
    ours = MODELS[name](keras)
    ours.set_weights(theirs.get_weights())
    return theirs, ours


def inputs(model, n=3):
    return np.random.default_rng(1).random((n, *model.input_shape[1:])).astype("float32")


def zero_removed_inputs(model, keep):
    """Zero, in place, every weight that reads a channel ``keep`` removes (the inputs of the
    groups' "in" members, at each flattened position): the model then computes what the
    smaller model computes."""
    for group in structural.groups(model):
        if group.id not in keep:
            continue
        removed = np.setdiff1d(np.arange(group.size), keep[group.id])
        for member in group.members:
            if member.role != "in":
                continue
            layer = model.get_layer(member.layer)
            rows = (np.arange(member.positions)[:, None] * member.channels + member.offset
                    + removed[None, :]).ravel()
            weights = layer.get_weights()
            weights[0][..., rows, :] = 0.0
            layer.set_weights(weights)


def same_keep(a, b):
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def snapshot(model):
    return [np.array(w) for w in model.get_weights()]


def unchanged(model, before):
    return all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.get_weights(), strict=True))


# -- TensorFlow backend, in-process --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_groups_and_selected_channels_are_those_of_the_tf_keras_twin(name):
    theirs, ours = twins(name)
    assert str(structural.groups(ours)) == str(structural.groups(theirs))
    assert [(g.id, g.members, g.removable) for g in structural.groups(ours)] == [
        (g.id, g.members, g.removable) for g in structural.groups(theirs)]
    assert kprune.measure.count_macs(ours, by_layer=True) == kprune.measure.count_macs(
        theirs, by_layer=True)
    for criterion, scope, cost in SELECTIONS:
        keep = structural.select(ours, 0.5, criterion=criterion, scope=scope, cost=cost)
        assert keep, (criterion, scope, cost)
        assert same_keep(keep, structural.select(theirs, 0.5, criterion=criterion, scope=scope,
                                                 cost=cost)), (criterion, scope, cost)
    x = inputs(ours, 8)
    y = np.arange(8) % 3
    taylor = structural.select(ours, 0.5, criterion="taylor", data=(x, y))
    assert same_keep(taylor, structural.select(theirs, 0.5, criterion="taylor", data=(x, y)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prune_gives_a_keras3_model_computing_the_original_with_removed_channels_zeroed(name):
    theirs, ours = twins(name)
    before = snapshot(ours)
    keep = structural.select(ours, 0.5, scope="layer")
    smaller = structural.prune(ours, 0.5, scope="layer")
    assert isinstance(smaller, keras.Model) and type(smaller).__module__.startswith("keras.")
    assert smaller.count_params() < ours.count_params()
    assert smaller.count_params() == structural.prune(theirs, 0.5, scope="layer").count_params()
    assert not {id(layer) for layer in smaller.layers} & {id(layer) for layer in ours.layers}
    assert unchanged(ours, before)  # the input model is untouched
    zeroed = helpers.copy_model(ours)
    zero_removed_inputs(zeroed, keep)
    x = inputs(ours)
    difference = np.abs(np.asarray(smaller(x)) - np.asarray(zeroed(x))).max()
    assert difference <= 1e-5
    assert np.abs(np.asarray(ours(x)) - np.asarray(zeroed(x))).max() > 1e-3  # zeroing was real


def test_dead_channels_are_found_as_on_tf_keras_and_removed_without_changing_outputs():
    theirs, ours = twins("residual_projection")
    for model in (theirs, ours):  # kill channels 1 and 4 of the stage: a2, proj and batch norms
        for member in structural.groups(model)["a2"].members:
            layer = model.get_layer(member.layer)
            weights = layer.get_weights()
            parts = weights if member.role == "out" else weights[:3] if member.role == "channelwise" else []
            for w in parts:
                w[..., [1, 4]] = 0.0
            layer.set_weights(weights)
    dead = structural.dead_channels(ours)
    assert same_keep(dead, structural.dead_channels(theirs))
    assert dead["a2"].tolist() == [0, 2, 3, 5, 6, 7]
    assert same_keep(structural.nonzero_units(ours), dead)
    smaller = structural.remove_units(ours, dead)
    x = inputs(ours)
    assert np.abs(np.asarray(smaller(x)) - np.asarray(ours(x))).max() <= 1e-5
    assert smaller.get_layer("proj").filters == 6


def test_the_unit_api_on_a_keras3_sequential_model():
    theirs, ours = twins("sequential_cnn")
    before = snapshot(ours)
    np.testing.assert_array_equal(structural.unit_scores(ours.get_layer("fc")),
                                  structural.unit_scores(theirs.get_layer("fc")))
    keep = structural.select_units(ours, {"conv2": 0.5, "fc": 0.25})
    assert same_keep(keep, structural.select_units(theirs, {"conv2": 0.5, "fc": 0.25}))
    smaller = structural.remove_units(ours, keep)
    assert isinstance(smaller, keras.Sequential)
    assert (smaller.get_layer("conv2").filters, smaller.get_layer("fc").units) == (6, 12)
    zeroed = helpers.copy_model(ours)
    zero_removed_inputs(zeroed, keep)
    x = inputs(ours)
    assert np.abs(np.asarray(smaller(x)) - np.asarray(zeroed(x))).max() <= 1e-5
    assert "conv2" in structural.summary(ours, smaller)
    assert unchanged(ours, before)


def test_residual_blocks_and_drop_blocks_on_keras3():
    theirs, ours = twins("residual_projection")
    blocks = structural.residual_blocks(ours)
    assert [str(b) for b in blocks] == [str(b) for b in structural.residual_blocks(theirs)]
    assert [(b.name, b.droppable) for b in blocks] == [("add", False), ("add2", True)]
    assert structural.block_scores(ours, criterion="l1") == pytest.approx(
        structural.block_scores(theirs, criterion="l1"))
    before = snapshot(ours)
    shorter = structural.drop_blocks(ours, ["add2"])
    assert type(shorter).__module__.startswith("keras.") and "b1" not in [
        layer.name for layer in shorter.layers]
    x = inputs(ours)
    expected = structural.drop_blocks(theirs, ["add2"])(x).numpy()
    assert np.abs(np.asarray(shorter(x)) - expected).max() <= 1e-5
    assert unchanged(ours, before)


def nested(k):
    """A functional backbone and a Sequential called as layers of a functional model."""
    inner = k.Sequential([k.Input((3,)), k.layers.Dense(5, name="inner_fc")], name="inner")
    i = k.Input((8, 8, 3), name="x")
    return k.Model(i, k.layers.Dense(2, name="outer_head")(inner(depthwise_bn(k)(i))),
                   name="nested")


def test_nested_keras3_models_are_inlined_like_tf_keras_ones():
    theirs = nested(tf_keras)
    theirs.set_weights(random_weights(theirs))
    ours = nested(keras)
    ours.set_weights(theirs.get_weights())
    before = snapshot(ours)
    assert str(structural.groups(ours)) == str(structural.groups(theirs))
    assert structural.groups(ours)["head"].layers() == ["head", "inner_fc"]  # across models
    keep = structural.select(ours, 0.5)
    assert same_keep(keep, structural.select(theirs, 0.5))
    smaller = structural.prune(ours, 0.5)
    assert type(smaller).__module__.startswith("keras.")
    assert [layer.name for layer in smaller.layers][-3:] == ["head", "inner_fc", "outer_head"]
    zeroed = inline(ours)  # flat, same weights
    zero_removed_inputs(zeroed, keep)
    x = inputs(ours)
    assert np.abs(np.asarray(smaller(x)) - np.asarray(zeroed(x))).max() <= 1e-5
    assert unchanged(ours, before)


def test_what_structural_pruning_does_not_follow_on_keras3_is_refused_clearly():
    L = keras.layers
    _, ours = twins("depthwise_bn")
    before = snapshot(ours)
    i = keras.Input((4,), name="x")
    h = L.Dense(8, name="fc")(i)
    with_op = keras.Model(i, L.Dense(2, name="head")(keras.ops.relu(h) + 1.0))
    with pytest.raises(ValueError, match=r"calls operation .*`keras.ops` function"):
        structural.groups(with_op)
    shared = L.Dense(4, name="shared")
    twice = keras.Model(i, L.Dense(2, name="head")(shared(shared(L.Dense(4, name="fc")(i)))))
    with pytest.raises(ValueError, match=r"layer 'shared' is called 2 times"):
        structural.groups(twice)
    wrapped = kprune.apply(ours, steps_per_epoch=2, epochs=1)
    with pytest.raises(ValueError, match="is a pruning wrapper"):
        structural.prune(wrapped, 0.5)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = L.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="subclassed Keras 3 model"):
        structural.groups(net)
    assert unchanged(ours, before)


# -- JAX backend, in a subprocess ----------------------------------------------------------------

ON_JAX = """
import json, sys
import keras, numpy as np
from kprune import structural
from kprune.engines.keras3 import helpers
from tests import test_structural_keras3 as t

weights = np.load(sys.argv[1])
out = {"backend": keras.backend.backend()}
for name in t.ON_JAX_MODELS:
    model = t.MODELS[name](keras)
    model.set_weights([weights[f"{name}/{i}"] for i in range(len(model.weights))])
    x = t.inputs(model, 8)
    y = np.arange(8) % 3
    found = {"groups": str(structural.groups(model))}
    for criterion, scope, cost in t.SELECTIONS + [("taylor", "global", None)]:
        keep = structural.select(model, 0.5, criterion=criterion, scope=scope, cost=cost,
                                 data=(x, y) if criterion == "taylor" else None)
        found[f"{criterion}/{scope}/{cost}"] = {k: v.tolist() for k, v in keep.items()}
    keep = structural.select(model, 0.5, scope="layer")
    smaller = structural.prune(model, 0.5, scope="layer")
    zeroed = helpers.copy_model(model)
    t.zero_removed_inputs(zeroed, keep)
    found["module"] = type(smaller).__module__
    found["params"] = smaller.count_params()
    found["difference"] = float(np.abs(np.asarray(smaller(x)) - np.asarray(zeroed(x))).max())
    out[name] = found
print(json.dumps(out))
"""


@pytest.mark.slow
def test_structural_pruning_on_the_jax_backend_matches_the_tf_keras_twin(tmp_path, jax_env):
    saved, expected = {}, {}
    for name in ON_JAX_MODELS:
        theirs, _ = twins(name)
        saved.update({f"{name}/{i}": w for i, w in enumerate(theirs.get_weights())})
        x = inputs(theirs, 8)
        y = np.arange(8) % 3
        found = {"groups": str(structural.groups(theirs))}
        for criterion, scope, cost in SELECTIONS + [("taylor", "global", None)]:
            keep = structural.select(theirs, 0.5, criterion=criterion, scope=scope, cost=cost,
                                     data=(x, y) if criterion == "taylor" else None)
            found[f"{criterion}/{scope}/{cost}"] = {k: v.tolist() for k, v in keep.items()}
        found["params"] = structural.prune(theirs, 0.5, scope="layer").count_params()
        expected[name] = found
    np.savez(tmp_path / "weights.npz", **saved)
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", ON_JAX, str(tmp_path / "weights.npz")],
                         capture_output=True, text=True, timeout=300, cwd=root, env=jax_env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    for name, found in expected.items():
        ours = out[name]
        assert ours["module"].startswith("keras.") and ours["difference"] <= 1e-5, name
        assert {k: ours[k] for k in found} == found, name


def test_an_indexing_that_keeps_the_channel_axis_is_followed_and_one_that_cuts_it_refused():
    L = keras.layers
    keras.utils.set_random_seed(5)
    i = keras.Input((5, 6), name="x")
    h = L.Dense(8, activation="relu", name="fc")(i)
    first = keras.Model(i, L.Dense(2, name="head")(h[:, 0, :]))  # BERT's pooled token
    assert structural.groups(first)["fc"].removable
    kernel, bias = first.get_layer("fc").get_weights()
    kernel[:, 2:5], bias[2:5] = 0.0, 0.0
    first.get_layer("fc").set_weights([kernel, bias])
    keep = structural.nonzero_units(first)
    assert list(keep["fc"]) == [0, 1, 5, 6, 7]
    smaller = structural.remove_units(first, keep)
    x = np.random.default_rng(0).random((3, 5, 6)).astype("float32")
    assert np.abs(np.asarray(smaller(x)) - np.asarray(first(x))).max() <= 1e-5
    cut = keras.Model(i, L.Dense(2, name="head")(L.Dense(8, name="fc2")(i)[..., :4]))
    group = structural.groups(cut)["fc2"]
    assert not group.removable and re.fullmatch(
        r"layer 'get_item(_\d+)?' \(GetItem\): indexing with \(Ellipsis, slice\(None, 4, "
        r"None\)\) changes the channel \(last\) axis", group.reason)
