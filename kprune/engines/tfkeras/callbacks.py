"""The callbacks a tf_keras ``fit`` needs to prune with tfmot: tfmot's ``UpdatePruningStep``,
sparsity logs and the check that every schedule was completed (``kprune.callbacks`` gives
them for a tf_keras model).

Example:
    >>> history = pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> history.history["sparsity/fc1"]
"""

import numpy as np

from kprune import _compat
from kprune.core.pruning_logs import report_short, write_sparsity_logs

__all__ = ["callbacks", "SparsityLogger", "ScheduleGuard", "wrapped_layers", "mask_sparsity",
           "final_step", "training_step"]


def wrapped_layers(model):
    """``(path, wrapper)`` for every tfmot pruning wrapper in ``model``, nested ones included."""
    return [
        (path, layer)
        for path, layer in _compat.iter_layers(model)
        if isinstance(layer, _compat.PruneLowMagnitude)
    ]


def mask_sparsity(wrapper):
    """``(zeros, size)`` of a wrapper's kernel mask: what the pruned kernel will be."""
    zeros = size = 0
    for _, mask, _ in wrapper.pruning_vars:
        values = np.asarray(mask.numpy())
        zeros += int(values.size - np.count_nonzero(values))
        size += int(values.size)
    return zeros, size


class SparsityLogger(_compat.keras.callbacks.Callback):
    """Writes ``sparsity/<layer>`` and overall ``sparsity`` into the epoch's Keras logs.

    Because it reports through ``logs``, History, CSVLogger and TensorBoard all see the
    values; put it before a CSVLogger in the callbacks list.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            write_sparsity_logs(logs, [(path, *mask_sparsity(wrapper))
                                for path, wrapper in wrapped_layers(self.model)])


def final_step(wrapper):
    """The training step at which ``wrapper``'s mask first reaches its final sparsity.

    tfmot computes an N:M mask at step 1; a ``ConstantSparsity`` prunes to its target at
    ``begin_step``; a ``PolynomialDecay`` reaches its target at ``end_step``.
    """
    if wrapper.sparsity_m_by_n:
        return 1
    config = wrapper.pruning_schedule.get_config()["config"]
    if isinstance(wrapper.pruning_schedule, _compat.tfmot.sparsity.keras.ConstantSparsity):
        return int(config["begin_step"])
    return int(config["end_step"])


class ScheduleGuard(_compat.keras.callbacks.Callback):
    """At the end of ``fit``, checks that every pruned layer reached its final step.

    A schedule is derived from ``steps_per_epoch * epochs``; a fit that runs fewer steps
    (``validation_split``, a ``drop_remainder`` dataset, a shorter generator) ends below
    the target, which nothing else would notice. Warns (``ScheduleWarning``) by
    default; raises RuntimeError with ``strict=True``.

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks(strict=True))
    """

    def __init__(self, *, strict=False):
        super().__init__()
        self.strict = strict
        self.steps = 0
        self._first_step = 0

    # No per-batch hook: a callback overriding on_train_batch_end makes Keras call Python
    # after every step; the steps of this fit are read from the step counters instead.
    def on_train_begin(self, logs=None):
        self.steps = 0
        self._first_step = training_step(self.model)

    def on_train_end(self, logs=None):
        self.steps = training_step(self.model) - self._first_step
        short = []
        for path, wrapper in wrapped_layers(self.model):
            reached = int(_compat.keras.backend.get_value(wrapper.pruning_step))
            needed = final_step(wrapper)
            if reached < needed:
                short.append(f"{path} at step {reached} of {needed} "
                             f"({needed - reached} steps short)")
        report_short(short, self.steps, strict=self.strict)


def training_step(model):
    """How many training steps ``model`` has run: its optimizer's ``iterations`` (the
    wrappers' largest ``pruning_step`` if it has no optimizer), read without a callback
    per batch.

    Example:
        >>> before = training_step(pruned); pruned.fit(x, y, epochs=1, callbacks=callbacks(pruned))
        >>> training_step(pruned) - before          # the steps of that fit
        469
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        return int(_compat.keras.backend.get_value(optimizer.iterations))
    steps = [int(_compat.keras.backend.get_value(wrapper.pruning_step))
             for _, wrapper in wrapped_layers(model)]
    return max([0, *steps])


def callbacks(model, *, log_dir=None, log_sparsity=True, strict=False):
    """What a tf_keras ``fit`` needs to prune ``model`` with tfmot.

    Args:
        model: the pruned tf_keras model (from ``kprune.apply``), checked.
        log_dir: add tfmot's ``PruningSummaries`` (TensorBoard) there.
        log_sparsity: add :class:`SparsityLogger`.
        strict: make :class:`ScheduleGuard` raise, instead of warn, when a fit ends short.

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=callbacks(pruned))
    """
    _compat.check_model(model)
    result = [_compat.tfmot.sparsity.keras.UpdatePruningStep(), ScheduleGuard(strict=strict)]
    if log_sparsity:
        result.append(SparsityLogger())
    if log_dir is not None:
        result.append(_compat.tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir)))
    return result
