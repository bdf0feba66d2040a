"""What a pruning fit tells its user, on either engine: each layer's sparsity in the Keras
logs, and a warning (or error) when a fit ends before a schedule reached its target.

Both engines' callbacks write through these two functions, so a History, CSVLogger or
TensorBoard reads the same keys and the same message whichever Keras trained the model;
:func:`callback_classes` writes the two callbacks that do it once, for either engine's
Callback class.

Example:
    >>> logs = {}
    >>> write_sparsity_logs(logs, [("fc1", 3, 4), ("fc2", 1, 4)])
    >>> logs
    {'sparsity/fc1': 0.75, 'sparsity/fc2': 0.25, 'sparsity': 0.5}
"""

import warnings

__all__ = ["ScheduleWarning", "write_sparsity_logs", "report_short", "callback_classes"]


class ScheduleWarning(UserWarning):
    """A pruning fit ended before a layer's schedule reached its final sparsity."""


def write_sparsity_logs(logs, counts):
    """Write ``sparsity/<path>`` and overall ``sparsity`` into ``logs`` from
    ``(path, zeros, size)`` of each pruned layer's masks.

    Example:
        >>> logs = {}; write_sparsity_logs(logs, [("conv", 0, 8)]); logs["sparsity"]
        0.0
    """
    total_zeros = total_size = 0
    for path, zeros, size in counts:
        logs[f"sparsity/{path}"] = zeros / size if size else 0.0
        total_zeros, total_size = total_zeros + zeros, total_size + size
    logs["sparsity"] = total_zeros / total_size if total_size else 0.0


def report_short(short, steps, *, strict):
    """Warn (:class:`ScheduleWarning`), or raise RuntimeError if ``strict``, that the layers
    in ``short`` (``"path at step N of M (K steps short)"``) ended a fit of ``steps`` steps
    below their final sparsity. Nothing when ``short`` is empty.

    Example:
        >>> report_short(["fc1 at step 4 of 6 (2 steps short)"], 4, strict=True)
        Traceback (most recent call last):
        RuntimeError: Pruning stopped short of the plan's final sparsity: fc1 at step 4 ...
    """
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


def callback_classes(base, engine):
    """``(SparsityLogger, ScheduleGuard)``: the two callbacks, as subclasses of ``base`` (a
    Keras ``Callback`` class), for the engine whose callbacks module is ``engine``.

    ``engine`` gives ``wrapped_layers(model)`` (``(path, wrapper)`` pairs),
    ``masked_layers(model)`` (``(path, layer)`` of every layer that holds masks),
    ``mask_sparsity(layer)`` (``(zeros, size)``), ``pruning_step(wrapper)``,
    ``final_step(wrapper)``, ``training_step(model)`` and ``sync_state(model)``; the classes
    are named as living there (their ``__module__``).

    Example:
        >>> SparsityLogger, ScheduleGuard = callback_classes(keras.callbacks.Callback,
        ...                                                  sys.modules[__name__])
    """

    class SparsityLogger(base):
        """Writes ``sparsity/<layer>`` and overall ``sparsity`` into the epoch's Keras logs.

        Because it reports through ``logs``, History, CSVLogger and TensorBoard all see the
        values; put it before a CSVLogger in the callbacks list.
        """

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                engine.sync_state(self.model)
                write_sparsity_logs(logs, [(path, *engine.mask_sparsity(layer))
                                           for path, layer in engine.masked_layers(self.model)])

    class ScheduleGuard(base):
        """At the end of ``fit``, checks that every pruned layer reached its final step.

        A schedule is derived from ``steps_per_epoch * epochs``; a fit that runs fewer steps
        (``validation_split``, a ``drop_remainder`` dataset, a shorter generator) ends below
        the target, which nothing else would notice. Warns (``ScheduleWarning``) by
        default; raises RuntimeError with ``strict=True``.

        It has no per-batch hook (a callback overriding ``on_train_batch_end`` makes Keras
        call Python after every step, and stops Keras 3 from dispatching batch-end callbacks
        asynchronously): the steps of a fit are read from the engine's ``training_step``
        at its start and end.

        Example:
            >>> pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks(strict=True))
        """

        def __init__(self, *, strict=False):
            super().__init__()
            self.strict = strict
            self.steps = 0
            self._first_step = 0

        def on_train_begin(self, logs=None):
            self.steps = 0
            self._first_step = engine.training_step(self.model)

        def on_train_end(self, logs=None):
            self.steps = engine.training_step(self.model) - self._first_step
            short = []
            for path, wrapper in engine.wrapped_layers(self.model):
                reached = engine.pruning_step(wrapper)
                needed = engine.final_step(wrapper)
                if reached < needed:
                    short.append(f"{path} at step {reached} of {needed} "
                                 f"({needed - reached} steps short)")
            report_short(short, self.steps, strict=self.strict)

    for cls in (SparsityLogger, ScheduleGuard):
        cls.__module__ = engine.__name__
        cls.__qualname__ = cls.__name__
    return SparsityLogger, ScheduleGuard
