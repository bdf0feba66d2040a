"""Shared fixtures. TensorFlow is imported only by the `seeded` fixture.

Without the official MNIST at ../shared/data/mnist every test that needs it (the slow
ones: integration, notebooks, demo, benchmarks) is skipped; the run then ends with one
line that says how many and why, and records the count in the pytest cache
(``kprune/skipped_for_missing_mnist``), which ``.ci/run`` checks is 0.

Every other skip is recorded too (``kprune/skips``: test and reason), and those whose
reason is not on the allow-list ``tests/allowed_skips.txt`` (``kprune/unlisted_skips``):
``.ci/run`` fails on any of them, so a file that skips itself whole cannot go unseen.
"""

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest

MNIST_DIR = (Path(__file__).parents[1] / ".." / "shared" / "data" / "mnist").resolve()
MISSING_MNIST = "official MNIST not found at ../shared/data/mnist"
SKIP_COUNT_KEY = "kprune/skipped_for_missing_mnist"  # in the pytest cache; read by .ci/run
SKIPS_KEY = "kprune/skips"                   # every skip: [test, reason]
UNLISTED_SKIPS_KEY = "kprune/unlisted_skips"  # those not on the allow-list; .ci/run wants []
ALLOWED_SKIPS = Path(__file__).with_name("allowed_skips.txt")


@pytest.fixture(scope="session")
def mnist_dir():
    """The official MNIST IDX files at ../shared/data/mnist; skips if absent."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"{MISSING_MNIST} ({MNIST_DIR})")
    return MNIST_DIR


@pytest.fixture(scope="session")
def jax_compilation_cache(tmp_path_factory):
    """Environment variables that give this run's JAX subprocesses a persistent compilation
    cache: a later subprocess loads the XLA executables that an earlier one compiled for the
    same programs (a layer's initializer at one shape, a training step of one model) instead
    of compiling them again (measured: the README's Keras 3 example on JAX after the seed
    CNN run, 51 s -> 40 s of CPU). One folder per xdist worker, whose subprocesses run one at
    a time: no two processes write an entry at once."""
    folder = tmp_path_factory.mktemp("jax-compilation-cache")
    return {"JAX_COMPILATION_CACHE_DIR": str(folder),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # every program, not only > 1 s
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture
def jax_env(jax_compilation_cache):
    """The environment of a subprocess on Keras 3's JAX backend, with the run's compilation
    cache. JAX is in the dev extra: a missing JAX fails the test (it is not skipped)."""
    if importlib.util.find_spec("jax") is None:
        pytest.fail("JAX is not installed; it is in the dev extra: pip install -e '.[dev]'")
    return {**os.environ, **jax_compilation_cache, "KERAS_BACKEND": "jax"}


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


def skip_reason(report):
    """The reason a skipped-test report gives (pytest's "Skipped: " prefix removed)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def parse_allowed_skips(text):
    """The allowed skip reasons of an allow-list: one per line, ``reason | why it may
    skip``; blank lines and ``#`` comments are ignored. A line without its why is refused."""
    allowed = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        reason, _, why = (part.strip() for part in line.partition("|"))
        if not reason or not why:
            raise ValueError(f"allowed_skips.txt line {number}: write `reason | why it may "
                             f"skip`. Received: {line!r}")
        allowed.append(reason)
    return allowed


def unlisted_skips(skips, allowed):
    """The ``(test, reason)`` pairs of ``skips`` whose reason is not exactly one of
    ``allowed``."""
    return [[test, reason] for test, reason in skips if reason not in allowed]


#: Under xdist, on the controller: worker id -> [seconds of its tests' setup, call and
#: teardown, seconds from the session's start to its last report]. The closing line says
#: how busy each worker was and when it finished: a long gap between the two finishing
#: times is a tail that test order could shorten.
_WORKERS = {}
_SESSION_START = []


def pytest_sessionstart(session):
    _SESSION_START.append(time.monotonic())


def pytest_runtest_logreport(report):
    gateway = getattr(getattr(report, "node", None), "gateway", None)  # set by xdist
    if gateway is None or not _SESSION_START:
        return
    busy, _ = _WORKERS.get(gateway.id, (0.0, 0.0))
    _WORKERS[gateway.id] = (busy + report.duration, time.monotonic() - _SESSION_START[0])


def worker_balance_line(workers):
    """One line on how the xdist workers shared the run ('' without workers).

    Example:
        >>> worker_balance_line({"gw1": (590.0, 601.0), "gw0": (600.2, 610.4)})
        'xdist workers: gw0 busy 600 s, done at 610 s; gw1 busy 590 s, done at 601 s'
    """
    return ("xdist workers: " + "; ".join(
        f"{worker} busy {busy:.0f} s, done at {done:.0f} s"
        for worker, (busy, done) in sorted(workers.items()))) if workers else ""


def pytest_terminal_summary(terminalreporter, config):
    if _WORKERS:
        terminalreporter.write_line(worker_balance_line(_WORKERS))
    skipped = terminalreporter.stats.get("skipped", [])
    count = skipped_for_missing_mnist(skipped)
    skips = [[report.nodeid, skip_reason(report)] for report in skipped]
    allowed = parse_allowed_skips(ALLOWED_SKIPS.read_text()) if ALLOWED_SKIPS.is_file() else []
    unlisted = unlisted_skips(skips, allowed)
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache.set(SKIP_COUNT_KEY, count)
        cache.set(SKIPS_KEY, skips)
        cache.set(UNLISTED_SKIPS_KEY, unlisted)
    for test, reason in unlisted:
        if MISSING_MNIST not in reason:  # those are summed up in the closing line
            terminalreporter.write_line(f"skipped for a reason not in tests/allowed_skips.txt: "
                                        f"{test}: {reason}", yellow=True)
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
    """Seed Python, numpy and TensorFlow (through kprune.engines.tfkeras.loader) with 0."""
    from kprune.engines.tfkeras import loader

    loader.keras.utils.set_random_seed(0)
    np.random.seed(0)
    return 0
