"""Capture what one layer of a model receives, batch by batch, on either engine.

Post-training pruning and calibration-based importance need a layer's inputs on
calibration data, produced by the model as it is now (the layers before it already
pruned). A layer of a functional or Sequential model (tf_keras or Keras 3, nested models
included: ``outer/inner``) is reached through the sub-model from the model's inputs to
the layer's input; a layer called more than once has no single input and is refused.

A layer inside a custom Keras 3 layer (``outer/custom/inner``, as
:func:`kprune.core.layers.weight_layers` names it) is in no graph: its inputs are recorded
by a hook on its ``call`` while the whole model runs on each batch (the hook is removed
after each batch, errors included). Each call of the layer gives one array, so a sublayer
called twice per batch gives both inputs.

Example:
    >>> for x in layer_inputs(model, "fc1", batches):
    ...     print(x.shape)                      # (batch, 1568)
    >>> next(layer_inputs(gpt2, "gpt2_backbone/transformer_layer_0/feedforward_output_dense",
    ...                   batches)).shape       # (batch, sequence, 64)
"""

from __future__ import annotations

import contextlib
import functools
import inspect

import numpy as np

from kprune.engines import engine_of
from kprune.engines.graph_reader import read
from kprune.engines.layer_paths import sublayer

__all__ = ["layer_inputs", "capture_problem", "call_order", "inside_custom_layer", "to_numpy"]


def to_numpy(tensor):
    """A tensor of either engine (any Keras 3 backend) as a numpy array."""
    if hasattr(tensor, "numpy"):
        return np.asarray(tensor.numpy())
    return np.asarray(tensor)


def _calls(layer):
    return len(getattr(layer, "_inbound_nodes", ()))


def _input_tensors(layer):
    """The tensors the layer's one call in its owner's graph received (a nested model's
    ``input`` would be its own ``Input``, not what the outer graph feeds it)."""
    tensors = layer._inbound_nodes[0].input_tensors
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def inside_custom_layer(model, path):
    """The layer at ``path`` when it sits inside a custom layer (its inputs are recorded by
    a call hook), else None (a layer of the model's graph, nested models included).

    Example:
        >>> inside_custom_layer(model, "block/fc_a").name, inside_custom_layer(model, "head")
        ('fc_a', None)
    """
    owner = model
    names = path.split("/")
    for depth, name in enumerate(names):
        if not hasattr(owner, "get_layer"):  # a custom layer: no graph inside
            return sublayer(owner, "/".join(names[depth:]))
        owner = owner.get_layer(name)
    return None


def capture_problem(model, path):
    """Why the inputs of the layer at ``path`` cannot be captured ("" when they can; a
    layer inside a custom layer can, if the model calls it: see :func:`call_order`).

    Example:
        >>> capture_problem(model, "shared_dense")
        'called 2 times in the graph: it has no single input to capture'
    """
    if inside_custom_layer(model, path) is not None:
        return ""
    owner = model
    for name in path.split("/"):
        layer = owner.get_layer(name)
        if _calls(layer) > 1:
            return f"called {_calls(layer)} times in the graph: it has no single input to capture"
        if _calls(layer) == 0:
            return "it is not called in the model's graph"
        if len(_input_tensors(layer)) != 1:
            return "it takes several inputs"
        owner = layer
    return ""


def readers(model, path):
    """The paths of the layers that read the output of the graph layer at ``path`` (in the
    model, or nested model, that holds it); None for a layer inside a custom layer (no
    graph there) or one whose output is also an output of its model.

    Example:
        >>> readers(model, "block0_project")
        ['block0_bn3']
    """
    if inside_custom_layer(model, path) is not None:
        return None
    owner_path, _, name = path.rpartition("/")
    owner = model
    for part in filter(None, owner_path.split("/")):
        owner = owner.get_layer(part)
    graph = read(owner)
    layer = owner.get_layer(name)
    if any(key in graph.outputs for key in graph.made_by(layer)):
        return None
    members = {member.name for member in owner.layers}  # not a keras.ops call
    prefix = f"{owner_path}/" if owner_path else ""
    found = [f"{prefix}{reader}" for reader, _ in graph.readers_of(layer) if reader in members]
    return list(dict.fromkeys(found))


def _sub_model(model, layer):
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return engine_of(model).keras.Model(inputs, _input_tensors(layer)[0])


def layer_inputs(model, path, batches):
    """Yield the input of the layer at ``path`` for each batch of model inputs, as numpy.

    Args:
        model: a built functional or Sequential model of either engine.
        path: the layer's path, as :func:`kprune.core.layers.model_layers` names it.
        batches: an iterable of model-input batches (arrays, or dicts of arrays).
    """
    problem = capture_problem(model, path)
    if problem:
        raise ValueError(f"Cannot capture the inputs of layer {path!r}: {problem}.")
    inner = inside_custom_layer(model, path)
    if inner is not None:
        yield from _hooked_inputs(model, path, inner, batches)
        return
    owner, feeds = model, batches
    for name in path.split("/"):
        layer = owner.get_layer(name)
        feeds = _run(_sub_model(owner, layer), feeds)
        owner = layer
    yield from feeds


def _run(sub_model, batches):
    for batch in batches:
        yield to_numpy(sub_model(batch, training=False))


def _first_input(function, args, kwargs):
    """The first argument of a call (positional, or by its parameter's name)."""
    if args:
        return args[0]
    first = next(iter(inspect.signature(function).parameters))
    return kwargs[first]


@contextlib.contextmanager
def _recording_calls(layer, record):
    """While inside, each call of ``layer`` passes its first input to ``record`` first; its
    own ``call`` is back afterwards, whatever happened."""
    had_own = "call" in vars(layer)
    original = layer.call

    @functools.wraps(original)
    def call(*args, **kwargs):
        record(_first_input(original, args, kwargs))
        return original(*args, **kwargs)

    object.__setattr__(layer, "call", call)  # past Keras's attribute tracking
    try:
        yield
    finally:
        if had_own:
            object.__setattr__(layer, "call", original)
        else:
            object.__delattr__(layer, "call")


def _hooked_inputs(model, path, layer, batches):
    for batch in batches:
        seen = []
        with _recording_calls(layer, lambda x, seen=seen: seen.append(to_numpy(x))):
            model(batch, training=False)
        if not seen:
            raise ValueError(f"Cannot capture the inputs of layer {path!r}: the model did not "
                             "call it on a calibration batch.")
        yield from seen


def call_order(model, paths, batch):
    """The layers at ``paths`` (inside custom layers) in the order ``model`` first calls
    them on ``batch``; those it never calls are left out.

    A custom layer's sublayers are listed in the order it creates them, which need not be
    the order its ``call`` uses them; sequential pruning needs the latter.

    Example:
        >>> call_order(model, ["block/fc_b", "block/fc_a"], x[:8])
        ['block/fc_a', 'block/fc_b']
    """
    called = []

    def recorder(path):
        return lambda _: None if path in called else called.append(path)

    with contextlib.ExitStack() as hooks:
        for path in paths:
            hooks.enter_context(_recording_calls(inside_custom_layer(model, path),
                                                 recorder(path)))
        model(batch, training=False)
    return called
