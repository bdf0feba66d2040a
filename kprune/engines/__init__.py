"""The two engines, and the one place where kprune asks which Keras a model holds.

- :mod:`kprune.engines.tfkeras`: tf_keras models, pruned with tfmot's wrappers.
- :mod:`kprune.engines.keras3`: Keras 3 models (``import keras``, any backend), pruned by
  kprune's own wrappers on ``keras.ops``.

:func:`engine_of` picks the engine of a model once; what it returns
(:mod:`kprune.engines.tfkeras.engine` or :mod:`kprune.engines.keras3.engine`) gives the same
names on both engines: ``keras`` (the Keras module itself), ``check_model``,
``iter_layers``/``model_layers``, ``clone_model``, ``callback_class`` (a callback body as a
Callback of that Keras), ``sync_state``, ``weight_gradients`` and ``example_gradients``
(per-example, a batch at a time), the TFLite converter, the layer-graph readers
(``graph_nodes``, ``node_call``, ``node_inputs``, ``layer_calls``, ...) and what
:mod:`kprune.core.layers` asks of a layer (``unwrap``, ``input_shape``, ``builtin_classes``,
``registry_labels``, ...). Code above the engines calls these instead
of branching on the engine. This module and the two ``engine`` modules import nothing
above :mod:`kprune.core.checks` and the engines' Keras helpers, so that core's layer
registry can ask them.
The public functions (``kprune.apply``, ``kprune.callbacks``, ``kprune.strip``, ...,
in :mod:`kprune.engines.wrap`, ``callbacks``, ``verify``, ``saving``) take either Keras
themselves.

Example:
    >>> from kprune.engines import engine_of
    >>> engine = engine_of(model)
    >>> engine.name, engine.keras.Sequential          # 'tf_keras' or 'keras3', its Keras
"""

from kprune.engines.question import is_keras3, refuse_keras3

__all__ = ["engine_of", "is_keras3", "pruner", "refuse_keras3"]


def engine_of(obj):
    """The engine of ``obj`` (a model, layer, tensor or graph node; None means tf_keras):
    :mod:`kprune.engines.keras3.engine` for a Keras 3 object, else
    :mod:`kprune.engines.tfkeras.engine`. Loads only the engine it returns (a Keras 3 model
    loads neither tf_keras nor tfmot).

    Example:
        >>> engine_of(keras.layers.Dense(1)).name, engine_of(tf_keras.layers.Dense(1)).name
        ('keras3', 'tf_keras')
    """
    if is_keras3(obj):
        from kprune.engines.keras3 import engine
    else:
        from kprune.engines.tfkeras import engine
    return engine


def pruner(obj):
    """Who prunes ``obj`` (a model or layer), as messages name it: its engine's ``pruner``,
    ``"tfmot"`` for tf_keras, ``"kprune's Keras 3 engine"`` for Keras 3.

    Example:
        >>> pruner(tf_keras.layers.Dense(1)), pruner(keras.layers.Dense(1))
        ('tfmot', "kprune's Keras 3 engine")
    """
    return engine_of(obj).pruner

