"""The closing line for tests skipped without MNIST, the count that .ci/run checks, and the
allow-list of skips that .ci/run accepts."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    ALLOWED_SKIPS,
    SKIP_COUNT_KEY,
    UNLISTED_SKIPS_KEY,
    missing_mnist_line,
    parse_allowed_skips,
    unlisted_skips,
    worker_balance_line,
)

CONFTEST = Path(__file__).with_name("conftest.py")
CI_RUN = Path(__file__).parents[1] / ".ci" / "run"


def test_the_line_says_how_many_and_why():
    assert missing_mnist_line(0) == ""
    assert missing_mnist_line(1) == (
        "1 test was skipped: official MNIST not found at ../shared/data/mnist (see README); "
        "the tests that train on it did not run")
    assert missing_mnist_line(7).startswith("7 tests were skipped: official MNIST not found")


def test_the_worker_line_says_how_busy_each_worker_was_and_when_it_finished():
    assert worker_balance_line({}) == ""
    assert worker_balance_line({"gw1": (590.4, 1211.6), "gw0": (1180.0, 1190.2)}) == (
        "xdist workers: gw0 busy 1180 s, done at 1190 s; gw1 busy 590 s, done at 1212 s")


def test_skips_off_the_allow_list_are_named_with_their_test():
    allowed = parse_allowed_skips("# a comment\n\nPOSIX signals | not on Windows\n"
                                  "no GPU here | CI machines have none\n")
    assert allowed == ["POSIX signals", "no GPU here"]
    skips = [["t.py::a", "POSIX signals"], ["t.py", "could not import 'keras': No module"],
             ["t.py::b", "POSIX signals on Tuesdays"], ["t.py::c", "no GPU here"]]
    assert unlisted_skips(skips, allowed) == [["t.py", "could not import 'keras': No module"],
                                              ["t.py::b", "POSIX signals on Tuesdays"]]
    assert unlisted_skips([], allowed) == [] and unlisted_skips(skips[:1], []) == skips[:1]


@pytest.mark.parametrize("line", ["POSIX signals", "POSIX signals |", "| not on Windows"])
def test_an_allowed_skip_needs_its_reason_and_why(line):
    with pytest.raises(ValueError, match=r"line 2: write `reason \| why it may skip`"):
        parse_allowed_skips(f"# skips\n{line}\n")


def test_the_allow_list_is_short_and_says_why():
    allowed = parse_allowed_skips(ALLOWED_SKIPS.read_text())
    assert allowed == ["POSIX signals",  # widen it in review, not by accident
                       "torch or torch_pruning is not installed (the peers extra: "
                       "pip install -e '.[peers]')"]


def run_pytest(clone, allowed=""):
    """pytest, as a subprocess, in a throwaway clone holding only our conftest and 4 tests;
    ``allowed`` is the clone's tests/allowed_skips.txt."""
    (clone / "tests").mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFTEST, clone / "tests" / "conftest.py")
    (clone / "tests" / "allowed_skips.txt").write_text(allowed)
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


def ci_check_skips(clone):
    """``.ci/run --check-skips`` on the clone's pytest cache."""
    (clone / ".ci").mkdir(exist_ok=True)
    shutil.copy(CI_RUN, clone / ".ci" / "run")
    return subprocess.run(["bash", str(clone / ".ci" / "run"), "--check-skips"],
                          capture_output=True, text=True, timeout=60)


def test_ci_fails_on_a_skip_off_the_allow_list(tmp_path):
    (tmp_path / "shared" / "data" / "mnist").mkdir(parents=True)  # MNIST "found"
    clone = tmp_path / "clone"
    result, _ = run_pytest(clone)
    assert ("skipped for a reason not in tests/allowed_skips.txt: "
            "tests/test_some.py::test_skipped_for_another_reason: not today") in result.stdout
    unlisted = json.loads((clone / ".pytest_cache" / "v" / UNLISTED_SKIPS_KEY).read_text())
    assert unlisted == [["tests/test_some.py::test_skipped_for_another_reason", "not today"]]
    refused = ci_check_skips(clone)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "CI: 1 test(s) skipped for a reason not in tests/allowed_skips.txt:",
        "  tests/test_some.py::test_skipped_for_another_reason: not today"]

    result, _ = run_pytest(clone, allowed="not today | the test says so\n")
    assert result.returncode == 0, result.stdout
    accepted = ci_check_skips(clone)
    assert accepted.returncode == 0, accepted.stderr
    assert "1 test(s) skipped, each for a reason in tests/allowed_skips.txt" in accepted.stdout
