"""benchmarks.structural_speed in quick mode, through main(argv), into a temporary folder."""

import json

import pytest

from benchmarks import structural_speed  # on sys.path through setup.cfg's pythonpath
from tests.latency_checks import assert_speedups_from_rounds


@pytest.mark.slow
def test_structural_speed_quick(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{structural_speed.BEGIN}\nOLD\n{structural_speed.END}\nafter\n")
    code = structural_speed.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work"),
                                  "--data", str(mnist_dir), "--readme", str(readme)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["seed"] == 0
    report = results["report"]
    assert {"tensorflow", "tfmot"} <= set(report["versions"]) and report["baseline"] == "dense/float"
    rows = {row["name"]: row for row in report["variants"]}
    assert list(rows) == [f"{model}/{variant}" for model, variant in structural_speed.EXPORTS]
    # Removing half / three quarters of every unit but the head's: the parameter counts of
    # the seed CNN with conv1 16 / 8, conv2 32 / 16 and fc1 512 / 256 units.
    assert rows["structural-50/float"]["params"] == 821_834
    assert rows["structural-75/float"]["params"] == 207_018
    assert rows["structural-75/float"]["x_smaller_raw"] > 15
    assert rows["2:4/float"]["params"] == rows["dense/float"]["params"] == 3_274_890
    assert rows["2:4/float"]["tflite_weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    latency = results["latency"]
    assert latency["rounds"] == 2 and list(latency["files"]) == list(rows)
    assert latency["repeats"] == 10 and latency["threads"] == 1
    assert latency["baseline"] == "dense/float"
    for name, row in rows.items():
        timing = latency["files"][name]
        assert row["accuracy"] > 0.7 and timing["median_ms"] > 0  # chance: 0.1
        assert len(timing["round_medians_ms"]) == 2
    assert_speedups_from_rounds(latency)
    assert latency["files"]["dense/float"]["x_faster"] == 1.0
    for model in ("dense", "structural-75"):  # int8 files keep their float twin's answers
        assert rows[f"{model}/int8"]["accuracy"] == pytest.approx(
            rows[f"{model}/float"]["accuracy"], abs=0.01)
    assert rows["2:4/sparse"]["accuracy"] == rows["2:4/float"]["accuracy"]
    assert "fc1    Dense   1,024  256" in results["structural"]["structural-75"]
    text = readme.read_text()
    assert "OLD" not in text and "`structural-75/int8`" in text and text.endswith("after\n")


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert structural_speed.main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    assert "MNIST not found" in capsys.readouterr().err
