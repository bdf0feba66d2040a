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


def _random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.mark.parametrize("k", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_example_gradients_are_each_examples_own_gradient_of_the_variables_asked(k):
    model = _random_weights(_model(k))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 6)).astype("float32"), rng.integers(0, 2, 5)
    engine = engine_of(model)
    loss = k.losses.SparseCategoricalCrossentropy(from_logits=True)
    asked = [model.get_layer("fc").kernel, model.get_layer("head").bias]
    found = list(engine.example_gradients(model, loss, [(x[:3], y[:3]), (x[3:], y[3:])], asked))
    assert [sorted(grads) for grads in found] == [sorted(id(v) for v in asked)] * 2
    assert found[1][id(asked[0])].shape == (2, 6, 4)
    for i in range(5):
        alone = engine.weight_gradients(model, loss, x[i:i + 1], y[i:i + 1])
        for v in asked:
            np.testing.assert_allclose(found[i // 3][id(v)][i % 3], alone[id(v)],
                                       rtol=1e-5, atol=1e-7)


class _EagerOnly(keras.layers.Layer):
    """Passes its input through, reading it in numpy first: runs eagerly only (TensorFlow)."""

    def call(self, x):
        return x * float(np.isfinite(x.numpy()).all())

    def compute_output_shape(self, shape):
        return shape


def test_example_gradients_a_graph_cannot_take_are_taken_one_example_at_a_time(caplog):
    i = keras.Input((6,))
    model = _random_weights(keras.Model(i, keras.layers.Dense(2, name="head")(
        _EagerOnly()(keras.layers.Dense(4, name="fc")(i)))))
    x = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    y = np.array([0, 1, 1, 0])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernel = model.get_layer("fc").kernel
    with caplog.at_level("WARNING", logger="kprune"):
        found = list(keras3_engine.example_gradients(model, loss, [(x[:2], y[:2]),
                                                                   (x[2:], y[2:])], [kernel]))
    said = [r.getMessage() for r in caplog.records if "one example at a time" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("Per-example gradients could not be taken a "
                                                 "batch at a time")
    alone = keras3_engine.weight_gradients(model, loss, x[3:], y[3:])
    np.testing.assert_allclose(found[1][id(kernel)][1], alone[id(kernel)], rtol=1e-5, atol=1e-7)
