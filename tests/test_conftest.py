"""The closing line for tests skipped without MNIST, and the count that .ci/run checks."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SKIP_COUNT_KEY, missing_mnist_line

CONFTEST = Path(__file__).with_name("conftest.py")


def test_the_line_says_how_many_and_why():
    assert missing_mnist_line(0) == ""
    assert missing_mnist_line(1) == (
        "1 test was skipped: official MNIST not found at ../shared/data/mnist (see README); "
        "the tests that train on it did not run")
    assert missing_mnist_line(7).startswith("7 tests were skipped: official MNIST not found")


def run_pytest(clone):
    """pytest, as a subprocess, in a throwaway clone holding only our conftest and 3 tests."""
    (clone / "tests").mkdir(parents=True)
    shutil.copy(CONFTEST, clone / "tests" / "conftest.py")
    (clone / "tests" / "test_some.py").write_text(
        "import pytest\n"
        "def test_needs_mnist(mnist_dir): pass\n"
        "def test_also_needs_mnist(mnist_dir): pass\n"
        "def test_plain(): pass\n"
        "def test_skipped_for_another_reason(): pytest.skip('not today')\n"
    )
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests"], cwd=clone,
                            capture_output=True, text=True, timeout=120)
    count = clone / ".pytest_cache" / "v" / SKIP_COUNT_KEY
    return result, json.loads(count.read_text()) if count.is_file() else None


@pytest.mark.slow
@pytest.mark.parametrize("with_mnist", [False, True])
def test_a_run_without_mnist_ends_with_one_line_and_records_the_count(tmp_path, with_mnist):
    if with_mnist:  # an empty folder where the conftest looks: the fixture does not skip
        (tmp_path / "shared" / "data" / "mnist").mkdir(parents=True)
    result, count = run_pytest(tmp_path / "clone")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    closing = [line for line in lines if "official MNIST not found" in line]
    if with_mnist:
        assert count == 0 and not closing, result.stdout
        assert lines[-1].startswith("3 passed, 1 skipped")
    else:
        assert count == 2
        assert closing == [missing_mnist_line(2)], result.stdout
        assert lines[-2:-1] == closing  # just above pytest's own "1 passed, 3 skipped"
        assert lines[-1].startswith("1 passed, 3 skipped")
