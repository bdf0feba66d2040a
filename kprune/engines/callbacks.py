"""The callbacks a Keras ``fit`` needs to prune, and a helper for custom training loops.

Example:
    >>> history = pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> history.history["sparsity"]          # overall, per epoch
    >>> history.history["sparsity/fc1"]      # one layer
"""

import numpy as np

from kprune import _compat

__all__ = ["callbacks", "SparsityLogger", "PruningStepper", "wrapped_layers"]


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
        if logs is None:
            return
        total_zeros = total_size = 0
        for path, wrapper in wrapped_layers(self.model):
            zeros, size = mask_sparsity(wrapper)
            logs[f"sparsity/{path}"] = zeros / size if size else 0.0
            total_zeros, total_size = total_zeros + zeros, total_size + size
        logs["sparsity"] = total_zeros / total_size if total_size else 0.0


def callbacks(*, log_dir=None, log_sparsity=True):
    """What ``model.fit`` needs to prune: tfmot's ``UpdatePruningStep`` and sparsity logs.

    Args:
        log_dir: also write tfmot's TensorBoard pruning summaries there.
        log_sparsity: add :class:`SparsityLogger` (per-layer and overall sparsity in logs).

    Without ``UpdatePruningStep`` tfmot fails with an InvalidArgumentError at the first batch.

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks(log_dir="logs"))
    """
    result = [_compat.tfmot.sparsity.keras.UpdatePruningStep()]
    if log_sparsity:
        result.append(SparsityLogger())
    if log_dir is not None:
        result.append(_compat.tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir)))
    return result


class PruningStepper:
    """Pruning in a custom training loop (no ``fit``), which tfmot leaves to you.

    Call the model with ``training=True`` in your step: the wrappers count steps and
    update masks themselves. ``begin()`` (or entering the ``with`` block) arms them;
    ``end_epoch()`` (or leaving the block) writes the masks into the kernels.

    Example:
        >>> with kprune.PruningStepper(pruned) as stepper:
        ...     for epoch in range(2):
        ...         for x, y in dataset:
        ...             train_step(x, y)          # uses pruned(x, training=True)
        ...         stepper.end_epoch()
    """

    def __init__(self, model):
        _compat.check_model(model)
        if not wrapped_layers(model):
            raise ValueError(
                "Argument `model` has no pruning wrappers; pass the model returned by "
                f"kprune.apply. Received: model={model.name!r}"
            )
        self._update = _compat.tfmot.sparsity.keras.UpdatePruningStep()
        self._update.set_model(model)

    def begin(self):
        self._update.on_train_begin()
        return self

    def end_epoch(self):
        self._update.on_epoch_end(0)

    def __enter__(self):
        return self.begin()

    def __exit__(self, *exc):
        self.end_epoch()
        return False
