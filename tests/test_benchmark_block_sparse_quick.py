"""benchmarks.block_sparse in quick mode, through main(argv), into a temporary folder."""

import json

import pytest

from benchmarks import block_sparse  # on sys.path through setup.cfg's pythonpath
from tests.latency_checks import assert_speedups_from_rounds


@pytest.mark.slow
def test_block_sparse_quick(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{block_sparse.BEGIN}\nOLD\n{block_sparse.END}\nafter\n")
    code = block_sparse.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work"),
                              "--data", str(mnist_dir), "--readme", str(readme)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["seed"] == 0 and "noisy" in results["noise"]
    layer = results["layer"]["files"]
    # fc1 alone, read back from the files: only blocks of 16 inputs are stored block-sparse.
    assert layer["block-16x1"]["block_sparse"][0]["block_map"] == [1]
    assert layer["block-16x1"]["block_sparse"][0]["block_size"] == [16]
    assert [layer[name]["block_sparse"] for name in ("dense", "unstructured", "block-1x16")] \
        == [[], [], []]
    assert layer["block-16x1"]["x_smaller_raw"] > 15  # 3136x1024 int8 at 95 % blocks
    assert layer["block-16x1"]["bytes"] < layer["unstructured"]["bytes"] / 2
    assert layer["block-16x1"]["sparsity"] == pytest.approx(0.95, abs=1e-3)
    latency = results["layer"]["latency"]
    assert latency["baseline"] == "dense" and latency["rounds"] == 2
    assert list(latency["files"]) == list(block_sparse.LAYER_MASKS)
    model = results["model"]
    assert model["fc1_check"]["block"] == [16, 1] and model["fc1_check"]["block_violations"] == 0
    assert model["fc1_check"]["achieved"] == pytest.approx(0.95, abs=0.01)
    rows = {row["name"]: row for row in model["report"]["variants"]}
    assert list(rows) == ["dense/float", "dense/int8", "block-95/sparse-int8"]
    block_file = model["files"]["block-95/sparse-int8"]
    assert [(b["shape"], b["block_size"]) for b in block_file["block_sparse"]] == [
        ([1024, 3136], [16])]
    assert rows["block-95/sparse-int8"]["bytes"] < rows["dense/int8"]["bytes"] / 8
    # kprune.report's per-tensor rows say how the file stores each weight.
    storage = {tuple(t["shape"]): (t["storage"], t["block_size"])
               for t in rows["block-95/sparse-int8"]["tensors"]}
    assert storage[(1024, 3136)] == ("block 1x16", [16])
    assert storage[(64, 5, 5, 32)] == ("dense", [])
    assert model["latency"]["baseline"] == "dense/int8"
    # 2,048 training images: well above chance (0.1), and int8 keeps the float's answers
    assert rows["dense/float"]["accuracy"] > 0.85
    assert rows["dense/int8"]["accuracy"] == pytest.approx(rows["dense/float"]["accuracy"],
                                                           abs=0.01)
    assert rows["block-95/sparse-int8"]["accuracy"] > 0.5
    assert list(model["latency"]["files"]) == list(rows)
    assert_speedups_from_rounds(model["latency"])
    text = readme.read_text()
    assert "OLD" not in text and "`block-16x1`" in text and "block 1x16" in text
    assert text.endswith("after\n")


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert block_sparse.main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    assert "MNIST not found" in capsys.readouterr().err
