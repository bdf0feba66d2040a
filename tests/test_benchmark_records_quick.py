"""benchmarks.records --quick into a temporary folder; the seed CNN record recipe's stages.

One quick run serves both tests (module fixture): ``examples/seed_cnn_max_compression.yaml``
on 1,000 images, one epoch per stage, through ``run_recipe``, and the overhead row. To stay
within the test budget, ``examples/`` is here a folder holding that recipe alone: the LeNet
rows (another piece of work) and the speed row (a second seed CNN recipe) say they were
skipped, and why; the speed row's latency code runs on the seed-cnn run's files instead.
"""

import json
import shutil

import numpy as np
import pytest

from benchmarks import records  # on sys.path through setup.cfg's pythonpath
from tests.latency_checks import assert_speedups_from_rounds


@pytest.fixture(scope="module")
def quick_run(mnist_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("records")
    examples = tmp / "examples"
    examples.mkdir()
    shutil.copy(records.EXAMPLES / records.RECIPES["seed-cnn"], examples)
    readme = tmp / "README.md"
    readme.write_text(f"before\n{records.MARKERS[0]}\nOLD\n{records.MARKERS[1]}\nafter\n")
    out = tmp / "records.json"
    saved, records.EXAMPLES = records.EXAMPLES, examples
    try:
        code = records.main(["--quick", "--out", str(out), "--work", str(tmp / "work"),
                             "--data", str(mnist_dir), "--readme", str(readme)])
    finally:
        records.EXAMPLES = saved
    assert code == 0
    return json.loads(out.read_text()), tmp / "work" / "seed-cnn", readme, tmp


@pytest.mark.slow
def test_seed_cnn_max_compression_stages(quick_run):
    """Each stage of the record recipe did what it says, read from the run folder."""
    from kprune.engines.saving import load_model
    from kprune.tflite import flatbuffer

    _, run, _, _ = quick_run
    for name in ("baseline.keras", "baseline-start.keras", "pruned.keras", "dense-float.tflite",
                 "pruned-float.tflite", "pruned-int8.tflite", "pruned-sparse-int8.tflite"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    # baseline 1 epoch, structural fine-tune 1, gradual 1; the dense control got those 2
    assert report["extra"]["epochs"] == {"baseline": 1, "pruned_after_baseline": 2,
                                         "dense_after_baseline": 2}
    pruned, control = load_model(run / "pruned.keras"), load_model(run / "baseline.keras")
    start = load_model(run / "baseline-start.keras")
    # structural: half the channels by MACs, in multiples of 16; the control stays whole
    assert control.count_params() == start.count_params() == 3_274_890
    widths = {layer.name: layer.get_weights()[0].shape[-1]
              for layer in pruned.layers if layer.get_weights()}
    assert widths["head"] == 10 and all(widths[name] % 16 == 0 for name in ("conv1", "conv2",
                                                                           "fc1"))
    assert widths["conv2"] < 64 and widths["fc1"] < 1024
    assert pruned.count_params() < 0.5 * control.count_params()
    # non-zeros on the weights: fc1 keeps 5 % of its kernel, in whole 16-input blocks
    kernel = pruned.get_layer("fc1").get_weights()[0]
    inputs, units = kernel.shape
    assert inputs == 7 * 7 * widths["conv2"] and inputs % 16 == 0
    assert np.count_nonzero(kernel) / kernel.size == pytest.approx(0.05, abs=0.01)
    blocks = kernel.reshape(inputs // 16, 16, units)
    assert set(np.count_nonzero(blocks, axis=1).ravel().tolist()) <= {0, 16}
    head = pruned.get_layer("head").get_weights()[0]
    assert np.count_nonzero(head) == head.size  # the head is skipped
    assert np.count_nonzero(control.get_layer("fc1").get_weights()[0]) > 0.99 * 3136 * 1024
    # the block-sparse storage, read back from the file: fc1 alone, blocks of 16 inputs
    info = flatbuffer.tflite_tensors(run / "pruned-sparse-int8.tflite")
    assert [(list(t.shape), list(t.block_map), list(t.block_size))
            for t in info.block_sparse] == [([units, inputs], [1], [16])]
    assert info.densify_ops == 0
    assert flatbuffer.tflite_tensors(run / "pruned-int8.tflite").block_sparse == []
    # sizes read from the files: > 40x smaller raw than the dense float file
    dense_bytes = (run / "dense-float.tflite").stat().st_size
    assert dense_bytes / (run / "pruned-sparse-int8.tflite").stat().st_size > 40
    assert (run / "pruned-int8.tflite").stat().st_size < dense_bytes / 3.5


@pytest.mark.slow
def test_records_quick_json_and_readme(quick_run, mnist_dir, monkeypatch):
    results, run, readme, tmp = quick_run
    assert list(results["rows"]) == list(records.ROWS)
    rows = results["rows"]
    for name in ("lenet-300-100", "lenet-5", "speed"):
        assert rows[name]["status"] == "skipped" and "does not exist" in rows[name]["reason"]
    seed = rows["seed-cnn"]
    assert seed["status"] == "measured" and seed["mode"] == "quick" and seed["seed"] == 0
    assert {"tensorflow", "tfmot"} <= set(seed["versions"]) and seed["machine"]["cpus_usable"]
    assert seed["smallest"]["name"] == "pruned/sparse-int8"
    assert seed["smallest"]["bytes"] == (run / "pruned-sparse-int8.tflite").stat().st_size
    assert seed["dense"]["bytes"] == (run / "dense-float.tflite").stat().st_size
    assert seed["smallest"]["x_smaller_raw"] == pytest.approx(
        seed["dense"]["bytes"] / seed["smallest"]["bytes"])
    assert seed["trained_as_long"] and seed["x_fewer_nonzero"] > 14  # 3,274,890 / 224,186
    assert results["targets"] == records.TARGETS  # met: test_each_row_meets_its_target...
    # the gap's standard error, from the two files run again on the run's 300 test images
    paired = seed["paired"]
    assert paired["images"] == seed["test_samples"] == 300
    assert paired["error_increase_pp"] == pytest.approx(seed["error_increase_pp"])
    assert paired["error_increase_pp"] == pytest.approx(
        100 * (paired["only_pruned_wrong"] - paired["only_dense_wrong"]) / 300)
    assert 0 <= paired["standard_error_pp"] <= 100 * np.sqrt(
        (paired["only_pruned_wrong"] + paired["only_dense_wrong"]) / 300**2)
    speed = records.speed_figures(run, cfg=records.QUICK)  # the speed row's latency part
    assert speed["latency"]["baseline"] == "pruned/int8" and speed["latency"]["rounds"] == 2
    assert set(speed["latency"]["files"]) == {"pruned/int8", "pruned/sparse-int8",
                                              "dense/float"}
    assert_speedups_from_rounds(speed["latency"])
    assert [speed["x_faster"], speed["x_faster_range"]] in [
        [timing["x_faster"], timing["x_faster_range"]]
        for timing in speed["latency"]["files"].values()]
    overhead = rows["overhead"]
    assert list(overhead["pruning_overhead"]["models"]) == ["seed-cnn"]
    assert overhead["met"] == overhead["pruning_overhead"]["target"]["met"]
    text = readme.read_text()
    assert "OLD" not in text and text.endswith("after\n")
    assert "| Seed CNN, smallest `.tflite` |" in text and "Sparse VD 68x" in text
    assert "not run: examples/lenet_5_record.yaml does not exist" in text

    # --only replaces that row in place and keeps the others (with their timestamps)
    out = tmp / "records.json"
    monkeypatch.setattr(records, "EXAMPLES", tmp / "examples")  # the speed recipe is absent
    code = records.main(["--quick", "--only", "speed", "--out", str(out), "--work",
                         str(tmp / "work"), "--data", str(mnist_dir), "--no-readme"])
    assert code == 0
    again = json.loads(out.read_text())["rows"]
    assert again["seed-cnn"] == seed and again["overhead"] == overhead
    assert again["lenet-5"] == rows["lenet-5"]
    assert again["speed"]["created"] >= rows["speed"]["created"]

    # --from-runs reads the recipe rows' figures again from their run folders, no training
    code = records.main(["--quick", "--from-runs", "--out", str(out), "--work",
                         str(tmp / "work"), "--data", str(mnist_dir), "--no-readme"])
    assert code == 0
    reread = json.loads(out.read_text())["rows"]
    assert reread["seed-cnn"].pop("figures_read_again") >= seed["created"]
    assert reread["seed-cnn"] == seed and reread["overhead"] == overhead


def test_from_runs_keeps_a_row_whose_run_folders_are_gone(tmp_path, capsys):
    row = {"status": "measured", "run_dir": str(tmp_path / "gone"), "seed": 0, "met": False}
    rows = records.run(data_dir=tmp_path, work=tmp_path, only=["lenet-5"],
                       previous={"lenet-5": dict(row)}, from_runs=True)
    assert rows["lenet-5"] == row
    assert "kept as it was, its run folders are not here" in capsys.readouterr().out


def test_each_row_meets_its_target_at_the_edge_and_not_past_it():
    """The records' targets, written here on their own, at their edges."""
    seed = {"trained_as_long": True,
            "smallest": {"x_smaller_raw": 40.0, "accuracy_delta_pp": -0.2}}
    assert records._met("seed-cnn", seed, 0)
    for smallest in ({"x_smaller_raw": 39.9, "accuracy_delta_pp": 0.0},
                     {"x_smaller_raw": 100.0, "accuracy_delta_pp": -0.21}):
        assert not records._met("seed-cnn", {**seed, "smallest": smallest}, 0), smallest
    assert not records._met("seed-cnn", {**seed, "trained_as_long": False}, 0)
    speed = {**seed, "x_faster": 1.3}
    assert records._met("speed", speed, 0)
    assert not records._met("speed", {**speed, "x_faster": 1.29}, 0)
    lenet = {"trained_as_long": True, "x_fewer_nonzero": 50.0, "error_increase_pp": 0.1}
    assert records._met("lenet-300-100", lenet, 1200)
    assert not records._met("lenet-300-100", lenet, 1201)  # 20 minutes at most
    assert not records._met("lenet-300-100", {**lenet, "x_fewer_nonzero": 49.9}, 0)
    assert not records._met("lenet-300-100", {**lenet, "error_increase_pp": 0.11}, 0)
    assert not records._met("lenet-5", lenet, 0)
    assert records._met("lenet-5", {**lenet, "x_fewer_nonzero": 150.0}, 0)
    assert records.TARGETS["overhead"] == {"max_ratio": 1.10}


def test_paired_difference_counts_the_images_one_model_gets_wrong():
    pruned = np.array([1, 1, 0, 0, 1, 0, 0, 0], bool)
    dense = np.array([1, 0, 1, 0, 0, 0, 0, 0], bool)
    gap = records.paired_difference(pruned, dense)
    assert (gap["only_pruned_wrong"], gap["only_dense_wrong"], gap["images"]) == (2, 1, 8)
    differences = pruned.astype(int) - dense.astype(int)  # -1, 0 or 1 per image
    assert gap["error_increase_pp"] == pytest.approx(100 * differences.mean())
    assert gap["standard_error_pp"] == pytest.approx(100 * differences.std() / np.sqrt(8))


def test_a_recipe_that_does_not_load_is_skipped_with_its_error(tmp_path, monkeypatch):
    (tmp_path / records.RECIPES["lenet-5"]).write_text("model: lenet-5\nworkflow: {bogus: 1}\n")
    monkeypatch.setattr(records, "EXAMPLES", tmp_path)
    row = records.recipe_row("lenet-5", tmp_path / "work", data_dir=tmp_path, cfg=records.FULL)
    assert row["status"] == "skipped" and row["met"] is None
    assert "lenet_5_record.yaml does not load" in row["reason"]
    assert "Unknown key `workflow.bogus`" in row["reason"]


def test_a_recipe_row_loads_with_another_seed_for_repeats(mnist_dir):
    recipe = records.load_recipe("seed-cnn", mnist_dir, seed=5)
    assert recipe.seed == 5 and recipe.structural.fraction == 0.5
    assert recipe.data.source == str(mnist_dir)
    quick = records.load_recipe("seed-cnn", mnist_dir, subset={"train": 100, "test": 50}, seed=5)
    assert quick.seed == 5 and quick.workflow.epochs == 1 and quick.subset.train == 100
    assert records.build_parser().parse_args(["--repeat-seeds", "1", "2"]).repeat_seeds == [1, 2]
