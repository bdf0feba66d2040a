"""Shared fixtures. TensorFlow is imported only by the `seeded` fixture.

Without the official MNIST at ../shared/data/mnist every test that needs it (the slow
ones: integration, notebooks, demo, benchmarks) is skipped; the run then ends with one
line that says how many and why, and records the count in the pytest cache
(``kprune/skipped_for_missing_mnist``), which ``.ci/run`` checks is 0.
"""

from pathlib import Path

import numpy as np
import pytest

MNIST_DIR = (Path(__file__).parents[1] / ".." / "shared" / "data" / "mnist").resolve()
MISSING_MNIST = "official MNIST not found at ../shared/data/mnist"
SKIP_COUNT_KEY = "kprune/skipped_for_missing_mnist"  # in the pytest cache; read by .ci/run


@pytest.fixture(scope="session")
def mnist_dir():
    """The official MNIST IDX files at ../shared/data/mnist; skips if absent."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"{MISSING_MNIST} ({MNIST_DIR})")
    return MNIST_DIR


def skipped_for_missing_mnist(reports):
    """How many of these skipped-test reports were skipped because MNIST is missing."""
    return sum(MISSING_MNIST in str(report.longrepr) for report in reports)


def missing_mnist_line(count):
    """The closing line of a run that skipped ``count`` tests for want of MNIST ('' if 0)."""
    if not count:
        return ""
    tests = "test was" if count == 1 else "tests were"
    return (f"{count} {tests} skipped: {MISSING_MNIST} (see README); "
            "the tests that train on it did not run")


def pytest_terminal_summary(terminalreporter, config):
    count = skipped_for_missing_mnist(terminalreporter.stats.get("skipped", []))
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache.set(SKIP_COUNT_KEY, count)
    line = missing_mnist_line(count)
    if line:
        terminalreporter.write_line(line, yellow=True, bold=True)


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
