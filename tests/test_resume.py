"""kprune run --resume: a run killed mid-pruning ends as one never interrupted; bad folders."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kprune
from kprune.cli import main

ROOT = Path(__file__).parents[1]


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


#: ``python -c KILLED_AFTER NAME ARGS...``: ``kprune ARGS...``, killed by SIGKILL right after
#: checkpoint NAME is completely written (renamed into place, its folder synced): a kill at
#: a known point, however loaded the machine. A hook in the test's child process only.
KILLED_AFTER = """
import os, signal, sys
from kprune.cli import main
from kprune.methods.checkpoints import Checkpoints

save = Checkpoints.save

def save_then_die(self, name, arrays, state):
    written = save(self, name, arrays, state)
    if name == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
    return written

Checkpoints.save = save_then_die
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_run_killed_mid_pruning_resumes_to_the_masks_of_an_uninterrupted_one(
        tmp_path, mnist_dir, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", mnist_dir)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["run", str(recipe), "--out", str(whole), "--quiet"]) == 0

    killer = subprocess.run([sys.executable, "-c", KILLED_AFTER, "prune-r0-epoch0-step7", "run",
                             str(recipe), "--out", str(killed), "--quiet"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert killer.returncode == -signal.SIGKILL, killer.stderr[-3000:]
    names = [path.name for path in sorted((killed / "checkpoints").iterdir())]
    assert names[-1].endswith("-prune-r0-epoch0-step7"), names  # the first pruning checkpoint
    assert not [name for name in names if "-prune-" in name and not name.endswith("step7")]
    assert not (killed / "report.json").exists()

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
