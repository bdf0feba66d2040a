"""A layer inside another by its path (``"inner/dense"``), on either Keras: both keep a
layer's sublayers where ``_flatten_layers`` finds them. Imports nothing.

Example:
    >>> from kprune.engines.layer_paths import sublayer
    >>> sublayer(gpt2_backbone.get_layer("transformer_layer_0"),
    ...          "feedforward_intermediate_dense").units
    128
"""

__all__ = ["sublayer"]


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
