"""Layers by path, on either Keras: a model's layers at ``outer/inner`` (:func:`graph_layers`)
and a layer inside another (:func:`sublayer`; both Keras keep a layer's sublayers where
``_flatten_layers`` finds them). Imports nothing: each engine passes its own Keras.

Example:
    >>> from kprune.engines.layer_paths import sublayer
    >>> sublayer(gpt2_backbone.get_layer("transformer_layer_0"),
    ...          "feedforward_intermediate_dense").units
    128
"""

__all__ = ["graph_layers", "sublayer"]


def graph_layers(model, keras, name_of, prefix=""):
    """Yield ``(path, layer)`` for every non-model layer of ``model`` (a model of ``keras``),
    nested models included at ``"outer/inner"``; ``name_of(layer)`` names each step (a
    pruning wrapper by the layer it wraps, so wrapped and stripped models read alike).

    Example:
        >>> [path for path, _ in graph_layers(model, keras, lambda layer: layer.name)]
        ['conv1', 'block/conv2', 'head']
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{name_of(layer)}"
        if isinstance(layer, keras.Model):
            yield from graph_layers(layer, keras, name_of, prefix=f"{path}/")
        else:
            yield path, layer


def sublayer(layer, relative):
    """The layer at ``relative`` (``"inner/dense"``, names joined by ``/``) inside ``layer``;
    ``layer`` itself for ``""``.

    Example:
        >>> sublayer(decoder, "feedforward_intermediate_dense").units
        128
    """
    found = layer
    for name in filter(None, relative.split("/")):
        held = {sub.name: sub for sub in found._flatten_layers(include_self=False, recursive=False)}
        if name not in held:
            raise ValueError(f"{found.name!r} holds no layer {name!r} (it holds {sorted(held)}). "
                             f"Received: path={relative!r}")
        found = held[name]
    return found
