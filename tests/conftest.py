"""Shared fixtures. TensorFlow is imported only by the `seeded` fixture."""

from pathlib import Path

import numpy as np
import pytest

MNIST_DIR = (Path(__file__).parents[1] / ".." / "shared" / "data" / "mnist").resolve()


@pytest.fixture(scope="session")
def mnist_dir():
    """The official MNIST IDX files at ../shared/data/mnist; skips if absent."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST files not found at {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist_small(mnist_dir):
    """First 4,000 train / 2,000 test MNIST images, float32 in [0, 1], (N, 28, 28, 1)."""
    from kprune.experiments.data import load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist(mnist_dir, verbose=False)
    return (x_train[:4000], y_train[:4000]), (x_test[:2000], y_test[:2000])


@pytest.fixture
def seeded():
    """Seed Python, numpy and TensorFlow (through kprune._compat) with 0."""
    from kprune import _compat

    _compat.keras.utils.set_random_seed(0)
    np.random.seed(0)
    return 0
