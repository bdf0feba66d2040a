"""The CLI through main([...]) and once as a subprocess."""

import json
import re
import subprocess
import sys

import numpy as np
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
        (["demo", "--data", "no/such/folder", "--out", "unused"],
         "Received: data.source='no/such/folder'"),
        (["run", "missing.yaml", "--out", "unused"], "Recipe file not found"),
        (["inspect", "nothing.tflite"], "No file at this path"),
        (["export", "m.keras", "--out", "x", "--quantize", "int8"], "needs calibration data"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "validation, message",
    [
        ("1.5", r"Argument `validation` must be a fraction in \(0, 1\) when it is a float.*"
                r"Received: validation=1.5"),
        ("20", r"Argument `validation` must leave training examples: it holds out 20 of 20"),
        ("0", r"must be a positive integer count.*Received: validation=0"),
        ("a tenth", r"argument --validation: must be a fraction in \(0, 1\) or a positive "
                    r"integer count; got 'a tenth'"),
    ],
)
def test_sensitivity_refuses_a_bad_validation_split(tmp_path, validation, message, capsys):
    np_path = tmp_path / "mnist.npz"
    np.savez(np_path, x_train=np.zeros((20, 28, 28), "uint8"),
             y_train=np.arange(20, dtype="uint8") % 10,
             x_test=np.zeros((5, 28, 28), "uint8"), y_test=np.arange(5, dtype="uint8"))
    out = tmp_path / "sens"
    assert main(["sensitivity", "lenet-300-100", "--data", str(np_path), "--out", str(out),
                 "--validation", validation]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_as_a_subprocess():
    for argv in (["--help"], *([c, "--help"] for c in
                                ("plan", "demo", "run", "export", "inspect", "sensitivity"))):
        result = subprocess.run([sys.executable, "-m", "kprune.cli", *argv],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "usage: kprune" in result.stdout


@pytest.mark.slow
def test_demo_runs_to_its_report_and_refuses_to_overwrite(tmp_path, mnist_dir, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(mnist_dir)]) == 0
    printed = capsys.readouterr().out
    assert "| `pruned/int8`" in printed and "report:" in printed
    report = json.loads((out / "report.json").read_text())
    rows = {row["name"]: row for row in report["variants"]}
    assert set(rows) == {"dense/float", "pruned/float", "pruned/sparse", "pruned/int8",
                         "pruned/sparse-int8"}
    assert rows["pruned/float"]["accuracy"] > 0.9
    assert rows["pruned/int8"]["x_smaller_raw"] > 3.5
    assert rows["pruned/sparse"]["densify_ops"] > 0
    for name in ("report.md", "recipe.yaml", "plan.json", "pruned.keras", "baseline.keras",
                 *report["plots"]):
        assert (out / name).is_file(), name
    stamp = (out / "report.json").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--data", str(mnist_dir)]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (out / "report.json").stat().st_mtime_ns == stamp


def tiny_recipe(tmp_path, mnist_dir, **changes):
    text = f"""
model: lenet-300-100
data: {mnist_dir}
subset: {{train: 1000, test: 500}}
baseline: {{epochs: 1, batch_size: 100}}
plan: {{rules: [{{match: fc1, target: 0.8}}, {{match: fc2, method: m_by_n}}]}}
workflow: {{name: one-shot, epochs: 1}}
export: {{variants: [float, sparse], latency_repeats: 2}}
"""
    for key, value in changes.items():
        text = text.replace(key, value)
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_run_a_recipe_then_export_and_inspect(tmp_path, mnist_dir, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_recipe(tmp_path, mnist_dir)), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    pruned = next(r for r in report["variants"] if r["name"] == "pruned/float")
    layers = {layer["name"]: layer for layer in pruned["layers"]}
    assert layers["fc1"]["achieved"] == pytest.approx(0.8, abs=0.01)
    assert layers["fc2"]["achieved"] == pytest.approx(0.5)
    assert (out / "recipe.yaml").is_file()
    capsys.readouterr()

    assert main(["inspect", str(out / "pruned.keras")]) == 0
    printed = capsys.readouterr().out
    assert "fc2" in printed and "yes" in printed and "784x300" in printed
    assert main(["inspect", str(out / "pruned-sparse.tflite")]) == 0
    assert "sparse storage: yes" in capsys.readouterr().out

    exported = tmp_path / "export"
    assert main(["export", str(out / "pruned.keras"), "--out", str(exported), "--quantize",
                 "dynamic", "--data", str(mnist_dir), "--compare", str(out / "baseline.keras"),
                 "--test-samples", "300", "--latency-repeats", "2"]) == 0
    rows = {r["name"]: r for r in json.loads((exported / "report.json").read_text())["variants"]}
    assert rows["pruned/dynamic"]["x_smaller_raw"] > 3
    assert main(["export", str(out / "pruned.keras"), "--out", str(tmp_path / "plain")]) == 0
    assert "bytes" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"one-shot": "one-shop"}, r"`workflow.name` \(line 7\) must be one of"),
        ({"match: fc1": "match: fc_1"}, "Did you mean 'fc1'"),
        ({"latency_repeats: 2": "latency_repeat: 2"}, "Unknown key `export.latency_repeat`"),
        ({"lenet-300-100": "missing.keras"}, "neither a built-in model"),
    ],
)
def test_bad_recipe_trains_nothing_and_writes_nothing(tmp_path, mnist_dir, change, message, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tiny_recipe(tmp_path, mnist_dir, **change)), "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.slow
def test_sensitivity_writes_table_plot_and_plan(tmp_path, mnist_small, capsys):
    from kprune import models
    from kprune.engines.saving import save_model

    (x, y), (x_test, y_test) = mnist_small
    model = models.compile_classifier(models.lenet_300_100())
    model.fit(x[:2000], y[:2000], batch_size=100, epochs=1, verbose=0)
    path = save_model(model, tmp_path / "trained.keras")
    np_path = tmp_path / "mnist.npz"
    # 50 test images: the scan must not use them (it scans 400 held out of the training ones)
    np.savez(np_path, x_train=(x[2000:3000] * 255).astype("uint8")[..., 0],
             y_train=y[2000:3000], x_test=(x_test[:50] * 255).astype("uint8")[..., 0],
             y_test=y_test[:50])
    out = tmp_path / "sens"
    assert main(["sensitivity", str(path), "--data", str(np_path), "--out", str(out),
                 "--validation", "0.5", "--samples", "400", "--max-drop", "2"]) == 0
    printed = capsys.readouterr().out
    assert "fc1" in printed and "suggested plan" in printed
    assert ("sensitivity on 400 validation examples held out of the 1,000 training examples "
            "(validation=0.5, seed=0); the test split is not used") in printed
    table = json.loads((out / "sensitivity.json").read_text())
    assert table["max_drop_pp"] == 2.0 and table["examples"] == 400
    assert {row["layer"] for row in table["rows"]} == {"fc1", "fc2", "head"}
    assert (out / "sensitivity.txt").read_text().startswith("accuracy with one layer pruned")
    plan = PruningPlan.load(out / "suggested_plan.yaml")
    assert {rule.match for rule in plan.rules} <= {"fc1", "fc2", "head"}
    assert (out / "sensitivity.png").stat().st_size > 1000


