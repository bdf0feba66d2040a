"""benchmarks.keras3_overhead in quick mode, through main(argv), into a temporary folder."""

import json

import pytest

from benchmarks import keras3_overhead  # on sys.path through setup.cfg's pythonpath


@pytest.mark.slow
def test_keras3_overhead_quick(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    begin, end = keras3_overhead.markers()
    readme.write_text(f"before\n{begin}\nOLD\n{end}\nafter\n")
    code = keras3_overhead.main(["--quick", "--out", str(out), "--data", str(mnist_dir),
                                 "--readme", str(readme)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["seed"] == 0
    assert results["backend"] == "tensorflow" and results["sparsity_ok"]
    assert {"keras", "tensorflow"} <= set(results["versions"])
    rounds = results["ms_per_step_rounds"]
    assert len(rounds["dense"]) == len(rounds["pruned"]) == 2
    low, high = results["ratio_range"]  # per round; the pooled ratio may lie outside it
    assert 0 < low <= high and results["ratio"] > 0 and results["epoch_ratio"] > 0
    medians = results["ms_per_step"]
    assert results["ratio"] == pytest.approx(medians["pruned"] / medians["dense"], rel=0.01)
    assert results["target"] == 1.10  # the README's target, written here on its own
    text = readme.read_text()
    assert "OLD" not in text and "Pruned / dense, median step" in text and text.endswith("after\n")


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert keras3_overhead.main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    assert "MNIST not found" in capsys.readouterr().err
