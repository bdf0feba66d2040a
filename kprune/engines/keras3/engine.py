"""The Keras 3 engine's side of the engine interface (:func:`kprune.engines.engine_of`).

The same names as :mod:`kprune.engines.tfkeras.engine`, so that code above the engines is
written once: the Keras module, checking and walking a model, callbacks of this Keras,
reading the layer graph, gradients, the TFLite converter, and what
:mod:`kprune.core.layers` asks of a layer (its wrapper, shapes, built-in class, registry).
Nothing here imports tf_keras or tfmot; TensorFlow alone is imported by the TFLite
converter. Nothing here imports kprune's other modules above :mod:`kprune.core.checks`
either: ``kprune.core.layers`` asks this module.

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

import numpy as np

from kprune.engines.keras3 import helpers

__all__ = ["name", "pruner", "uses_tfmot", "keras", "nest", "check_model", "iter_layers", "layer_name",
           "clone_model", "model_layers", "backend", "sync_state", "constant",
           "callback_class", "weight_gradients", "example_gradients", "tflite_converter",
           "node_call", "node_inputs", "node_outputs", "tensor_origin", "graph_nodes",
           "layer_calls", "is_graph_tensor", "graph_operations", "fresh_inputs",
           "as_call_inputs",
           "node_shapes", "unwrap", "input_shape", "output_shape", "builtin_classes",
           "declares_prunable_weights", "declared_prunable_weights", "registry_labels",
           "unregistered_reason", "masked_values", "with_nested_layers",
           "get_item_problem"]

#: The engine's name, as messages and records say it.
name = "keras3"
#: Who prunes this engine's layers, as messages name it (it follows tfmot's rules, not tfmot).
pruner = "kprune's Keras 3 engine"
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
example_gradients = helpers.example_gradients


def model_layers(model):
    """``(path, layer)`` of every leaf layer of ``model``, once it is checked."""
    check_model(model)
    return list(iter_layers(model))


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


@contextlib.contextmanager
def tflite_converter(model):
    """A ``TFLiteConverter`` for ``model``, valid inside the ``with`` block: through Keras
    3's own ``model.export`` to a temporary SavedModel (its variables are frozen there; a
    concrete function of it keeps ``READ_VARIABLE`` ops that the converter cannot run)."""
    from kprune.engines.tfkeras.loader import tf

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


def graph_nodes(model):
    """Every node (call) of ``model``'s layer graph, its inputs' first (a Sequential's graph
    is its ``_functional``); None when it has no layer graph (a Sequential built without an
    Input, a subclassed model)."""
    by_depth = getattr(getattr(model, "_functional", None) or model, "_nodes_by_depth", None)
    if by_depth is None:
        return None
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def layer_calls(layer):
    """Every node (call) of ``layer``, in whichever model (none for a layer never called)."""
    return list(getattr(layer, "_inbound_nodes", []))


def is_graph_tensor(value):
    """True when ``value`` (an argument of a node) is a symbolic tensor of a layer graph."""
    return isinstance(value, keras.KerasTensor)


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


# -- what kprune.core.layers asks of a layer (its registry's engine-dependent answers)


def unwrap(layer):
    """The layer a Keras 3 pruning wrapper (or a masked view inside one) wraps; any other
    layer itself."""
    return helpers.unwrap(layer)


def _shape(tensors):
    if isinstance(tensors, (list, tuple)):
        return [tuple(t.shape) for t in tensors]
    return tuple(tensors.shape)


def input_shape(layer):
    """``layer``'s input shape as tf_keras's ``layer.input_shape`` gives it (Keras 3 layers
    have no such attribute: the shape of their first call's input)."""
    return _shape(layer.input)


def output_shape(layer):
    """``layer``'s output shape as tf_keras's ``layer.output_shape`` gives it."""
    return _shape(layer.output)


def builtin_classes(layer):
    """The Keras 3 built-in layer classes ``layer`` is an instance of, nearest first (its
    own class and its ancestors that ``keras.layers`` exports: KerasHub's
    ``ReversibleEmbedding`` gives ``Embedding``, then ``Layer``)."""
    return [cls for cls in type(layer).__mro__
            if getattr(keras.layers, cls.__name__, None) is cls]


def declares_prunable_weights(layer):
    """False: a Keras 3 layer does not name its prunable weights itself (tfmot's
    ``PrunableLayer`` is for tf_keras); kprune's table says what it prunes."""
    return False


def declared_prunable_weights(layer):
    """``[]``: see :func:`declares_prunable_weights`."""
    return []


def registry_labels(layer, table_labels):
    """The attribute paths of the weights ``layer`` prunes: on Keras 3, ``table_labels``,
    what kprune's table of Keras 3 built-in classes gives for the class ``layer`` is pruned
    as (None for a layer the table does not know)."""
    return table_labels


def _sublayers(layer):
    """The layers a Keras 3 layer holds directly (its attributes that are layers)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _own_variables(layer):
    """Paths of the variables a Keras 3 custom layer created itself, not through a sublayer."""
    owned = {id(v) for sub in _sublayers(layer) for v in sub.variables}
    return [v.path for v in layer.variables if id(v) not in owned]


def unregistered_reason(layer, pruned_types):
    """Why ``layer``, a layer with weights that no registry knows, is not pruned, in words for
    a plan table; ``pruned_types``: the layer types this engine prunes.

    Example:
        >>> unregistered_reason(transformer_decoder, ["Dense", "EinsumDense"])
        'TransformerDecoder: its sublayers are rows of their own'
    """
    name = type(layer).__name__
    if _sublayers(layer):
        own = _own_variables(layer)
        if own:
            return (f"{name} holds variables of its own ({', '.join(own)}), outside any layer "
                    "kprune knows: they are not masked; its sublayers are rows of their own")
        return f"{name}: its sublayers are rows of their own"
    return (f"{name} is not a layer kprune's Keras 3 engine prunes "
            f"(it prunes {', '.join(sorted(pruned_types))})")


def masked_values(layer, weights, values):
    """``values`` (numpy, one per prunable weight of ``weights``) as they act in the forward
    pass: times the wrapper's masks for a pruning wrapper, else as they are."""
    if helpers.is_wrapper(layer):
        return [v * np.asarray(mask.numpy()) for v, mask in zip(values, layer.masks)]
    return values


def with_nested_layers(found, descend):
    """``found`` (``(path, layer)`` pairs) with the layers inside each layer that
    ``descend(layer)`` enters, depth first (see :func:`kprune.engines.keras3.helpers.with_nested_layers`)."""
    return list(helpers.with_nested_layers(found, descend))


def get_item_problem(operation):
    """Why an indexing ``x[key]`` (a ``GetItem`` operation) does not keep the channel (last)
    axis whole ("" when it does).

    Example:
        >>> get_item_problem(pooled_token_op)      # x[:, 0, :]
        ''
    """
    nodes = getattr(operation, "_inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].arguments.args) != 2:
        return "kprune follows an indexing x[key] called once on one tensor"
    tensor, key = nodes[0].arguments.args
    items = key if isinstance(key, tuple) else (key,)
    if not items:
        return "indexing with () is not followed"
    if not all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items):
        return f"indexing with {key!r} (tensors or lists) is not followed"
    indexed = [i for i in items if i is not None]
    reaches_last = Ellipsis in items or len(indexed) >= len(tensor.shape)
    last_whole = items[-1] is Ellipsis or (isinstance(items[-1], slice)
                                           and items[-1] == slice(None))
    if reaches_last and not last_whole:
        return f"indexing with {key!r} changes the channel (last) axis"
    return ""
