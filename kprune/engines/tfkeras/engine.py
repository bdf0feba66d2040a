"""The tf_keras engine's side of the engine interface (:func:`kprune.engines.engine_of`).

The same names as :mod:`kprune.engines.keras3.engine`, so that code above the engines is
written once: the Keras module, checking and walking a model, callbacks of this Keras,
reading the layer graph, gradients, the TFLite converter, and what
:mod:`kprune.core.layers` asks of a layer (its wrapper, shapes, built-in class, tfmot's
registry). TensorFlow, tf_keras and tfmot load when a name that needs them is first used
(``keras`` and ``nest`` are read lazily), not when this module is imported. Nothing here
imports kprune's modules other than :mod:`kprune.engines.tfkeras.loader` (and the engines'
bottom, ``question``, ``layer_paths`` and ``per_example``): ``kprune.core.layers`` asks this
module.

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

from kprune.engines import per_example
from kprune.engines.tfkeras import loader

__all__ = ["name", "pruner", "uses_tfmot", "keras", "nest",  # noqa: F822 (module __getattr__)
           "check_model", "iter_layers", "layer_name", "clone_model", "model_layers",
           "backend", "sync_state", "constant", "callback_class",
           "weight_gradients", "example_gradients", "tflite_converter", "node_call",
           "node_inputs", "node_outputs", "tensor_origin", "graph_nodes", "layer_calls",
           "is_graph_tensor", "graph_operations",
           "fresh_inputs", "as_call_inputs", "node_shapes", "unwrap", "input_shape",
           "output_shape", "builtin_classes", "declares_prunable_weights",
           "declared_prunable_weights", "registry_labels", "unregistered_reason",
           "masked_values", "with_nested_layers", "get_item_problem"]

#: The engine's name, as messages and records say it.
name = "tf_keras"
#: Who prunes this engine's layers, as messages name it.
pruner = "tfmot"
#: Whether tfmot's own tools (quantization-aware training, its layers) take this engine's models.
uses_tfmot = True

check_model = loader.check_model
iter_layers = loader.iter_layers
layer_name = loader.layer_name
clone_model = loader.clone_model

logger = logging.getLogger("kprune")


def __getattr__(attr):  # tf_keras and tf.nest, loaded when first read
    if attr == "keras":
        return loader.keras
    if attr == "nest":  # flatten and map_structure, as keras.tree gives them on Keras 3
        return loader.tf.nest
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def model_layers(model):
    """``(path, layer)`` of every leaf layer of ``model``, once it is checked."""
    check_model(model)
    return list(iter_layers(model))


def backend():
    """The backend this engine's models run on: always ``"tensorflow"``."""
    return "tensorflow"


def sync_state(model):
    """Nothing to do: a tf_keras model's variables always hold their current values."""


def constant(value, dtype):
    """``value`` (an array) as a tensor of ``dtype``, for arithmetic with the variables."""
    return loader.tf.constant(value, dtype=dtype)


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
    return type(name, (body, loader.keras.callbacks.Callback), namespace)


def weight_gradients(model, loss_fn, x, y):
    """``{id(variable): d loss / d variable}`` (numpy) for every weight of ``model``, the loss
    ``loss_fn(y, model(x, training=False))`` taken on one batch (zeros where a weight has no
    gradient)."""
    tf = loader.tf
    variables = list(model.weights)
    with tf.GradientTape() as tape:
        tape.watch(variables)
        loss = loss_fn(y, model(x, training=False))
    found = tape.gradient(loss, variables)
    return {id(v): np.zeros(v.shape) if g is None else np.asarray(g)
            for v, g in zip(variables, found)}


def example_gradients(model, loss_fn, batches, variables):
    """For each ``(x, y)`` of ``batches``: ``{id(variable): d loss / d variable of each
    example}`` (numpy, ``(len(y), *variable.shape)``) for ``variables`` only, the loss of
    example ``i`` being ``loss_fn(y[i:i+1], model(x[i:i+1], training=False))``; a batch in
    one traced graph (see :mod:`kprune.engines.per_example`).

    Example:
        >>> for grads in example_gradients(model, loss, [(x, y)], [fc.kernel]):
        ...     grads[id(fc.kernel)].shape
        (8, 4, 3)
    """
    variables = list(variables)
    functions = per_example.tensorflow_functions(
        lambda x: model(x, training=False), loss_fn, variables)
    return per_example.per_batch(batches, *functions, variables)


@contextlib.contextmanager
def tflite_converter(model):
    """A ``TFLiteConverter`` for ``model``, valid inside the ``with`` block: from the serving
    function that tf_keras's own SavedModel export gives the model (its inference call,
    outputs named as Keras names them), saved with the model's variables only; or through
    ``from_keras_model`` if that fails (logged).

    ``from_keras_model`` writes the whole Keras SavedModel first, which traces every
    layer's call for Keras's metadata: most of the conversion time (measured, a residual
    CNN of 13 batch-norm convolutions: 18 s -> 4 s; the same .tflite predictions).
    """
    tf = loader.tf
    try:
        serving = loader.serving_function(model)
        holder = tf.Module()
        holder.model_variables = list(model.variables)  # the variables the function reads
        converter = tf.lite.TFLiteConverter.from_concrete_functions([serving], holder)
    except Exception as err:  # logged, then Keras's own (slower) path
        logger.warning(
            "Tracing the model's serving function failed (%s: %s); converting through "
            "TFLiteConverter.from_keras_model instead.",
            type(err).__name__,
            err,
        )
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
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
    return loader.tf.nest.flatten(node.outputs)


