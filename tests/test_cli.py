"""The CLI through main([...]) and once as a subprocess."""

import json
import subprocess
import sys

import pytest

from kprune import LayerRule, PruningPlan
from kprune.cli import main


def test_plan_for_a_builtin_model(capsys):
    assert main(["plan", "seed-cnn"]) == 0
    out = capsys.readouterr().out
    assert "fc1" in out and "2:4" in out and "classifier head" in out


def test_plan_from_a_yaml_file_pinned_to_steps(tmp_path, capsys):
    path = tmp_path / "plan.yaml"
    PruningPlan([LayerRule("fc1", target=0.9)]).to_yaml(path)
    assert main(["plan", "lenet-300-100", "--plan", str(path), "--steps-per-epoch", "10",
                 "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "0.90" in out and "steps 1..20" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plan", "seed_cnn"], "Did you mean 'seed-cnn'"),
        (["plan", "missing.keras"], "missing.keras"),
        (["plan", "seed-cnn", "--epochs", "2"], "Give both --steps-per-epoch and --epochs"),
        (["plan", "seed-cnn", "--plan", "nope.yaml"], "Plan file not found"),
        (["demo", "--data", "no/such/folder", "--out", "unused"], "no/such/folder"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_as_a_subprocess():
    for argv in (["--help"], ["plan", "--help"], ["demo", "--help"]):
        result = subprocess.run([sys.executable, "-m", "kprune.cli", *argv],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "usage: kprune" in result.stdout


@pytest.mark.slow
def test_demo_writes_its_summary(tmp_path, mnist_dir, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(mnist_dir)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruned_accuracy"] > 0.9
    assert summary["sparsity"]["ok"] is True
    assert (out / "pruned.keras").is_file()
    assert "accuracy: dense" in capsys.readouterr().out
