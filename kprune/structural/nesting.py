"""Nested models made flat, so that structural pruning follows channels through them.

A backbone called as a layer (``keras.Sequential([base, GlobalAveragePooling2D(),
Dense(10)])``, or ``base(x)`` inside a functional model) hides its layers from the outer
graph. :func:`inline` rebuilds the model with every nested model's layers called in its
place, weights copied, so the channel graph sees one set of layers; the structural
functions call it themselves and return flat models. tf_keras and Keras 3 models alike
(the result has the model's own Keras).

Example:
    >>> from kprune.structural.nesting import inline
    >>> flat = inline(keras.Sequential([backbone, head]))
    >>> [layer.name for layer in flat.layers][:3]
    ['input_1', 'conv1', 'conv1_bn']
"""

from __future__ import annotations

import functools

from kprune.engines import engine_of
from kprune.engines.graph_reader import fresh_layer, read

__all__ = ["inline", "is_nested", "follows_nesting"]


def is_nested(model):
    """True when ``model`` calls another model as one of its layers."""
    model_class = engine_of(model).keras.Model
    return any(isinstance(layer, model_class) for layer in model.layers)


def inline(model):
    """``model`` itself when it nests no model, else a flat copy with the same weights.

    Layers keep their names; two layers of the same name (one inside a nested model, one
    outside) are refused, since the flat model could not hold both.

    Example:
        >>> flat = inline(model)
        >>> flat(x).numpy() == model(x).numpy()
    """
    owner = engine_of(model)
    owner.check_model(model)
    if not is_nested(model):
        return model
    clones = {}
    inputs = owner.fresh_inputs(model)
    outputs = _call(model, inputs, clones)
    flat = owner.keras.Model(owner.as_call_inputs(inputs),
                             outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for source, layer in clones.values():
        layer.set_weights(source.get_weights())
    return flat


def follows_nesting(function):
    """Decorate a structural function so that its ``model`` argument is inlined first."""

    @functools.wraps(function)
    def wrapper(model, *args, **kwargs):
        return function(inline(model), *args, **kwargs)

    return wrapper


def _call(model, inputs, clones):
    """Call the layers of ``model`` on ``inputs`` in graph order; return its outputs."""
    owner = engine_of(model)

    def call(step, args, kwargs):
        if isinstance(step.layer, owner.keras.Model):
            return _call(step.layer, owner.nest.flatten(args), clones)
        return fresh_layer(step.layer, clones)(*args, **kwargs)

    return read(model).replay(inputs, call)
