"""Deterministic runs: one seed for Python, numpy and TensorFlow, and deterministic ops.

With the same seed, on the same machine, TensorFlow version and strategy, two pruning
runs give identical weights and masks: :func:`deterministic` seeds every generator
(``tf_keras.utils.set_random_seed``) and turns on TensorFlow's op determinism for the
duration of the block (it is switched back off afterwards if it was off before, as it
slows some ops down and refuses a few that have no deterministic kernel).
:func:`epoch_order` is the shuffle of each epoch, a function of the seed and the epoch
alone, so a run resumed at epoch ``k`` sees the same batches as one never interrupted, and
:class:`EpochSeeds` does the same for the random draws of Dropout and noise layers.

Keras 3 models (``import keras``, TensorFlow or JAX backend) are seeded the same way:
``deterministic(seed, model)`` also seeds Keras 3, and :func:`epoch_seeds` gives the
callback of the model's Keras (on Keras 3 it resets every layer's ``SeedGenerator``).

Example:
    >>> with deterministic(0):
    ...     result = workflows.gradual(model, 0.8, trainer=trainer, epochs=2)
"""

import contextlib

import numpy as np

from kprune.core.checks import check_int
from kprune.engines import engine_of
from kprune.engines.tfkeras import loader

__all__ = ["deterministic", "set_seed", "epoch_order", "EpochSeeds",  # noqa: F822 (__getattr__)
           "epoch_seeds"]


def set_seed(seed, model=None):
    """Seed Python's ``random``, numpy and TensorFlow with ``seed`` (a non-negative int);
    for a Keras 3 ``model``, Keras 3's own generators too (its backend's included).

    Example:
        >>> set_seed(0)
    """
    check_int(seed, "seed", minimum=0)
    # Python, numpy, TensorFlow if installed, and for Keras 3 the backend's generators (no
    # tf_keras needed); no model means tf_keras
    engine_of(model).keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def deterministic(seed, model=None):
    """Seed everything with ``seed`` (see :func:`set_seed`) and run TensorFlow ops
    deterministically in the block.

    Example:
        >>> with deterministic(3):
        ...     model.fit(x, y, epochs=1)
    """
    set_seed(seed, model)
    config = loader.tf_config
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


def epoch_seed(seed, epoch):
    """The seed of epoch ``epoch`` of a run seeded with ``seed`` (a 31-bit int)."""
    return int(np.random.default_rng([seed, epoch, 1]).integers(2**31 - 1))


class _TfRandomEpochs:
    """Random layers draw, in each epoch, what ``(seed, epoch)`` says, whatever came before.

    TensorFlow keeps the state of the random ops Dropout uses inside the compiled train
    step, where no checkpoint can reach it. At the start of every epoch this callback
    seeds TensorFlow with :func:`epoch_seed` and has Keras trace the train step again
    (a fresh random state; a second or so per epoch), and resets any ``tf.random.Generator``
    a layer holds. A fit resumed at epoch ``k`` then draws the dropout masks of one never
    interrupted. Models without random layers skip all of it.

    Example:
        >>> model.fit(x, y, epochs=3, callbacks=[EpochSeeds(0)])
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed
        self._generators = None

    def on_train_begin(self, logs=None):
        self._generators = [layer._random_generator for layer in _all_layers(self.model)
                            if hasattr(layer, "_random_generator")]

    def on_epoch_begin(self, epoch, logs=None):
        if not self._generators:
            return
        seed = epoch_seed(self.seed, epoch)
        loader.tf.random.set_seed(seed)
        for generator in self._generators:
            state = getattr(generator, "_generator", None)
            if isinstance(state, loader.tf.random.Generator):
                state.reset_from_seed(seed)
        self.model.make_train_function(force=True)


def __getattr__(name):  # the tf_keras callback, made (with tf_keras) when first asked for
    if name == "EpochSeeds":
        from kprune.engines.tfkeras import engine as tf_keras_engine

        return tf_keras_engine.callback_class(_TfRandomEpochs, "EpochSeeds")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _all_layers(model):
    """Every layer of ``model``, inside nested models and pruning wrappers too."""
    for layer in model._flatten_layers(include_self=False):
        yield layer
        inner = getattr(layer, "layer", None)
        if inner is not None:
            yield inner


class _SeedGeneratorEpochs:
    """:class:`EpochSeeds` for Keras 3: at the start of every epoch, each layer's
    ``SeedGenerator`` (Dropout's, noise layers') restarts from ``(seed, epoch, its index)``.

    Keras 3 layers keep their random state in these generators' variables, which the
    train step reads (on JAX, once the trainer's state is synchronised), so no retracing
    is needed. A model without random layers does nothing.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed
        self._generators = []

    def on_train_begin(self, logs=None):
        self._generators = [generator for layer in self.model._flatten_layers()
                            for generator in getattr(layer, "_seed_generators", ())]

    def on_epoch_begin(self, epoch, logs=None):
        if not self._generators:
            return
        self._engine.sync_state(self.model)
        for index, generator in enumerate(self._generators):
            start = np.random.default_rng([self.seed, epoch, 2, index]).integers(2**31 - 1)
            generator.state.assign(np.array([start, 0], dtype=generator.state.dtype))


#: What each engine's per-epoch seeding callback does (its name, its methods).
_EPOCH_SEEDS = {"tf_keras": ("EpochSeeds", _TfRandomEpochs),
                "keras3": ("Keras3EpochSeeds", _SeedGeneratorEpochs)}


def epoch_seeds(model, seed):
    """The per-epoch seeding callback of ``model``'s Keras: :class:`EpochSeeds` for
    tf_keras, its Keras 3 counterpart (``SeedGenerator`` states) for Keras 3.

    Example:
        >>> model.fit(x, y, epochs=3, callbacks=[epoch_seeds(model, 0)])
    """
    engine = engine_of(model)
    name, body = _EPOCH_SEEDS[engine.name]
    return engine.callback_class(body, name)(seed)
