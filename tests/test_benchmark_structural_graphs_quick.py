"""benchmarks.structural_graphs in quick mode, through main(argv), into a temporary folder."""

import json

import pytest

from benchmarks import structural_graphs  # on sys.path through setup.cfg's pythonpath
from tests.latency_checks import assert_speedups_from_rounds


@pytest.mark.slow
def test_structural_graphs_quick(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{structural_graphs.BEGIN}\nOLD\n{structural_graphs.END}\nafter\n")
    code = structural_graphs.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work"),
                                   "--data", str(mnist_dir), "--readme", str(readme)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["seed"] == 0 and results["repeats"] == 1
    assert {"tensorflow", "tf_keras", "litert"} <= set(results["versions"])
    assert results["machine"]["cpus_usable"] >= 1
    threads = results["settings"]["threads"]
    assert threads[0] == 1
    models = results["models"]
    assert list(models) == ["seed-cnn", "residual-cnn", "mobilenetv2-0.35"]
    for name, model in models.items():
        rows = {entry["row"]: entry for entry in model["rows"]}
        assert list(rows) == (structural_graphs.QUICK_ROWS if name in structural_graphs.TRAINED
                              else structural_graphs.QUICK_APPLICATION_ROWS)
        dense, half = rows["dense"], rows["global-50"]
        assert dense["params_kept"] == dense["macs_kept"] == 1.0
        # Half the channels of every coupled group: about a quarter of the weights.
        assert 0.15 < half["params_kept"] < 0.4 and 0.15 < half["macs_kept"] < 0.4
        for timing in model["latency"].values():
            assert list(timing["files"]) == list(rows) and timing["rounds"] == 2
            assert timing["files"]["dense"]["x_faster"] == 1.0
            assert_speedups_from_rounds(timing)
        for row, entry in rows.items():
            assert set(entry["latency"]) == {str(t) for t in threads}
            for thread, timing in entry["latency"].items():  # the row's copy of its file's
                assert timing.items() <= model["latency"][thread]["files"][row].items()
            assert ("accuracy" in entry) == (name in structural_graphs.TRAINED)
    seed = {entry["row"]: entry for entry in models["seed-cnn"]["rows"]}
    assert seed["dense"]["params"] == 3_274_890 and seed["dense"]["macs"] == 13_883_904
    assert seed["layer-50"]["channels"] == {"conv1": 16, "conv2": 32, "fc1": 512, "head": 10}
    # trained on 2,000 images: well above chance (0.1), also with half the channels gone
    assert seed["dense"]["accuracy"] > 0.85 and seed["global-50"]["accuracy"] > 0.8
    # The residual CNN's first block adds its input back: its second conv keeps the stem's
    # channels, whatever the scope.
    for entry in models["residual-cnn"]["rows"]:
        assert entry["channels"]["block1_2_conv"] == entry["channels"]["stem_conv"]
    checks = results["targets"]
    assert [(c["model"], c["row"]) for c in checks] == [
        ("seed-cnn", "global-50"), ("seed-cnn", "global-50-macs"), ("seed-cnn", "layer-50")]
    assert [c["target_row"] for c in checks] == [True, False, False]
    assert seed["global-50-macs"]["cost"] == "macs" and seed["global-50"]["cost"] is None
    assert all(isinstance(c["met"], bool) for c in checks)
    text = readme.read_text()
    assert "OLD" not in text and "| seed-cnn | 50 % global |" in text
    assert "| seed-cnn | 50 % global, weighted by macs |" in text
    assert text.startswith("before\n") and text.endswith("after\n")


def test_residual_cnn_prunes_through_its_adds():
    from kprune import structural

    model = structural_graphs.residual_cnn()
    assert model.count_params() == 78_426
    smaller = structural.prune(model, 0.5, scope="layer")
    assert smaller.count_params() < model.count_params() / 3
    assert smaller.output_shape == (None, 10)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert structural_graphs.main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    assert "MNIST not found" in capsys.readouterr().err
