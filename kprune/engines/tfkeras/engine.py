"""The tf_keras engine's side of the engine interface (:func:`kprune.engines.engine_of`).

The same names as :mod:`kprune.engines.keras3.engine`, so that code above the engines is
written once: the Keras module, checking and walking a model, callbacks of this Keras,
reading the layer graph, gradients and the TFLite converter. TensorFlow, tf_keras and
tfmot load when a name that needs them is first used (``keras`` and ``nest`` are read
lazily), not when this module is imported.

Example:
    >>> from kprune.engines import engine_of
    >>> engine = engine_of(model)                # this module, for a tf_keras model
    >>> [path for path, _ in engine.model_layers(model)]
    ['conv1', 'conv2', 'fc1', 'head']
"""

import contextlib
import functools
import logging
import sys

import numpy as np

from kprune import _compat

__all__ = ["name", "uses_tfmot", "keras", "nest",  # noqa: F822 (module __getattr__)
           "check_model", "iter_layers", "layer_name", "clone_model", "model_layers",
           "weight_layers",
           "backend", "sync_state", "constant", "callback_class", "kernel_masks",
           "weight_gradients", "tflite_converter", "node_call", "node_inputs",
           "node_outputs", "tensor_origin", "calls", "functional_graph", "graph_operations",
           "fresh_inputs", "as_call_inputs", "node_shapes"]

#: The engine's name, as messages and records say it.
name = "tf_keras"
#: Whether tfmot's own tools (quantization-aware training, its layers) take this engine's models.
uses_tfmot = True

check_model = _compat.check_model
iter_layers = _compat.iter_layers
layer_name = _compat.layer_name
clone_model = _compat.clone_model

logger = logging.getLogger("kprune")


def __getattr__(attr):  # tf_keras and tf.nest, loaded when first read
    if attr == "keras":
        return _compat.keras
    if attr == "nest":  # flatten and map_structure, as keras.tree gives them on Keras 3
        return _compat.tf.nest
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def model_layers(model):
    """``(path, layer)`` of every leaf layer of ``model``, once it is checked."""
    check_model(model)
    return list(iter_layers(model))


def weight_layers(model):
    """``(path, layer)`` of every layer that may hold weights to prune: on tf_keras, the leaf
    layers (tfmot wraps no layer inside another), walked as they are."""
    return list(iter_layers(model))


def backend():
    """The backend this engine's models run on: always ``"tensorflow"``."""
    return "tensorflow"


def sync_state(model):
    """Nothing to do: a tf_keras model's variables always hold their current values."""


def constant(value, dtype):
    """``value`` (an array) as a tensor of ``dtype``, for arithmetic with the variables."""
    return _compat.tf.constant(value, dtype=dtype)


@functools.cache
def callback_class(body, name):
    """``body`` (a class of callback methods that reads ``self._engine`` where the engines
    differ) as a tf_keras ``Callback`` class called ``name``; made once per body.

    Example:
        >>> Recorder = callback_class(_RecordEpochs, "_Recorder")
        >>> model.fit(x, y, callbacks=[Recorder(...)])
    """
    namespace = {"__doc__": body.__doc__, "__module__": body.__module__, "__qualname__": name,
                 "_engine": sys.modules[__name__]}
    return type(name, (body, _compat.keras.callbacks.Callback), namespace)


def kernel_masks(model):
    """``{layer path: {weight label: keep-mask}}`` of every tfmot wrapper in ``model``."""
    from kprune.core import layers
    from kprune.engines.tfkeras.callbacks import wrapped_layers

    out = {}
    for path, wrapper in wrapped_layers(model):
        by_id = {id(w.variable): w.label for w in layers.prunable_weights(wrapper)}
        out[path] = {by_id[id(weight)]: np.asarray(mask.numpy()) != 0
                     for weight, mask, _ in wrapper.pruning_vars if id(weight) in by_id}
    return out


def weight_gradients(model, loss_fn, x, y):
    """``{id(variable): d loss / d variable}`` (numpy) for every weight of ``model``, the loss
    ``loss_fn(y, model(x, training=False))`` taken on one batch (zeros where a weight has no
    gradient)."""
    tf = _compat.tf
    variables = list(model.weights)
    with tf.GradientTape() as tape:
        tape.watch(variables)
        loss = loss_fn(y, model(x, training=False))
    found = tape.gradient(loss, variables)
    return {id(v): np.zeros(v.shape) if g is None else np.asarray(g)
            for v, g in zip(variables, found)}


@contextlib.contextmanager
def tflite_converter(model):
    """A ``TFLiteConverter`` for ``model``, valid inside the ``with`` block: through
    ``from_keras_model``, or a concrete function if that fails (logged)."""
    tf = _compat.tf
    try:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    except Exception as err:  # logged, then the documented fallback
        logger.warning(
            "TFLiteConverter.from_keras_model failed (%s: %s); converting through a "
            "concrete function instead.",
            type(err).__name__,
            err,
        )
        specs = [
            tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype,
                          name=tensor.name.split(":")[0])
            for tensor in model.inputs
        ]
        function = tf.function(lambda *args: model(list(args) if len(args) > 1 else args[0]))
        concrete = function.get_concrete_function(*specs)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    yield converter


# -- reading the layer graph: tf_keras nodes keep ``keras_inputs``, ``call_args`` and their
# tensors' ``_keras_history.layer``; a model names its nodes in ``_network_nodes``


def node_call(node):
    """``(layer, args, kwargs)`` of one call in a model's graph."""
    return node.layer, node.call_args, node.call_kwargs


def node_inputs(node):
    """The tensors one call received (flat list)."""
    return list(node.keras_inputs)


def node_outputs(node):
    """The tensors one call made (flat list)."""
    return _compat.tf.nest.flatten(node.outputs)


def tensor_origin(tensor):
    """``(layer that made tensor, which of its outputs it is)``."""
    history = tensor._keras_history
    return history.layer, history.tensor_index


def calls(model, layer):
    """The nodes (calls) of ``layer`` that belong to functional ``model``'s graph."""
    network = model._network_nodes
    return [node for index, node in enumerate(layer._inbound_nodes)
            if f"{layer.name}_ib-{index}" in network]


def functional_graph(model):
    """What holds ``model``'s nodes by depth (``_nodes_by_depth``); None when it has no
    layer graph (a Sequential built without an Input, a subclassed model)."""
    return model if getattr(model, "_is_graph_network", False) else None


def graph_operations(model):
    """The operations of ``model``'s graph that are not layers: none on tf_keras (its
    graphs wrap TensorFlow functions in layers)."""
    return []


def fresh_inputs(model):
    """New ``Input`` tensors like ``model``'s (a list), to call its layers on again."""
    keras = _compat.keras
    return [keras.Input(type_spec=t.type_spec, name=t.name.split(":")[0])
            for t in model.inputs]


def as_call_inputs(inputs):
    """``inputs`` (a list) as a functional ``Model`` built on them takes them."""
    return inputs


def node_shapes(layer):
    """``[(input shape, output shape)]`` of every call of ``layer`` (its first input and
    output)."""
    shapes = []
    for node in getattr(layer, "_inbound_nodes", []):
        ins = node.input_shapes if hasattr(node, "input_shapes") else None
        outs = node.output_shapes
        ins = ins[0] if isinstance(ins, list) else ins
        outs = outs[0] if isinstance(outs, list) else outs
        shapes.append((tuple(ins), tuple(outs)))
    return shapes