def tensor_origin(tensor):
    """``(layer that made tensor, which of its outputs it is)``."""
    history = tensor._keras_history
    return history.layer, history.tensor_index


def graph_nodes(model):
    """Every node (call) of ``model``'s layer graph, its inputs' first; None when it has no
    layer graph (a Sequential built without an Input, a subclassed model)."""
    if not getattr(model, "_is_graph_network", False):
        return None
    by_depth = model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def layer_calls(layer):
    """Every node (call) of ``layer``, in whichever model (none for a layer never called)."""
    return list(getattr(layer, "_inbound_nodes", []))


def is_graph_tensor(value):
    """True when ``value`` (an argument of a node) is a symbolic tensor of a layer graph."""
    return hasattr(value, "_keras_history")


def graph_operations(model):
    """The operations of ``model``'s graph that are not layers: none on tf_keras (its
    graphs wrap TensorFlow functions in layers)."""
    return []


def fresh_inputs(model):
    """New ``Input`` tensors like ``model``'s (a list), to call its layers on again."""
    keras = loader.keras
    return [keras.Input(type_spec=t.type_spec, name=tensor_origin(t)[0].name)
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


# -- what kprune.core.layers asks of a layer (its registry's engine-dependent answers)


def unwrap(layer):
    """The layer a tfmot pruning wrapper wraps; any other layer itself."""
    return layer.layer if isinstance(layer, loader.PruneLowMagnitude) else layer


def input_shape(layer):
    """``layer.input_shape``."""
    return layer.input_shape


def output_shape(layer):
    """``layer.output_shape``."""
    return layer.output_shape


def builtin_classes(layer):
    """``[type(layer)]`` when it is a tf_keras built-in layer class, else ``[]``: tfmot's
    registry knows exact classes only, so a subclass of a built-in layer is not one."""
    cls = type(layer)
    return [cls] if getattr(loader.keras.layers, cls.__name__, None) is cls else []


def declares_prunable_weights(layer):
    """True for a ``tfmot.sparsity.keras.PrunableLayer``, which names its prunable weights
    itself (``get_prunable_weights()``)."""
    return isinstance(layer, loader.tfmot.sparsity.keras.PrunableLayer)


def declared_prunable_weights(layer):
    """``(label, variable)`` of each weight a ``PrunableLayer`` names, labelled by the
    variable's own name and its index (``kernel[0]``)."""
    found = []
    for index, variable in enumerate(layer.get_prunable_weights()):
        name = variable.name.split("/")[-1].split(":")[0]
        found.append((f"{name}[{index}]", variable))
    return found


def registry_labels(layer, table_labels):
    """The attribute paths of the weights tfmot's registry prunes in ``layer`` (None: not
    supported); ``table_labels`` (kprune's table of Keras 3 classes) is not used here."""
    registry = loader.PruneRegistry
    if type(layer) in registry._LAYERS_WEIGHTS_MAP:
        return list(registry._weight_names(layer))
    if type(layer) in registry._RNN_LAYERS:
        cells = registry._get_rnn_cells(layer)
        stacked = len(cells) > 1 or type(layer.cell).__name__ == "StackedRNNCells"
        labels = []
        for index, cell in enumerate(cells):
            prefix = f"cell.cells[{index}]" if stacked else "cell"
            names = registry._RNN_CELLS_WEIGHTS_MAP.get(type(cell))
            if names is None:
                return None
            labels += [f"{prefix}.{name}" for name in names]
        return labels
    return None


def unregistered_reason(layer, pruned_types):
    """Why ``layer``, a layer with weights that tfmot's registry does not know, is not pruned,
    and what to implement (``pruned_types``, Keras 3's table, is not named here)."""
    return (f"{type(layer).__name__} is not in tfmot's registry (implement "
            "tfmot.sparsity.keras.PrunableLayer to prune it)")


def masked_values(layer, weights, values):
    """``values`` (numpy, one per prunable weight of ``weights``) as they act in the forward
    pass: times tfmot's masks for a pruning wrapper, else as they are."""
    if not isinstance(layer, loader.PruneLowMagnitude):
        return values
    masks = {id(weight): mask for weight, mask, _ in layer.pruning_vars}
    return [v * np.asarray(masks[id(w.variable)].numpy()) if id(w.variable) in masks else v
            for w, v in zip(weights, values)]


def with_nested_layers(found, descend):
    """``found`` as it is: tfmot wraps no layer inside another, so no layer is entered."""
    return list(found)


def get_item_problem(operation):
    """"": tf_keras has no indexing operation among its layers (Keras 3's ``GetItem``)."""
    return ""
