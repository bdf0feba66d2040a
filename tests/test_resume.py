"""kprune run --resume: a run killed mid-pruning ends as one never interrupted; bad folders."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import kprune
from kprune.cli import main


def write_recipe(path, data, **changes):
    spec = {
        "model": "lenet-300-100",
        "data": str(data),
        "subset": "{train: 1000, test: 500}",
        "validation": "100",
        "seed": "5",
        "baseline": "{epochs: 1, batch_size: 50}",
        "plan": "{rules: [{match: fc1, target: 0.8}, {match: fc2, method: m_by_n}]}",
        "workflow": "{name: gradual, epochs: 3}",
        "export": "{variants: [float], latency_repeats: 1}",
        "checkpoint_steps": "7",  # 18 steps per epoch: checkpoints at steps 7 and 14 too
    }
    spec.update(changes)
    path.write_text("".join(f"{key}: {value}\n" for key, value in spec.items()))
    return path


def wait_for(pattern, folder, process, timeout=240):
    """The first path matching ``pattern`` in ``folder`` (the process must still run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found[0]
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint {pattern} in {folder} after {timeout} s")


@pytest.mark.slow
def test_a_run_killed_mid_pruning_resumes_to_the_masks_of_an_uninterrupted_one(
        tmp_path, mnist_dir, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", mnist_dir)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["run", str(recipe), "--out", str(whole), "--quiet"]) == 0

    process = subprocess.Popen([sys.executable, "-m", "kprune.cli", "run", str(recipe),
                                "--out", str(killed), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = wait_for("[0-9]*-prune-r0-epoch*", killed / "checkpoints", process)  # complete
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert first.name.endswith("-prune-r0-epoch0-step7")  # the first pruning checkpoint
    assert not list((killed / "checkpoints").glob("*-prune-r0-epoch3"))  # killed before the end
    assert not (killed / "report.json").exists()
    assert not list((killed / "checkpoints").glob("*-prune-r0-done"))

    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(killed), "--quiet"]) == 2
    refused = capsys.readouterr().err
    assert "holds an unfinished run" in refused and "pass --resume" in refused
    assert "choose a fresh --out" in refused

    assert main(["run", str(recipe), "--out", str(killed), "--resume", "--quiet"]) == 0
    ended = kprune.load_model(killed / "pruned.keras")
    expected = kprune.load_model(whole / "pruned.keras")
    for got, want in zip(ended.get_weights(), expected.get_weights()):
        np.testing.assert_array_equal(got != 0, want != 0)  # identical masks
        np.testing.assert_array_equal(got, want)            # and weights
    reports = [json.loads((folder / "report.json").read_text()) for folder in (whole, killed)]
    accuracy = [{v["name"]: v["accuracy"] for v in r["variants"]} for r in reports]
    assert accuracy[0] == accuracy[1]
    # (an epoch resumed from a step checkpoint logs the mean loss of its last steps only)
    histories = [[{**row, "loss": None} for row in r["extra"]["history"]] for r in reports]
    assert histories[0] == histories[1]

    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(killed), "--resume"]) == 2
    assert "holds a finished run (report.json): there is nothing to resume" in (
        capsys.readouterr().err)


@pytest.fixture
def fake_data(tmp_path):
    """A data file that exists (recipes check paths); these runs stop before reading it."""
    path = tmp_path / "data.npz"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("folder, arguments, message", [
    ("empty", ["--resume"], r"holds no unfinished run to resume \(no recipe.yaml\); run "
                            r"without --resume to start one there"),
    ("missing", ["--resume"], r"holds no unfinished run to resume"),
    ("other", ["--resume"], r"holds a run of another recipe: its recipe.yaml differs from this "
                            r"one \(line \d+: 'seed: 6' in the folder, 'seed: 5' now\), so its "
                            r"checkpoints do not apply"),
    ("other", [], r"holds an unfinished run \(a recipe.yaml and no report.json\): pass --resume "
                  r"to continue it from its latest checkpoint, or choose a fresh --out"),
    ("other", ["--resume", "--force"], r"Give --resume .* or --force .*, not both"),
    ("finished", ["--resume"], r"holds a finished run \(report.json\): there is nothing to "
                               r"resume\. Choose another --out, or pass --force"),
])
def test_resume_refuses_folders_it_cannot_continue(tmp_path, fake_data, capsys, folder,
                                                   arguments, message):
    import re

    from kprune.experiments.recipe import Recipe

    recipe = write_recipe(tmp_path / "recipe.yaml", fake_data)
    out = tmp_path / folder
    if folder != "missing":
        out.mkdir()
    if folder == "other":
        other = write_recipe(tmp_path / "other.yaml", fake_data, seed="6")
        (out / "recipe.yaml").write_text(Recipe.load(other).to_yaml())
    if folder == "finished":
        (out / "recipe.yaml").write_text(Recipe.load(recipe).to_yaml())
        (out / "report.json").write_text("{}")
    assert main(["run", str(recipe), "--out", str(out), *arguments]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert re.search(message, error), error
    assert not (out / "checkpoints").exists()


def test_an_interrupted_demo_is_refused_and_named_the_option_that_resumes_it(tmp_path,
                                                                             capsys):
    from kprune.experiments.demo import demo_recipe

    out = tmp_path / "demo"
    out.mkdir()
    (out / "recipe.yaml").write_text(demo_recipe().to_yaml())
    assert main(["demo", "--out", str(out)]) == 2
    assert "holds an unfinished run" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--resume", "--force"]) == 2
    assert "not both" in capsys.readouterr().err


def test_checkpoint_steps_must_be_positive():
    from kprune.experiments.recipe import Recipe, RecipeError

    with pytest.raises(RecipeError, match=r"Key `checkpoint_steps` must be a positive integer\. "
                                          r"Received: checkpoint_steps=0"):
        Recipe.from_dict({"model": "lenet-5", "checkpoint_steps": 0})
