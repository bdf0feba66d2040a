"""tf.distribute for pruning: which strategy a model lives in, and working inside it.

A model built inside ``strategy.scope()`` holds distributed (mirrored) variables. Its
clones, its pruning wrappers' masks and the mask writes of ``strip`` must be made in
the same scope: outside it Keras refuses the variables ("was not created in the
distribution strategy scope") and tfmot's mask write fails with ``TypeError: tuple
indices must be integers or slices, not MirroredVariable``. :func:`scope` enters the
model's own strategy (or the one given), and does nothing for a plain model.

Example:
    >>> strategy = distribute.make("mirrored")
    >>> with strategy.scope():
    ...     model = build_model()
    >>> with distribute.scope(model):
    ...     twin = keras.models.clone_model(model)    # mirrored variables too
    >>> distribute.strategy_of(twin) is strategy
    True
"""

import contextlib
import os

from kprune.engines.tfkeras import loader

__all__ = ["STRATEGIES", "make", "strategy_of", "scope", "replica_values"]

#: Strategy names a recipe's ``distribute.strategy`` (and :func:`make`) takes.
STRATEGIES = ("mirrored", "multi-worker")


def make(name):
    """A new ``tf.distribute`` strategy by name: ``"mirrored"`` (every local device: GPUs,
    or the CPU's logical devices) or ``"multi-worker"`` (``MultiWorkerMirroredStrategy``,
    which reads the cluster from the standard ``TF_CONFIG`` environment variable).

    Example:
        >>> strategy = make("mirrored")
        >>> strategy.num_replicas_in_sync          # on two logical CPU devices
        2
    """
    tf = loader.tf
    if name == "mirrored":
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "Strategy 'multi-worker' reads the cluster from the TF_CONFIG environment "
                "variable, which is not set: set it on every worker (see the README, "
                "'Scaling out and resuming'). Received: TF_CONFIG unset"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}: must be one of {list(STRATEGIES)}. "
                     f"Received: strategy={name!r}")


def strategy_of(model):
    """The ``tf.distribute`` strategy ``model`` was built under, or None for a plain model."""
    return getattr(model, "_distribution_strategy", None)


def scope(model=None, strategy=None):
    """A context in ``strategy`` (if given), else in ``model``'s own strategy, else none.

    Entering the scope that is already active is allowed; entering another strategy
    while one is active is refused by TensorFlow.

    Example:
        >>> with scope(model):
        ...     wrapper.pruning_obj.weight_mask_op()   # cross-replica write of the masks
    """
    strategy = strategy if strategy is not None else strategy_of(model)
    if strategy is None:
        return contextlib.nullcontext()
    tf = loader.tf
    if tf.distribute.has_strategy() and tf.distribute.get_strategy() is strategy:
        return contextlib.nullcontext()
    return strategy.scope()


def replica_values(variable):
    """The value each replica holds of ``variable`` (one numpy array for a plain one).

    Example:
        >>> masks = replica_values(wrapper.pruning_vars[0][1])
        >>> all((m == masks[0]).all() for m in masks)     # one mask update for all
        True
    """
    values = getattr(variable, "values", None)
    parts = values if isinstance(values, tuple) else (variable,)
    return [part.numpy() for part in parts]
