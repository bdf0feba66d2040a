"""KerasHub transformer blocks whose config keeps their attention's head size (Keras 3).

KerasHub's ``TransformerEncoder`` and ``TransformerDecoder`` size their heads as
``hidden_dim // num_heads``. A block that structural pruning left with fewer heads of the
same size is rebuilt as a subclass of its own class (:func:`sized_class`) that takes a
``head_size`` in its config and builds its attention with it, so that it clones, saves and
loads like any layer. The subclass is registered with Keras as ``kprune>TransformerEncoder``
(``kprune>TransformerDecoder``); :func:`register` makes a new process know it (``kprune``'s
``load_model`` calls it when KerasHub is imported). kprune never imports KerasHub: the
classes are those of the process (see :data:`kprune.core.layers.HUB_BLOCKS`).

Example:
    >>> from kprune.engines.keras3.sized_blocks import sized_class
    >>> block = sized_class(type(encoder)).from_config({**encoder.get_config(),
    ...                                                 "num_heads": 2, "head_size": 16})
"""

from __future__ import annotations

import functools

from kprune.core import layers
from kprune.engines.keras3 import helpers

__all__ = ["sized_class", "register"]

keras = helpers.keras


def sized_class(cls):
    """KerasHub block class ``cls`` as a subclass whose config keeps its attention's head size
    (``head_size``), so that built from its config (a clone, a ``.keras`` file) it has the
    head size pruning left it, not ``hidden_dim // num_heads``. Registered with Keras as
    ``kprune>TransformerEncoder`` (``kprune>TransformerDecoder``); the same class each time.

    Example:
        >>> sized_class(type(block)).from_config({**block.get_config(), "num_heads": 2,
        ...                                       "head_size": 16})
    """
    if getattr(cls, "kprune_sized", False):
        return cls
    if cls not in _SIZED:
        def __init__(self, *args, head_size=None, **kwargs):
            # set first: a decoder given its input shape builds inside its __init__
            object.__setattr__(self, "head_size", head_size)
            cls.__init__(self, *args, **kwargs)

        @functools.wraps(cls.build)  # Keras passes shapes by the names of build's arguments
        def build(self, *args, **kwargs):
            cls.build(self, *args, **kwargs)
            _resize_heads(self)

        def get_config(self):
            return {**cls.get_config(self), "head_size": self.head_size}

        sized = type(cls.__name__, (cls,), {
            "__init__": __init__, "build": build, "get_config": get_config,
            "kprune_sized": True, "__module__": __name__,
            "__doc__": f"KerasHub's {cls.__name__} with its head size in its config (kprune)."})
        _SIZED[cls] = keras.saving.register_keras_serializable(
            package="kprune", name=cls.__name__)(sized)
    return _SIZED[cls]


def register():
    """Register the head-sized blocks of the KerasHub classes loaded in this process, so that
    a ``.keras`` file of a pruned backbone loads (``kprune.load_model`` calls it; call it
    after ``import keras_hub`` and before ``keras.models.load_model``)."""
    for name in layers.HUB_BLOCKS:
        cls = keras.saving.get_registered_object(f"keras_hub>{name}")
        if cls is not None:
            sized_class(cls)


# -- internals ---------------------------------------------------------------------

_SIZED = {}  # KerasHub block class -> its head-sized subclass (see sized_class)


def _resize_heads(block):
    """Replace the attention KerasHub built with ``hidden_dim // num_heads`` per head by one
    with the block's ``head_size`` (same heads), built on the same shapes."""
    built = block._self_attention_layer
    config = built.get_config()
    if block.head_size is None or config["key_dim"] == block.head_size:
        return
    fresh = type(built).from_config({**config, "key_dim": block.head_size,
                                     "value_dim": block.head_size})
    hidden = block._feedforward_output_dense.units  # the block's width
    fresh.build(query_shape=(None, None, hidden), value_shape=(None, None, hidden))
    helpers._replace(block, built, fresh)  # its attribute and its place among the block's layers
