"""The question every engine choice starts from: is this a Keras 3 object? Imports nothing.

:func:`kprune.engines.engine_of` asks it once per public call; the tf_keras-only parts of
kprune refuse a Keras 3 model with :func:`refuse_keras3`.

Example:
    >>> from kprune.engines import is_keras3
    >>> is_keras3(keras.layers.Dense(1))
    True
"""

__all__ = ["is_keras3", "refuse_keras3"]


def is_keras3(obj):
    """True when ``obj`` is a Keras 3 object (``import keras``), without importing keras:
    the one question :func:`engine_of` asks. A user's subclass (a layer or model defined in
    ``__main__``) counts by its bases.

    Example:
        >>> is_keras3(tf_keras.layers.Dense(1)), is_keras3(keras.layers.Dense(1))
        (False, True)
    """
    return any(cls.__module__ == "keras" or cls.__module__.startswith("keras.")
               for cls in type(obj).__mro__)


def refuse_keras3(obj, *, argument="model"):
    """Raise a clear TypeError if ``obj`` is a Keras 3 object, where only tf_keras (tfmot) is
    taken: which parts of kprune take Keras 3 models, and how to build a tf_keras one.

    Example:
        >>> refuse_keras3(keras.Sequential([keras.Input((3,))]))
        Traceback (most recent call last):
        TypeError: Argument `model` is a Keras 3 object (keras.src.models.sequential.Sequential) ...
    """
    if is_keras3(obj):
        raise TypeError(
            f"Argument `{argument}` is a Keras 3 object ({type(obj).__module__}."
            f"{type(obj).__qualname__}); this part of "
            "kprune builds on tfmot, which only supports tf_keras (Keras 2). Keras 3 "
            "models are taken by kprune.apply, kprune.callbacks, kprune.strip, "
            "kprune.sparsity_report, kprune.save_model/load_model, kprune.PruningStepper, "
            "kprune.allocation.global_plan, kprune.sensitivity.scan, "
            "kprune.workflows.one_shot/gradual/iterative/rewind, kprune.structural and "
            "kprune.export.to_tflite (TensorFlow or JAX backend); for the rest, build the "
            "model with `import tf_keras as keras` instead of `import keras`. "
            f"Received: {argument}={obj!r}"
        )
