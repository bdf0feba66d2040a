"""kprune.engines: the engine of a model, picked once, with the same names on both engines."""

import keras
import numpy as np
import pytest
import tf_keras

from kprune.engines import engine_of
from kprune.engines.keras3 import engine as keras3_engine
from kprune.engines.tfkeras import engine as tf_keras_engine

from helpers import subclassed_dense


def _model(k):
    return k.Sequential([k.Input((6,)), k.layers.Dense(4, name="fc"),
                         k.layers.Dense(2, name="head")])


def test_engine_of_picks_the_engine_of_the_models_keras():
    assert engine_of(_model(keras)) is keras3_engine
    assert engine_of(_model(tf_keras)) is tf_keras_engine
    assert engine_of(None) is tf_keras_engine
    assert engine_of(keras.layers.Dense(1)).keras is keras
    assert engine_of(tf_keras.layers.Dense(1)).keras is tf_keras


def test_both_engines_give_the_same_names():
    assert sorted(keras3_engine.__all__) == sorted(tf_keras_engine.__all__)
    for engine in (keras3_engine, tf_keras_engine):
        for name in engine.__all__:
            assert getattr(engine, name) is not None, (engine.name, name)


@pytest.mark.parametrize("k", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_the_same_code_reads_either_engines_graph(k):
    model = _model(k)
    engine = engine_of(model)
    assert [path for path, _ in engine.model_layers(model)] == ["fc", "head"]
    head = model.get_layer("head")
    nodes = engine.graph_nodes(model)  # the input's node first
    assert [engine.node_call(node)[0].name for node in nodes][1:] == ["fc", "head"]
    (node,) = engine.layer_calls(head)
    assert node is nodes[-1]
    layer, args, _ = engine.node_call(node)
    assert layer is head and engine.is_graph_tensor(args[0])
    assert not engine.is_graph_tensor(np.zeros(4)) and not engine.is_graph_tensor(None)
    made_by, index = engine.tensor_origin(engine.node_inputs(node)[0])
    assert (made_by.name, index) == ("fc", 0)
    assert engine.node_outputs(node)[0] is model.outputs[0]
    assert engine.node_shapes(head) == [((None, 4), (None, 2))]
    assert engine.layer_calls(k.layers.Dense(1)) == []


@pytest.mark.parametrize("k", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_a_model_without_a_layer_graph_has_no_graph_nodes(k):
    model = subclassed_dense(k)
    assert engine_of(model).graph_nodes(model) is None


@pytest.mark.parametrize("k", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_a_callback_body_is_made_a_callback_of_each_keras_once(k):
    class _Counts:
        """Counts epochs."""

        def __init__(self):
            super().__init__()
            self.epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            self._engine.sync_state(self.model)
            self.epochs += 1

    engine = engine_of(_model(k))
    made = engine.callback_class(_Counts, "Counts")
    assert made is engine.callback_class(_Counts, "Counts")
    assert issubclass(made, k.callbacks.Callback) and made.__name__ == "Counts"
    assert made.__doc__ == "Counts epochs." and made._engine is engine
    model = _model(k)
    model.compile(optimizer="sgd", loss="mse")
    counter = made()
    model.fit(np.zeros((4, 6)), np.zeros((4, 2)), epochs=2, verbose=0, callbacks=[counter])
    assert counter.epochs == 2


def test_only_tf_keras_models_go_to_tfmot():
    assert tf_keras_engine.uses_tfmot and not keras3_engine.uses_tfmot
    assert tf_keras_engine.backend() == "tensorflow"
    assert keras3_engine.backend() == keras.backend.backend()


@pytest.mark.parametrize("k", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_each_engine_answers_what_the_layer_registry_asks(k):
    import kprune

    class OwnDense(k.layers.Dense):
        pass

    model = _model(k)
    engine = engine_of(model)
    fc = model.get_layer("fc")
    assert engine.builtin_classes(fc)[0] is k.layers.Dense
    # tfmot's registry is exact: a subclass of Dense is no built-in layer on tf_keras; on
    # Keras 3 it is pruned as its nearest built-in ancestor
    assert engine.builtin_classes(OwnDense(1)) == ([] if k is tf_keras else
                                                   [k.layers.Dense, k.layers.Layer])
    assert (engine.input_shape(fc), engine.output_shape(fc)) == ((None, 6), (None, 4))
    if k is tf_keras:  # tfmot's registry, exact: a subclass of Dense is not in it
        assert engine.registry_labels(fc, None) == ["kernel"]
        assert engine.registry_labels(OwnDense(1), None) is None
    else:  # Keras 3: the labels of kprune's own table, as given
        assert engine.registry_labels(fc, ["kernel"]) == ["kernel"]
    assert not engine.declares_prunable_weights(fc)
    pruned = kprune.apply(model, steps_per_epoch=4, epochs=1)
    wrapper = next(layer for layer in pruned.layers if "fc" in layer.name)
    assert wrapper is not engine.unwrap(wrapper) and engine.unwrap(wrapper).name == "fc"
    class Block(k.layers.Layer):
        def __init__(self):
            super().__init__(name="block")
            self.inner = k.layers.Dense(2, name="inner")

        def call(self, x):
            return self.inner(x)

    block = Block()
    block(np.zeros((1, 6), "float32"))
    nested = [path for path, _ in engine.with_nested_layers([("block", block)], lambda _: True)]
    # tfmot cannot see inside a custom layer; Keras 3 enters it
    assert nested == (["block"] if k is tf_keras else ["block", "block/inner"])
    assert engine.with_nested_layers([("block", block)], lambda _: False) == [("block", block)]
