"""Capture what one layer of a model receives, batch by batch, on either engine.

Post-training pruning and calibration-based importance need a layer's inputs on
calibration data, produced by the model as it is now (the layers before it already
pruned). A layer of a functional or Sequential model (tf_keras or Keras 3, nested models
included: ``outer/inner``) is reached through the sub-model from the model's inputs to
the layer's input; a layer called more than once has no single input and is refused.

Example:
    >>> for x in layer_inputs(model, "fc1", batches):
    ...     print(x.shape)                      # (batch, 1568)
"""

from __future__ import annotations

import numpy as np

from kprune.engines import engine_of

__all__ = ["layer_inputs", "capture_problem", "to_numpy"]


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


def capture_problem(model, path):
    """Why the inputs of the layer at ``path`` cannot be captured ("" when they can).

    Example:
        >>> capture_problem(model, "shared_dense")
        'called 2 times in the graph: it has no single input to capture'
    """
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
    owner, feeds = model, batches
    for name in path.split("/"):
        layer = owner.get_layer(name)
        feeds = _run(_sub_model(owner, layer), feeds)
        owner = layer
    yield from feeds


def _run(sub_model, batches):
    for batch in batches:
        yield to_numpy(sub_model(batch, training=False))
