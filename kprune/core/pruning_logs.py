"""What a pruning fit tells its user, on either engine: each layer's sparsity in the Keras
logs, and a warning (or error) when a fit ends before a schedule reached its target.

Both engines' callbacks write through these two functions, so a History, CSVLogger or
TensorBoard reads the same keys and the same message whichever Keras trained the model.

Example:
    >>> logs = {}
    >>> write_sparsity_logs(logs, [("fc1", 3, 4), ("fc2", 1, 4)])
    >>> logs
    {'sparsity/fc1': 0.75, 'sparsity/fc2': 0.25, 'sparsity': 0.5}
"""

import warnings

__all__ = ["ScheduleWarning", "write_sparsity_logs", "report_short"]


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
