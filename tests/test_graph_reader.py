"""The one reader of a functional model's layer graph, on both engines."""

import keras
import numpy as np
import pytest
import tf_keras

from kprune.engines.graph_reader import fresh_layer, read

from helpers import subclassed_dense

ENGINES = pytest.mark.parametrize("k", [keras, tf_keras], ids=["keras3", "tf_keras"])


def _model(k):
    """x -> fc -> shared -> shared -> add(fc, shared) -> head: a shared layer and a fork."""
    x = k.Input((4,), name="x")
    fc = k.layers.Dense(4, name="fc")(x)
    shared = k.layers.Dense(4, name="shared")
    twice = shared(shared(fc))
    return k.Model(x, k.layers.Dense(2, name="head")(k.layers.Add(name="add")([fc, twice])))


@ENGINES
def test_each_call_its_inputs_and_its_readers(k):
    graph = read(_model(k))
    assert [(c.layer.name, c.index, c.inputs) for c in graph.calls] == [
        ("x", 0, ()), ("fc", 0, (("x", 0, 0),)), ("shared", 0, (("fc", 0, 0),)),
        ("shared", 1, (("shared", 0, 0),)), ("add", 0, (("fc", 0, 0), ("shared", 1, 0))),
        ("head", 0, (("add", 0, 0),))]
    assert graph.times["shared"] == 2 and graph.times["head"] == 1
    assert graph.readers[("fc", 0, 0)] == [("shared", 0), ("add", 0)]
    shared = graph.model.get_layer("shared")  # called twice: both calls' tensors, each reader once
    assert graph.made_by(shared) == [("shared", 0, 0), ("shared", 1, 0)]
    assert graph.readers_of(shared) == [("shared", 1), ("add", 0)]
    assert graph.inputs == [("x", 0, 0)] and graph.outputs == [("head", 0, 0)]
    assert graph.key(graph.model.outputs[0]) == ("head", 0, 0) and graph.key(3) is None


@ENGINES
def test_replay_rebuilds_the_model_or_drops_a_branch(k):
    model = _model(k)
    graph = read(model)
    data = np.random.default_rng(0).random((3, 4)).astype("float32")
    clones = {}

    def call(step, args, kwargs):
        return fresh_layer(step.layer, clones)(*args, **kwargs)

    def rebuilt(**drop):
        clones.clear()
        x = k.Input((4,), name="x")
        new = k.Model(x, graph.replay([x], call, **drop)[0])
        for source, copy in clones.values():
            copy.set_weights(source.get_weights())
        return new

    np.testing.assert_allclose(rebuilt()(data), model(data), atol=1e-6)
    shorter = rebuilt(dropped={"shared", "add"}, replace={("add", 0, 0): ("fc", 0, 0)})
    assert [layer.name for layer in shorter.layers] == ["x", "fc", "head"]
    head = model.get_layer("head")
    np.testing.assert_allclose(shorter(data), head(model.get_layer("fc")(data)), atol=1e-6)


@ENGINES
def test_a_model_without_a_layer_graph_is_refused(k):
    with pytest.raises(ValueError, match=r"^Model 'net' has no layer graph \(a Sequential "
                       r"built without an Input, or a subclassed model\)"):
        read(subclassed_dense(k))
    other = k.layers.Dense(4, name="fc")
    with pytest.raises(ValueError, match="two layers are named 'fc'"):
        fresh_layer(other, {"fc": (k.layers.Dense(4, name="fc"), None)})
