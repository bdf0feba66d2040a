"""The Keras 3 engine: the same plans, schedules, masks and reports as the tf_keras engine,
for models built with ``import keras``, on any Keras backend (tested: TensorFlow, JAX).

``kprune.apply``, ``kprune.callbacks``, ``kprune.strip``, ``kprune.sparsity_report`` and
``kprune.save_model``/``load_model`` select this engine by themselves when handed a Keras 3
model. Design: each pruned layer is wrapped in :class:`~kprune.engines.keras3.wrap.PruneLowMagnitude`,
which holds one non-trainable mask per pruned weight (and the pruning step) and runs the
layer with ``weight * mask`` (so masked weights get no gradient); the
:class:`~kprune.engines.keras3.callbacks.UpdatePruningStep` callback counts training steps
and recomputes the masks, in numpy with :mod:`kprune.core.masks`, at the firing steps
of :mod:`kprune.core.schedules` -- tfmot's steps. :mod:`kprune.engines.keras3.engine` is this
engine's side of :func:`kprune.engines.engine_of` (the names code above the engines uses).

Example:
    >>> import keras, kprune
    >>> pruned = kprune.apply(model, kprune.PruningPlan.default(), steps_per_epoch=100, epochs=2)
    >>> pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> final = kprune.strip(pruned)
"""
