"""The callbacks a Keras 3 ``fit`` needs to prune: step counting and mask updates, sparsity
logs, and the check that every schedule was completed.

Steps are counted as tfmot counts them (the batches of a fit are steps ``1, 2, ...``) and
the masks are recomputed before the batch of each firing step, so a plan prunes at the
same steps on both engines.

Example:
    >>> history = pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> history.history["sparsity/fc1"]
"""

import sys

import numpy as np

from kprune.core.pruning_logs import callback_classes
from kprune.engines.keras3 import helpers
from kprune.engines.keras3.wrap import masked_layers, wrapped_layers

keras = helpers.keras

__all__ = ["callbacks", "UpdatePruningStep", "SparsityLogger", "ScheduleGuard", "final_step",
           "training_step", "mask_sparsity", "masked_layers", "pruning_step", "sync_state"]


class UpdatePruningStep(keras.callbacks.Callback):
    """Counts training steps and recomputes the masks of the layers whose schedule fires.

    The step is read from the model before the first batch of a fit (so a reloaded
    model, or one a later callback restores at the start of the fit, resumes) and
    written back to it at firing steps and at each epoch end. Needs
    ``steps_per_execution=1`` (one callback call per batch).
    """

    def __init__(self):
        super().__init__()
        self.step = 0
        self.wrappers = []

    def on_train_begin(self, logs=None):
        self.wrappers = [wrapper for _, wrapper in wrapped_layers(self.model)]
        if not self.wrappers:
            raise ValueError(
                "The model being trained has no kprune pruning layers; pass the model "
                f"returned by kprune.apply. Received: model={self.model.name!r}"
            )
        per_execution = getattr(self.model, "steps_per_execution", 1) or 1
        if int(per_execution) != 1:
            raise ValueError(
                "kprune's Keras 3 engine updates masks between batches, so it needs "
                "`compile(..., steps_per_execution=1)`. "
                f"Received: steps_per_execution={per_execution}"
            )
        self.step = None  # read at the first batch, once every callback has begun
        for wrapper in self.wrappers:
            wrapper.armed = True

    def on_train_batch_begin(self, batch, logs=None):
        if self.step is None:
            helpers.sync_state(self.model)
            self.step = _value(self.wrappers[0].pruning_step)
        self.step += 1
        firing = [wrapper for wrapper in self.wrappers if wrapper.fires_at(self.step)]
        if firing:
            helpers.sync_state(self.model)
            for wrapper in firing:
                wrapper.update_masks(self.step)
            self._write_step()

    def on_epoch_end(self, epoch, logs=None):
        if self.step is not None:
            helpers.sync_state(self.model)
            self._write_step()

    def on_train_end(self, logs=None):
        for wrapper in self.wrappers:
            wrapper.armed = False

    def _write_step(self):
        for wrapper in self.wrappers:
            wrapper.pruning_step.assign(self.step)


def mask_sparsity(wrapper):
    """``(zeros, size)`` of a masked layer's masks: what its pruned weights will be."""
    values = [np.asarray(mask.numpy()) for mask in wrapper.masks]
    size = sum(int(v.size) for v in values)
    return size - sum(int(np.count_nonzero(v)) for v in values), size


def final_step(wrapper):
    """The training step at which ``wrapper``'s masks first reach their final sparsity."""
    return max(1 if row.method == "m_by_n" else row.schedule.final_step
               for row in wrapper.rows.values())


def _value(variable):
    return int(np.asarray(variable.numpy()))


def pruning_step(wrapper):
    """The step a wrapper's schedule has reached."""
    return _value(wrapper.pruning_step)


sync_state = helpers.sync_state


def training_step(model):
    """How many training steps a Keras 3 ``model`` has run: its optimizer's ``iterations``
    (the wrappers' largest ``pruning_step`` if it has no optimizer), as the tf_keras
    engine reads a tf_keras model's.

    Example:
        >>> before = training_step(pruned); pruned.fit(x, y, callbacks=callbacks(pruned))
        >>> training_step(pruned) - before          # the steps of that fit
        469
    """
    helpers.sync_state(model)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        return _value(optimizer.iterations)
    return max([0, *(pruning_step(wrapper) for _, wrapper in wrapped_layers(model))])


# written once for both engines, on Keras 3's Callback
SparsityLogger, ScheduleGuard = callback_classes(keras.callbacks.Callback, sys.modules[__name__])


def callbacks(model, *, log_dir=None, log_sparsity=True, strict=False):
    """What a Keras 3 ``fit`` needs to prune ``model`` (``kprune.callbacks`` gives these for
    a Keras 3 model).

    Args:
        model: the pruned Keras 3 model (from ``kprune.apply``).
        log_dir: add Keras's own TensorBoard callback there; it shows the sparsity logs.
        log_sparsity: add :class:`SparsityLogger`.
        strict: make :class:`ScheduleGuard` raise, instead of warn, when a fit ends short.

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=callbacks(pruned))
    """
    helpers.check_model(model, graph=False)
    if not wrapped_layers(model):
        raise ValueError(
            "Argument `model` has no kprune pruning layers; pass the model returned by "
            f"kprune.apply. Received: model={model.name!r}"
        )
    result = [UpdatePruningStep(), ScheduleGuard(strict=strict)]
    if log_sparsity:
        result.append(SparsityLogger())
    if log_dir is not None:
        result.append(keras.callbacks.TensorBoard(log_dir=str(log_dir)))
    return result