@pytest.mark.slow
def test_quiet_prints_no_progress_and_no_training_lines(tmp_path, capsys):
    from tests.test_runner import synthetic_mnist

    data = synthetic_mnist(tmp_path / "mnist.npz", n_train=300, n_test=100)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "model": "lenet-300-100", "data": str(data), "baseline": {"epochs": 1},
        "workflow": {"name": "gradual", "epochs": 1},
        "export": {"variants": ["float"], "latency_repeats": 1}}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.strip().splitlines() == [f"report: {tmp_path / 'quiet' / 'report.md'}"]
    assert main(["run", str(recipe), "--out", str(tmp_path / "loud")]) == 0
    captured = capsys.readouterr()
    assert "measure accuracy: done" in captured.err and "[2/4] workflow gradual" in captured.out


@pytest.mark.slow
def test_post_training_writes_the_pruned_model_its_report_and_the_tflite_files(tmp_path,
                                                                                mnist_small,
                                                                                capsys):
    import kprune
    from kprune import models
    from kprune.engines.saving import save_model

    (x, y), (x_test, y_test) = mnist_small
    model = models.compile_classifier(models.lenet_300_100())
    model.fit(x[:3000], y[:3000], batch_size=64, epochs=1, verbose=0)
    path = save_model(model, tmp_path / "trained.keras")
    np_path = tmp_path / "mnist.npz"
    np.savez(np_path, x_train=(x[:1000] * 255).astype("uint8")[..., 0], y_train=y[:1000],
             x_test=(x_test[:300] * 255).astype("uint8")[..., 0], y_test=y_test[:300])
    out = tmp_path / "pt"
    assert main(["post-training", str(path), "--data", str(np_path), "--out", str(out),
                 "--calibration", "256", "--variants", "sparse", "--latency-repeats", "2",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "post-training pruning (sparsegpt) on 256 calibration examples" in printed
    result = json.loads((out / "post_training.json").read_text())
    assert result["method"] == "sparsegpt" and result["examples"] == 256
    rows = {row["name"]: row for row in result["layers"]}
    # at least half: SparseGPT also zeroes every weight of an input that never fires (here
    # the pixels that are 0 in all 256 calibration images)
    assert rows["fc1"]["method"] == "sparsegpt 2:4" and rows["fc1"]["achieved"] >= 0.5
    assert rows["head"]["achieved"] is None and rows["head"]["reason"] == "classifier head"
    pruned = kprune.load_model(out / "pruned.keras")
    kprune.sparsity_report(pruned, strict=True)  # 2:4 in every group
    dead = np.all(np.load(np_path)["x_train"][:256].reshape(256, -1) == 0, axis=0)
    kernel = pruned.get_layer("fc1").kernel.numpy()
    assert dead.any() and np.all(kernel[dead] == 0) and np.any(kernel[~dead] != 0)
    report = json.loads((out / "report.json").read_text())
    accuracies = {v["name"]: v["accuracy"] for v in report["variants"]}
    assert accuracies["dense/float"] > 0.8, accuracies
    assert accuracies["pruned/sparse"] > accuracies["dense/float"] - 0.05, accuracies
    assert (out / "pruned-sparse.tflite").stat().st_size < (out / "dense-float.tflite").stat().st_size
    # a finished folder is refused before any work
    assert main(["post-training", str(path), "--data", str(np_path), "--out", str(out)]) == 2
    assert "already holds a finished run" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--method", "sparsgpt"], "Did you mean 'sparsegpt'"),
    (["--variants", "floaty"], "Unknown export variant 'floaty'"),
    (["--plan", "nope.yaml"], "Plan file not found"),
])
def test_post_training_refuses_bad_input_and_writes_nothing(tmp_path, argv, message, capsys):
    out = tmp_path / "never"
    assert main(["post-training", "seed-cnn", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def vit_recipe(tmp_path, mnist_dir, structural):
    """A 2-block Keras 3 ViT (the transformer benchmark's) saved as .keras, and a recipe
    that prunes it with ``structural``."""
    from benchmarks.transformer_structural import vit

    model = vit(blocks=2, dim=32, heads=4, ffn=64, patch=7)
    model.save(tmp_path / "vit.keras")
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
model: vit.keras
data: {mnist_dir}
subset: {{train: 600, test: 200}}
baseline: {{epochs: 1, batch_size: 50}}
structural: {structural}
plan: {{rules: [{{match: head, target: 0.5}}]}}
workflow: {{name: one-shot, epochs: 1}}
export: {{variants: [float], latency_repeats: 1}}
""")
    return path


@pytest.mark.slow
def test_run_removes_heads_neurons_and_blocks_of_a_keras3_transformer(tmp_path, mnist_dir,
                                                                      capsys):
    """Half the heads (2 of 4 per layer), half the feed-forward neurons, one of the two
    transformer blocks (influence), Fisher scores on calibration images and the
    least-squares correction, then fine-tune, one-shot plan and export: through ``kprune run``."""
    from kprune.engines.saving import load_model

    recipe = vit_recipe(tmp_path, mnist_dir, "{heads: 0.5, neurons: 0.5, blocks: 0.5, "
                        "block_unit: transformer, criterion: fisher, correction: "
                        "least_squares, calibration: 32, exclude: [patch]}")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ("structural: drop 0.5 of the transformer blocks (influence), then remove 0.5 of the "
            "heads and 0.5 of the neurons (global, fisher, least_squares correction)") in printed
    dense, pruned = (load_model(out / name) for name in ("baseline.keras", "pruned.keras"))
    names = {layer.name for layer in pruned.layers}
    gone = {"add_a1", "add_f1", "add_a2", "add_f2"} - names
    assert gone in ({"add_a1", "add_f1"}, {"add_a2", "add_f2"}) and "dropped" in printed
    assert len([name for name in names if name.startswith("mha_")]) == 1  # one whole block
    kept = [layer for layer in pruned.layers if layer.name.startswith("mha_")]
    assert kept and all(layer.get_config()["num_heads"] == 2 for layer in kept)
    units = sum(layer.get_config()["units"] for layer in pruned.layers
                if layer.name.startswith("ffn_up_"))
    before = sum(dense.get_layer(name).get_config()["units"] for name in names
                 if name.startswith("ffn_up_"))
    assert units == before // 2
    assert pruned.get_layer("patch").get_config()["filters"] == 32  # excluded: whole
    report = json.loads((out / "report.json").read_text())
    assert report["extra"]["recipe"]["structural"]["heads"] == 0.5


def test_run_refuses_a_blocks_fraction_that_drops_none_before_training(tmp_path, mnist_dir,
                                                                      capsys):
    # 5 droppable: the ViT's position embedding is added like a residual branch too
    recipe = vit_recipe(tmp_path, mnist_dir, "{blocks: 0.1}")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    assert re.search(r"Key `structural.blocks` drops 0.1 of the model's 5 droppable residual "
                     r"blocks, rounded down: none\. .*Received: structural.blocks=0.1",
                     capsys.readouterr().err)
    assert not out.exists()


CUSTOM_LAYERS = '''
import keras


@keras.saving.register_keras_serializable(package="kprune_cli_test")
class ThreeDense(keras.layers.Layer):
    """tests/test_nested.py's custom layer: three Dense sublayers, a residual block."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.fc_a = keras.layers.Dense(width, activation="relu", name="fc_a")
        self.fc_b = keras.layers.Dense(width, activation="relu", name="fc_b")
        self.fc_c = keras.layers.Dense(width, name="fc_c")

    def call(self, x):
        return x + self.fc_c(self.fc_b(self.fc_a(x)))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def block_model(width=16):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(width, activation="relu", name="fc")(x)
    x = ThreeDense(width, name="block")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))
