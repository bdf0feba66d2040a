"""The callbacks a Keras ``fit`` needs to prune, and a helper for custom training loops.

Example:
    >>> history = pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> history.history["sparsity"]          # overall, per epoch
    >>> history.history["sparsity/fc1"]      # one layer
"""

import warnings

import numpy as np

from kprune import _compat
from kprune.core.checks import is_keras3
from kprune.engines import distribute

__all__ = ["callbacks", "SparsityLogger", "ScheduleGuard", "ScheduleWarning", "PruningStepper",
           "wrapped_layers", "final_step", "training_step", "write_sparsity_logs",
           "report_short"]


class ScheduleWarning(UserWarning):
    """A pruning fit ended before a layer's schedule reached its final sparsity."""


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


def write_sparsity_logs(logs, counts):
    """Write ``sparsity/<path>`` and overall ``sparsity`` into ``logs`` from
    ``(path, zeros, size)`` of each pruned layer's masks (both engines' loggers use it)."""
    total_zeros = total_size = 0
    for path, zeros, size in counts:
        logs[f"sparsity/{path}"] = zeros / size if size else 0.0
        total_zeros, total_size = total_zeros + zeros, total_size + size
    logs["sparsity"] = total_zeros / total_size if total_size else 0.0


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
    the target, which nothing else would notice. Warns (:class:`ScheduleWarning`) by
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
        >>> before = training_step(pruned); pruned.fit(x, y, epochs=1, callbacks=callbacks())
        >>> training_step(pruned) - before          # the steps of that fit
        469
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        return int(_compat.keras.backend.get_value(optimizer.iterations))
    steps = [int(_compat.keras.backend.get_value(wrapper.pruning_step))
             for _, wrapper in wrapped_layers(model)]
    return max([0, *steps])


def report_short(short, steps, *, strict):
    """Warn (or raise, if ``strict``) that the layers in ``short`` (``"path at step N of M
    (K steps short)"``) ended a fit of ``steps`` steps below their final sparsity."""
    if not short:
        return
    message = (
        f"Pruning stopped short of the plan's final sparsity: {'; '.join(short)}. This "
        f"fit ran {steps} training steps; the schedules were derived for more "
        "(kprune.apply's steps_per_epoch x epochs). Steps per epoch differ when fit uses "
        "validation_split, a drop_remainder dataset or a shorter generator: pass the "
        "real number of batches per epoch to kprune.apply."
    )
    if strict:
        raise RuntimeError(message)
    warnings.warn(message, ScheduleWarning, stacklevel=3)


def callbacks(model=None, *, log_dir=None, log_sparsity=True, strict=False):
    """What ``model.fit`` needs to prune: tfmot's ``UpdatePruningStep``, sparsity logs and a
    check that the schedules were really completed.

    Args:
        model: the pruned model the callbacks are for. Needed for a Keras 3 model (it
            selects kprune's Keras 3 engine); optional for tf_keras (tfmot) models.
        log_dir: also write tfmot's TensorBoard pruning summaries there.
        log_sparsity: add :class:`SparsityLogger` (per-layer and overall sparsity in logs).
        strict: make :class:`ScheduleGuard` raise, instead of warn, when a fit ends
            before a layer reached its final sparsity.

    Without ``UpdatePruningStep`` tfmot fails with an InvalidArgumentError at the first batch.

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks(log_dir="logs"))
        >>> keras3_pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks(keras3_pruned))
    """
    if model is not None and is_keras3(model):
        from kprune.engines.keras3 import callbacks as keras3_callbacks

        return keras3_callbacks.callbacks(model, log_dir=log_dir, log_sparsity=log_sparsity,
                                          strict=strict)
    if model is not None:
        _compat.check_model(model)
    result = [_compat.tfmot.sparsity.keras.UpdatePruningStep(), ScheduleGuard(strict=strict)]
    if log_sparsity:
        result.append(SparsityLogger())
    if log_dir is not None:
        result.append(_compat.tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir)))
    return result


class PruningStepper:
    """Pruning in a custom training loop (no ``fit``), which tfmot leaves to you.

    Call the model with ``training=True`` in your step, and ``step()`` before it.
    ``begin()`` (or entering the ``with`` block) arms the pruning layers; ``end_epoch()``
    (or leaving the block) writes the masks into the kernels.

    On tf_keras, tfmot's wrappers count steps and update masks themselves (``step()``
    does nothing). On Keras 3 (any backend) ``step()`` advances the step and recomputes
    the masks at the schedule's firing steps, as ``fit`` with ``kprune.callbacks(model)``
    does; it returns True when it changed them (on JAX, a loop that holds the model's
    state itself, through ``stateless_call``, reads ``model.non_trainable_variables``
    again then).

    Example:
        >>> with kprune.PruningStepper(pruned) as stepper:
        ...     for epoch in range(2):
        ...         for x, y in dataset:
        ...             stepper.step()
        ...             train_step(x, y)          # uses pruned(x, training=True)
        ...         stepper.end_epoch()
    """

    def __init__(self, model):
        self._keras3 = is_keras3(model)
        if self._keras3:
            from kprune.engines.keras3 import callbacks as keras3_callbacks

            keras3_callbacks.callbacks(model)  # checks the model and its pruning layers
            self._update = keras3_callbacks.UpdatePruningStep()
        else:
            _compat.check_model(model)
            if not wrapped_layers(model):
                raise ValueError(
                    "Argument `model` has no pruning wrappers; pass the model returned by "
                    f"kprune.apply. Received: model={model.name!r}"
                )
            self._update = _compat.tfmot.sparsity.keras.UpdatePruningStep()
        self._update.set_model(model)

    def begin(self):
        with distribute.scope(self._update.model):
            self._update.on_train_begin()
        return self

    def step(self):
        """Before each training step: on Keras 3, count it and update the masks that
        fire (True when some did); on tf_keras, nothing (False)."""
        if not self._keras3:
            return False
        self._update.on_train_batch_begin(0)
        return any(wrapper.fires_at(self._update.step) for wrapper in self._update.wrappers)

    def end_epoch(self):
        with distribute.scope(self._update.model):  # a cross-replica write under tf.distribute
            self._update.on_epoch_end(0)

    def __enter__(self):
        return self.begin()

    def __exit__(self, *exc):
        self.end_epoch()
        if self._keras3:
            self._update.on_train_end()  # disarms the pruning layers
        return False
