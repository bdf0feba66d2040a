"""The Keras 3 engine's side of the engine interface (:func:`kprune.engines.engine_of`).

The same names as :mod:`kprune.engines.tfkeras.engine`, so that code above the engines is
written once: the Keras module, checking and walking a model, callbacks of this Keras,
reading the layer graph, gradients and the TFLite converter. Nothing here imports tf_keras
or tfmot; TensorFlow alone is imported by the TFLite converter.

Example:
    >>> from kprune.engines import engine_of
    >>> engine = engine_of(keras3_model)         # this module
    >>> engine.keras.__name__
    'keras'
"""

import contextlib
import functools
import sys
import tempfile

from kprune.engines.keras3 import helpers

__all__ = ["name", "uses_tfmot", "keras", "nest", "check_model", "iter_layers", "layer_name",
           "clone_model", "model_layers", "weight_layers", "backend", "sync_state", "constant",
           "callback_class", "kernel_masks", "weight_gradients", "tflite_converter",
           "node_call", "node_inputs", "node_outputs", "tensor_origin", "calls",
           "functional_graph", "graph_operations", "fresh_inputs", "as_call_inputs",
           "node_shapes"]

#: The engine's name, as messages and records say it.
name = "keras3"
#: Whether tfmot's own tools (quantization-aware training, its layers) take this engine's models.
uses_tfmot = False

keras = helpers.keras
nest = keras.tree  # flatten and map_structure, as tf.nest gives them on tf_keras
check_model = helpers.check_model
iter_layers = helpers.iter_layers
layer_name = helpers.layer_name
clone_model = helpers.clone_model
backend = helpers.backend
sync_state = helpers.sync_state
weight_gradients = helpers.weight_gradients


def model_layers(model):
    """``(path, layer)`` of every leaf layer of ``model``, once it is checked."""
    check_model(model)
    return list(iter_layers(model))


def weight_layers(model):
    """``(path, layer)`` of every layer that may hold weights to prune, inside custom layers
    too (see :func:`kprune.core.layers.weight_layers`), once ``model`` is checked."""
    from kprune.core import layers

    return layers.weight_layers(model)


def constant(value, dtype):
    """``value`` (an array) as a tensor of ``dtype``, for arithmetic with the variables."""
    return helpers.ops.convert_to_tensor(value, dtype=dtype)


@functools.cache
def callback_class(body, name):
    """``body`` (a class of callback methods that reads ``self._engine`` where the engines
    differ) as a Keras 3 ``Callback`` class called ``name``; made once per body.

    Example:
        >>> Recorder = callback_class(_RecordEpochs, "_Recorder")
        >>> model.fit(x, y, callbacks=[Recorder(...)])
    """
    namespace = {"__doc__": body.__doc__, "__module__": body.__module__, "__qualname__": name,
                 "_engine": sys.modules[__name__]}
    return type(name, (body, keras.callbacks.Callback), namespace)


def kernel_masks(model):
    """``{layer path: {weight label: keep-mask}}`` of every pruning layer in ``model``."""
    from kprune.engines.keras3.wrap import kernel_masks as masks_of

    return masks_of(model)


@contextlib.contextmanager
def tflite_converter(model):
    """A ``TFLiteConverter`` for ``model``, valid inside the ``with`` block: through Keras
    3's own ``model.export`` to a temporary SavedModel (its variables are frozen there; a
    concrete function of it keeps ``READ_VARIABLE`` ops that the converter cannot run)."""
    from kprune._compat import tf

    with tempfile.TemporaryDirectory(prefix="kprune-keras3-") as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        yield tf.lite.TFLiteConverter.from_saved_model(folder)


# -- reading the layer graph: Keras 3 nodes keep ``input_tensors``, ``arguments`` and their
# tensors' ``_keras_history.operation``; a model lists its own nodes in ``_nodes_by_depth``


def node_call(node):
    """``(layer, args, kwargs)`` of one call in a model's graph."""
    return node.operation, node.arguments.args, node.arguments.kwargs


def node_inputs(node):
    """The tensors one call received (flat list)."""
    return list(node.input_tensors)


def node_outputs(node):
    """The tensors one call made (flat list)."""
    return keras.tree.flatten(node.outputs)


def tensor_origin(tensor):
    """``(layer that made tensor, which of its outputs it is)``."""
    history = tensor._keras_history
    return history.operation, history.tensor_index


def calls(model, layer):
    """The nodes (calls) of ``layer`` that belong to functional ``model``'s graph."""
    ours = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    return [node for node in layer._inbound_nodes if id(node) in ours]


def functional_graph(model):
    """What holds ``model``'s nodes by depth (``_nodes_by_depth``): a Sequential's graph is
    its ``_functional``."""
    return getattr(model, "_functional", None) or model


def graph_operations(model):
    """The operations of ``model``'s graph, layers or not (a ``keras.ops`` function called
    on symbolic tensors is one too)."""
    return list(getattr(model, "operations", []))


def fresh_inputs(model):
    """New ``keras.Input`` tensors like ``model``'s (a list), to call its layers on again."""
    return [keras.Input(batch_shape=t.shape, dtype=t.dtype,
                        name=t._keras_history.operation.name)
            for t in model.inputs]


def as_call_inputs(inputs):
    """``inputs`` (a list) as a functional ``Model`` built on them takes them: one input
    bare, as a model called with one array expects."""
    return inputs[0] if len(inputs) == 1 else inputs


def node_shapes(layer):
    """``[(input shape, output shape)]`` of every call of ``layer`` (its first input and
    output; Keras 3 nodes keep their tensors, not their shapes)."""
    return [(tuple(node.input_tensors[0].shape), tuple(node.outputs[0].shape))
            for node in layer._inbound_nodes if node.input_tensors]
