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
    for path, layer in owner.iter_layers(model):
        if not getattr(layer, "_is_graph_network", True):
            raise ValueError(f"Cannot inline layer {path!r}: it is not a functional model.")
    clones, sources = {}, {}
    inputs = owner.fresh_inputs(model)
    outputs = _call(model, inputs, clones, sources)
    flat = owner.keras.Model(owner.as_call_inputs(inputs),
                             outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for name, layer in clones.items():
        layer.set_weights(sources[name].get_weights())
    return flat


def follows_nesting(function):
    """Decorate a structural function so that its ``model`` argument is inlined first."""

    @functools.wraps(function)
    def wrapper(model, *args, **kwargs):
        return function(inline(model), *args, **kwargs)

    return wrapper


def _call(model, inputs, clones, sources):
    """Call the layers of ``model`` on ``inputs`` in graph order; return its outputs."""
    owner = engine_of(model)
    graph = owner.functional_graph(model)
    if graph is None:
        raise ValueError(
            f"Cannot inline model {model.name!r}: it has no layer graph (a Sequential "
            "built without an Input, or a subclassed model).")
    flatten, map_structure = owner.nest.flatten, owner.nest.map_structure
    input_layer, model_class = owner.keras.layers.InputLayer, owner.keras.Model
    found = {id(t): new for t, new in zip(model.inputs, inputs)}

    def mapped(value):
        return found[id(value)] if id(value) in found else value

    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            layer, args, kwargs = owner.node_call(node)
            if isinstance(layer, input_layer):
                continue
            args, kwargs = map_structure(mapped, (args, kwargs))
            if isinstance(layer, model_class):
                result = _call(layer, flatten(args), clones, sources)
            else:
                result = _clone(layer, clones, sources)(*args, **kwargs)
            for old, new in zip(flatten(node.outputs), flatten(result)):
                found[id(old)] = new
    return [found[id(t)] for t in model.outputs]


def _clone(layer, clones, sources):
    if layer.name in sources and sources[layer.name] is not layer:
        raise ValueError(
            f"Cannot inline the nested models: two layers are named {layer.name!r}, and a "
            "flat model needs distinct names. Rename one (e.g. build the nested model "
            "with a name prefix) and try again.")
    if layer.name not in clones:
        sources[layer.name] = layer
        clones[layer.name] = type(layer).from_config(layer.get_config())
    return clones[layer.name]
