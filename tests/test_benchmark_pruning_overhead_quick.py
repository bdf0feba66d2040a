"""benchmarks.pruning_overhead in quick mode, through main(argv), into a temporary folder."""

import json

import pytest

from benchmarks import pruning_overhead  # on sys.path through setup.cfg's pythonpath


@pytest.mark.slow
def test_pruning_overhead_quick(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    begin, end = pruning_overhead.MARKERS
    readme.write_text(f"before\n{begin}\nOLD\n{end}\nafter\n")
    code = pruning_overhead.main(["--quick", "--out", str(out), "--data", str(mnist_dir),
                                  "--readme", str(readme)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["seed"] == 0
    assert {"tensorflow", "tf_keras", "tfmot"} <= set(results["versions"])
    assert results["machine"]["cpus_usable"] >= 1 and len(results["load_average"]["after"]) == 3
    assert "shared" in results["caveat"]
    assert set(results["models"]) == {"seed-cnn", "lenet-5"}
    seed = results["models"]["seed-cnn"]
    assert seed["sparsity_ok"] and seed["params"] == 3_274_890
    assert seed["pruned_layers"]["fc1"] == "2:4" and seed["pruned_layers"]["head"] == "skip"
    for fit in ("dense", "tfmot", "kprune"):
        assert len(seed["ms_per_step_rounds"][fit]) == len(seed["epoch_seconds_rounds"][fit]) == 2
    medians = seed["ms_per_step"]
    for key, (over, under) in {"kprune_vs_dense": ("kprune", "dense"),
                               "tfmot_vs_dense": ("tfmot", "dense"),
                               "kprune_vs_tfmot": ("kprune", "tfmot")}.items():
        ratio = seed[key]
        assert ratio["pooled_ratio"] == pytest.approx(medians[over] / medians[under], rel=0.01)
        low, high = ratio["ratio_range"]  # per round; ratio is their median
        assert 0 < low <= ratio["ratio"] <= high and ratio["fastest_round_ratio"] > 0
        assert ratio["epoch_ratio_range"][0] <= ratio["epoch_ratio"]
    for key in ("kprune_vs_dense", "batch_hook_vs_dense"):
        low, high = seed["no_step_timer"][key]["epoch_ratio_range"]
        assert 0 < low <= seed["no_step_timer"][key]["epoch_ratio"] <= high
    assert set(seed["callback_hooks_ms"]) == {
        "UpdatePruningStep.on_train_begin", "UpdatePruningStep.on_epoch_end",
        "ScheduleGuard.on_train_begin+on_train_end", "SparsityLogger.on_epoch_end"}
    target = results["target"]
    assert target["ratio"] == seed["kprune_vs_dense"]["ratio"]
    assert target["max_ratio"] == 1.10  # the README's target, written here on its own
    text = readme.read_text()
    assert "OLD" not in text and "| seed-cnn |" in text and text.endswith("after\n")


def test_mobilenetv2_is_built_for_padded_mnist():
    model, side = pruning_overhead.build_model("mobilenetv2-0.35")
    assert side == 32 and model.input_shape == (None, 32, 32, 1)
    assert model.output_shape == (None, 10)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert pruning_overhead.main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    assert "MNIST not found" in capsys.readouterr().err


def test_unknown_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"Argument `settings` takes the keys .*Received: "
                                         r"settings=\{'round': 1\}"):
        pruning_overhead.run(data_dir=tmp_path, settings={"round": 1})
