"""Seeded runs: the same seed gives the same masks and weights, another seed other ones."""

import numpy as np
import pytest

from kprune.engines import seeding


def test_epoch_order_depends_on_the_seed_and_the_epoch_only():
    first = seeding.epoch_order(100, seed=1, epoch=3)
    assert sorted(first) == list(range(100))
    assert (first == seeding.epoch_order(100, seed=1, epoch=3)).all()
    assert not (first == seeding.epoch_order(100, seed=1, epoch=4)).all()
    assert not (first == seeding.epoch_order(100, seed=2, epoch=3)).all()


def test_op_determinism_is_on_in_the_block_and_restored_after():
    from kprune.engines.tfkeras import loader

    assert not loader.tf_config.is_op_determinism_enabled()
    with seeding.deterministic(0):
        assert loader.tf_config.is_op_determinism_enabled()
    assert not loader.tf_config.is_op_determinism_enabled()
    with pytest.raises(ValueError, match=r"`seed`"):
        seeding.set_seed(-1)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_masks_and_weights(mnist_small):
    from kprune.experiments import models
    from kprune.methods import workflows

    (x, y), (x_val, y_val) = mnist_small

    def run(seed):
        seeding.set_seed(0)  # the same initial weights; the seed below drives the fit
        trainer = workflows.Trainer(x[:500], y[:500], validation_data=(x_val[:200], y_val[:200]),
                                    batch_size=50, seed=seed)
        result = workflows.gradual(models.build("lenet-300-100"), 0.8, trainer=trainer, epochs=1)
        return result.model.get_weights()

    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a != 0, b != 0) for a, b in zip(first, other))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_a_seed_with_your_own_fit_is_refused():
    from kprune.methods.trainer import Trainer

    with pytest.raises(ValueError, match=r"`seed` makes the built-in fit deterministic; with "
                                         r"your own `fit`, seed your data pipeline yourself"):
        Trainer(fit=lambda model, epochs, callbacks: None, steps_per_epoch=3, seed=0)
