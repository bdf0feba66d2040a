"""The callbacks a tf_keras ``fit`` needs to prune with tfmot: tfmot's ``UpdatePruningStep``,
sparsity logs and the check that every schedule was completed (``kprune.callbacks`` gives
them for a tf_keras model).

Example:
    >>> history = pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> history.history["sparsity/fc1"]
"""

import sys

import numpy as np

from kprune.core import layers
from kprune.core.pruning_logs import callback_classes
from kprune.engines.tfkeras import loader

__all__ = ["callbacks", "SparsityLogger", "ScheduleGuard", "wrapped_layers", "mask_sparsity",
           "final_step", "training_step", "pruning_step", "masked_layers", "sync_state",
           "kernel_masks"]


def wrapped_layers(model):
    """``(path, wrapper)`` for every tfmot pruning wrapper in ``model``, nested ones included."""
    return [
        (path, layer)
        for path, layer in loader.iter_layers(model)
        if isinstance(layer, loader.PruneLowMagnitude)
    ]


masked_layers = wrapped_layers  # tfmot's masks live in its wrappers


def kernel_masks(model):
    """``{layer path: {weight label: keep-mask}}`` of every tfmot wrapper in ``model``.

    Example:
        >>> kernel_masks(pruned)["fc1"]["kernel"].mean()   # the fraction kept
        0.5
    """
    out = {}
    for path, wrapper in wrapped_layers(model):
        by_id = {id(w.variable): w.label for w in layers.prunable_weights(wrapper)}
        out[path] = {by_id[id(weight)]: np.asarray(mask.numpy()) != 0
                     for weight, mask, _ in wrapper.pruning_vars if id(weight) in by_id}
    return out


def mask_sparsity(wrapper):
    """``(zeros, size)`` of a wrapper's kernel mask: what the pruned kernel will be."""
    zeros = size = 0
    for _, mask, _ in wrapper.pruning_vars:
        values = np.asarray(mask.numpy())
        zeros += int(values.size - np.count_nonzero(values))
        size += int(values.size)
    return zeros, size


def final_step(wrapper):
    """The training step at which ``wrapper``'s mask first reaches its final sparsity.

    tfmot computes an N:M mask at step 1; a ``ConstantSparsity`` prunes to its target at
    ``begin_step``; a ``PolynomialDecay`` reaches its target at ``end_step``.
    """
    if wrapper.sparsity_m_by_n:
        return 1
    config = wrapper.pruning_schedule.get_config()["config"]
    if isinstance(wrapper.pruning_schedule, loader.tfmot.sparsity.keras.ConstantSparsity):
        return int(config["begin_step"])
    return int(config["end_step"])


def pruning_step(wrapper):
    """The step a tfmot wrapper's schedule has reached."""
    return int(loader.keras.backend.get_value(wrapper.pruning_step))


def sync_state(model):
    """Nothing to do: a tf_keras model's variables always hold their current values."""


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
        return int(loader.keras.backend.get_value(optimizer.iterations))
    return max([0, *(pruning_step(wrapper) for _, wrapper in wrapped_layers(model))])


# written once for both engines, on tf_keras's Callback
SparsityLogger, ScheduleGuard = callback_classes(loader.keras.callbacks.Callback,
                                                 sys.modules[__name__])


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
    loader.check_model(model)
    result = [loader.tfmot.sparsity.keras.UpdatePruningStep(), ScheduleGuard(strict=strict)]
    if log_sparsity:
        result.append(SparsityLogger())
    if log_dir is not None:
        result.append(loader.tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir)))
    return result
