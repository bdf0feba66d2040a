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


@pytest.mark.slow
def test_keras3_overhead_gpt2_quick(tmp_path):
    """The GPT-2 classifier (a tiny keras_hub GPT2Backbone, in the dev extra; random token
    ids): no MNIST needed."""
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    begin, end = keras3_overhead.markers("gpt2")
    assert "keras3_overhead_gpt2_" in begin
    readme.write_text(f"before\n{begin}\nOLD\n{end}\nafter\n")
    code = keras3_overhead.main(["--model", "gpt2", "--quick", "--out", str(out),
                                 "--data", str(tmp_path / "nowhere"), "--readme", str(readme)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["benchmark"] == "keras3_overhead_gpt2" and results["mode"] == "quick"
    assert results["settings"]["model"] == "gpt2" and results["sparsity_ok"]
    layers = results["settings"]["num_layers"]
    assert len(results["pruned_layers"]) == 2 * layers  # both feed-forward Dense of each block
    assert all(name.rsplit("/", 1)[-1].startswith("feedforward_")
               for name in results["pruned_layers"])
    assert {"keras", "keras-hub"} <= set(results["versions"])
    assert len(results["load_average"]["before"]) == 3
    rounds = results["ms_per_step_rounds"]
    assert len(rounds["dense"]) == len(rounds["pruned"]) == len(results["ratio_rounds"]) == 2
    medians = results["ms_per_step"]
    assert results["ratio"] == pytest.approx(medians["pruned"] / medians["dense"], rel=0.01)
    text = readme.read_text()
    assert "OLD" not in text and "GPT-2 classifier" in text and text.endswith("after\n")
