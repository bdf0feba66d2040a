"""Deterministic runs: one seed for Python, numpy and TensorFlow, and deterministic ops.

With the same seed, on the same machine, TensorFlow version and strategy, two pruning
runs give identical weights and masks: :func:`deterministic` seeds every generator
(``tf_keras.utils.set_random_seed``) and turns on TensorFlow's op determinism for the
duration of the block (it is switched back off afterwards if it was off before, as it
slows some ops down and refuses a few that have no deterministic kernel).
:func:`epoch_order` is the shuffle of each epoch, a function of the seed and the epoch
alone, so a run resumed at epoch ``k`` sees the same batches as one never interrupted.

Example:
    >>> with deterministic(0):
    ...     result = workflows.gradual(model, 0.8, trainer=trainer, epochs=2)
"""

import contextlib

import numpy as np

from kprune import _compat
from kprune.core.checks import check_int

__all__ = ["deterministic", "set_seed", "epoch_order"]


def set_seed(seed):
    """Seed Python's ``random``, numpy and TensorFlow with ``seed`` (a non-negative int).

    Example:
        >>> set_seed(0)
    """
    check_int(seed, "seed", minimum=0)
    _compat.keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def deterministic(seed):
    """Seed everything with ``seed`` and run TensorFlow ops deterministically in the block.

    Example:
        >>> with deterministic(3):
        ...     model.fit(x, y, epochs=1)
    """
    set_seed(seed)
    config = _compat.tf_config
    was_on = config.is_op_determinism_enabled()
    config.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            config.disable_op_determinism()


def epoch_order(n_examples, *, seed, epoch):
    """The order in which epoch ``epoch`` of a seeded fit visits ``n_examples`` examples.

    Example:
        >>> (epoch_order(5, seed=0, epoch=1) == epoch_order(5, seed=0, epoch=1)).all()
        True
    """
    return np.random.default_rng([seed, epoch]).permutation(n_examples)