'''


def custom_layer_recipe(tmp_path, mnist_dir, module, imports=""):
    """A Keras 3 ``.keras`` MNIST model holding a custom layer defined in ``module``.py
    (in ``tmp_path``, next to the recipe), saved, then unregistered and forgotten: as in a
    fresh ``kprune`` process, only importing the module registers the class again."""
    import importlib

    import keras

    (tmp_path / f"{module}.py").write_text(CUSTOM_LAYERS)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module(module).block_model().save(tmp_path / "custom.keras")
    finally:
        sys.path.remove(str(tmp_path))
        del sys.modules[module]
        keras.saving.get_custom_objects().pop("kprune_cli_test>ThreeDense")
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
model: custom.keras
{imports}
data: {mnist_dir}
subset: {{train: 300, test: 100}}
baseline: {{epochs: 1, batch_size: 50}}
workflow: {{name: one-shot, epochs: 1}}
export: {{variants: [float], latency_repeats: 1}}
""")
    return path


def test_run_refuses_a_custom_layer_no_import_registers_and_a_module_it_cannot_import(
        tmp_path, mnist_dir, capsys):
    recipe = custom_layer_recipe(tmp_path, mnist_dir, "kprune_unregistered_layers")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"custom\.keras: cannot load the Keras model in this file: it holds the "
                     r"custom class 'ThreeDense', which is not registered", err)
    assert "list the module that defines it under the recipe's `imports:`" in err
    assert "or pass --import MODULE" in err
    assert main(["run", str(recipe), "--out", str(out), "--import", "kprune_layers_typo"]) == 2
    assert re.search(r"Key `imports` \(--import\): cannot import module 'kprune_layers_typo' "
                     r"\(ModuleNotFoundError: No module named 'kprune_layers_typo'\)",
                     capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.slow
def test_run_prunes_a_keras3_model_with_a_custom_layer_its_recipe_imports(tmp_path, mnist_dir,
                                                                         capsys):
    import kprune

    recipe = custom_layer_recipe(tmp_path, mnist_dir, "kprune_imported_layers",
                                 imports="imports: [kprune_imported_layers]")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    assert "imports:\n- kprune_imported_layers" in (out / "recipe.yaml").read_text()
    pruned = kprune.load_model(out / "pruned.keras")  # the run registered ThreeDense again
    report = kprune.sparsity_report(pruned, strict=True)
    achieved = {row.name: row.achieved for row in report.rows if row.method}
    assert {name: achieved[name] for name in ("block/fc_a", "block/fc_b", "block/fc_c")} == {
        "block/fc_a": 0.5, "block/fc_b": 0.5, "block/fc_c": 0.5}
    del sys.modules["kprune_imported_layers"]
