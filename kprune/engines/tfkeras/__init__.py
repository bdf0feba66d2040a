"""The tf_keras engine's own pieces, which import tf_keras and tfmot: tfmot's pruning wrapper
as kprune saves it, the callbacks a tf_keras ``fit`` needs, and :mod:`~.engine`, this engine's
side of :func:`kprune.engines.engine_of` (tf_keras and tfmot loaded when first used).

The public functions (``kprune.apply``, ``kprune.callbacks``, ...) choose this engine for a
tf_keras model and :mod:`kprune.engines.keras3` for a Keras 3 one; nothing here is imported
on the Keras 3 path.

Example:
    >>> from kprune.engines.tfkeras.callbacks import wrapped_layers
    >>> [path for path, _ in wrapped_layers(kprune.apply(model, steps_per_epoch=10, epochs=1))]
    ['conv1', 'conv2', 'fc1']
"""
