"""Apply a plan: a wrapped clone of the user's model, never the model itself.

tfmot's ``prune_low_magnitude`` wraps the *same* layer objects as the model it is
given, so training the pruned model silently prunes the user's baseline too.
``apply`` first makes an independent copy (new layers, copied weights), then wraps
the copy's layers as the resolved plan says.

Example:
    >>> pruned = kprune.apply(model, kprune.PruningPlan.default(),
    ...                       steps_per_epoch=469, epochs=2)
    >>> pruned.compile(...); pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
"""

from kprune.core.plan import PruningPlan
from kprune.engines import distribute, is_keras3
from kprune.engines.tfkeras import loader

__all__ = ["apply", "copy_model", "kernel_masks",
           "PruneLowMagnitude"]  # noqa: F822 (module __getattr__)


def __getattr__(name):  # tfmot's wrapper as kprune saves it, loaded only when asked for
    if name == "PruneLowMagnitude":
        from kprune.engines.tfkeras.wrapper import PruneLowMagnitude

        return PruneLowMagnitude
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def copy_model(model, *, strategy=None):
    """An independent copy of a tf_keras or Keras 3 model: new layer objects, same weights.

    The copy of a tf_keras model lives in ``strategy`` (a ``tf.distribute`` strategy) if
    given, else in the strategy ``model`` was built under (its variables mirrored the same
    way), if any. A Keras 3 model is copied by :func:`kprune.engines.keras3.helpers.copy_model`.

    Example:
        >>> twin = copy_model(model)
        >>> twin.layers[1] is model.layers[1]
        False
    """
    if is_keras3(model):
        if strategy is not None:
            raise ValueError(
                "Argument `strategy` (a tf.distribute strategy) applies to tf_keras models; "
                f"a Keras 3 model is copied as it is. Received: strategy={strategy!r}"
            )
        from kprune.engines.keras3 import helpers

        return helpers.copy_model(model)
    return _copy_tf_keras(model, strategy)


def _copy_tf_keras(model, strategy):
    loader.check_model(model)
    with distribute.scope(model, strategy):
        twin = loader.keras.models.clone_model(model)
        twin.set_weights(model.get_weights())
    return twin


def apply(model, plan=None, *, steps_per_epoch, epochs, strategy=None):
    """Return a new model whose layers are wrapped for pruning as ``plan`` says.

    Args:
        model: a built tf_keras or Keras 3 Sequential or functional model (nested ones
            too). It is never modified. A Keras 3 model is pruned by kprune's Keras 3
            engine (:mod:`kprune.engines.keras3`), a tf_keras one by tfmot.
        plan: a :class:`PruningPlan`; None means ``PruningPlan.default()``.
        steps_per_epoch, epochs: the length of the pruning fit, from which the
            schedules' ``end_step`` and ``frequency`` are derived.
        strategy: a ``tf.distribute`` strategy to clone and wrap the model in; None
            keeps the strategy ``model`` was built under (``strategy.scope()``), if any.

    The returned model is not compiled: compile it as you would the original.
    """
    plan = PruningPlan.default() if plan is None else plan
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"Argument `plan` must be a kprune.PruningPlan. Received: plan={plan!r}")
    if is_keras3(model):
        if strategy is not None:
            raise ValueError("Argument `strategy` (tf.distribute) is for tf_keras models; a "
                             f"Keras 3 model is pruned as it is. Received: strategy={strategy!r}")
        from kprune.engines.keras3 import wrap as keras3_wrap

        return keras3_wrap.apply(model, plan, steps_per_epoch=steps_per_epoch, epochs=epochs)
    resolved = plan.resolve(model, steps_per_epoch=steps_per_epoch, epochs=epochs)
    rows = {row.name: row for row in resolved.pruned}

    def wrap(path, layer):
        row = rows.get(path)
        return layer if row is None else _wrap_layer(layer, row)

    with distribute.scope(model, strategy):
        twin = _copy_tf_keras(model, strategy)
        pruned = loader.clone_model(twin, wrap)
    pruned._kprune_plan = resolved  # read by sparsity_report when no plan is given
    return pruned


def _wrap_layer(layer, row):
    from kprune.engines.tfkeras.wrapper import PruneLowMagnitude

    if row.method == "m_by_n":
        tfmot_schedule = loader.tfmot.sparsity.keras.ConstantSparsity(row.target, 0)
        return PruneLowMagnitude(
            layer,
            pruning_schedule=tfmot_schedule,
            # tfmot counts (zeros, group); kprune counts (kept, group).
            sparsity_m_by_n=(row.m - row.n, row.m),
        )
    return PruneLowMagnitude(
        layer,
        pruning_schedule=row.schedule.to_tfmot(),
        block_size=row.block,
        block_pooling_type=row.pool,
    )


def kernel_masks(model):
    """``{layer path: {weight label: keep-mask}}`` of every layer a pruning wrapper masks in
    ``model``: tfmot's masks for a tf_keras model, the Keras 3 engine's for a Keras 3 one
    (layers inside custom layers included).

    Example:
        >>> kernel_masks(pruned)["fc1"]["kernel"].mean()   # the fraction kept
        0.5
    """
    if is_keras3(model):
        from kprune.engines.keras3.wrap import kernel_masks as masks_of
    else:
        from kprune.engines.tfkeras.callbacks import kernel_masks as masks_of
    return masks_of(model)
