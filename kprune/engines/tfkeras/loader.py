"""The tf_keras engine's loader: the one module that imports TensorFlow, tf_keras and tfmot.

Importing tfmot sets ``TF_USE_LEGACY_KERAS=1`` for the whole process, which
turns ``tf.keras`` into tf_keras. kprune therefore names ``tf_keras``
explicitly everywhere (as ``keras`` here) and checks every model it is handed,
so that a Keras 3 model gets a clear error instead of tfmot's confusing one.

They are imported when one of ``keras``, ``tfmot``, ``PruneLowMagnitude`` or
``PruneRegistry`` is first read (``loader.keras``), not at import of this module,
so the Keras 3 engine never loads tf_keras or tfmot; ``tf`` and ``tf_config`` import
TensorFlow alone.

Example:
    >>> from kprune.engines.tfkeras import loader
    >>> loader.check_model(loader.keras.Sequential([loader.keras.Input((4,)),
    ...                                             loader.keras.layers.Dense(2)]))
"""

import os

from kprune.engines.layer_paths import graph_layers
from kprune.engines.question import refuse_keras3

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow, tf_keras and tfmot are imported when one of these names is first read, not
# when kprune imports this module: a Keras 3 model pruned on JAX never loads them.
_LOADED = ("tf", "keras", "tfmot", "PruneLowMagnitude", "PruneRegistry", "tf_config")

__all__ = [*_LOADED, "check_model", "iter_layers", "layer_name", "clone_model",
           "serving_function"]


def _load_tensorflow():
    """Import TensorFlow alone (once: ``tf``, ``tf_config``); return this module's namespace."""
    if "tf" not in globals():
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config  # op determinism on, off

        globals().update(tf=tf, tf_config=tf_config)
    return globals()


def _load():
    """Import TensorFlow, tfmot and tf_keras (once), bind this module's names to them, and
    return this module's namespace."""
    if "tfmot" in globals():
        return globals()
    _load_tensorflow()
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import (
        PruneRegistry,
    )
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
        PruneLowMagnitude,
    )

    globals().update(keras=keras, PruneRegistry=PruneRegistry,
                     PruneLowMagnitude=PruneLowMagnitude, tfmot=tfmot)
    return globals()


def __getattr__(name):
    if name in ("tf", "tf_config"):  # TensorFlow alone: tf_keras and tfmot stay unloaded
        return _load_tensorflow()[name]
    if name in _LOADED:
        return _load()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serving_function(model):
    """The concrete function that tf_keras's own SavedModel export serves for ``model``: its
    inference call (``training=False``), outputs named as Keras names them.

    Example:
        >>> serving_function(model).structured_outputs
        {'head': <tf.Tensor ...>}
    """
    _load()
    from tf_keras.src.saving.legacy.saved_model import save_impl

    return save_impl.default_save_signature(model)


def _describe(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def check_model(model, *, argument="model", graph=True):
    """Raise a clear error unless ``model`` is a tf_keras Sequential or functional model
    (tfmot clones models through their graph, so ``graph=False`` changes nothing here).

    Example:
        >>> check_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    """
    refuse_keras3(model, argument=argument)
    keras = _load()["keras"]
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `{argument}` must be a tf_keras Sequential or functional "
            f"model. Received: {argument} of type {_describe(model)}"
        )
    is_functional = isinstance(model, keras.Sequential) or getattr(
        model, "_is_graph_network", False
    )
    if not is_functional:
        raise TypeError(
            f"Argument `{argument}` is a subclassed model ({_describe(model)}); "
            "kprune needs its layer graph, which subclassed models hide. Rebuild it "
            "with the Sequential or functional API, or prune its inner layers with "
            "`tfmot.sparsity.keras.prune_low_magnitude` inside `__init__`. "
            f"Received: {argument}={model.name!r}"
        )
    if not model.built:
        raise ValueError(
            f"Argument `{argument}` is not built: give it an Input or call "
            f"`model.build(input_shape)` first. Received: {argument}={model.name!r}"
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            check_model(layer, argument=f"{argument}/{layer.name}")


def layer_name(layer):
    """A layer's own name; for a pruning wrapper, the name of the layer it wraps."""
    wrapper = _load()["PruneLowMagnitude"]
    return layer.layer.name if isinstance(layer, wrapper) else layer.name


def iter_layers(model, prefix=""):
    """Yield ``(path, layer)`` for every non-model layer, descending into nested models.

    The path of a layer inside a nested model is ``"outer/inner"``; a pruning wrapper
    has the path of the layer it wraps, so wrapped and stripped models read alike.

    Example:
        >>> [path for path, _ in iter_layers(model)]
        ['conv1', 'block/conv2', 'head']
    """
    return graph_layers(model, _load()["keras"], layer_name, prefix)


def clone_model(model, layer_fn, prefix=""):
    """Clone ``model`` with ``layer_fn(path, layer) -> layer`` applied to every leaf layer.

    Nested models are cloned recursively, so ``layer_fn`` sees the same paths as
    :func:`iter_layers`. Layers returned unchanged are shared with ``model``.
    """
    keras = _load()["keras"]

    def clone(layer):
        path = f"{prefix}{layer_name(layer)}"
        if isinstance(layer, keras.Model):
            return clone_model(layer, layer_fn, prefix=f"{path}/")
        return layer_fn(path, layer)

    cloned = keras.models.clone_model(model, clone_function=clone)
    return cloned
