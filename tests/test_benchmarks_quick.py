"""benchmarks.export_sizes in quick mode, through main(argv), into a temporary folder."""

import json

import pytest

from benchmarks import export_sizes  # on sys.path through setup.cfg's pythonpath
from tests.latency_checks import assert_speedups_from_rounds

VARIANT_KEYS = {
    "name", "path", "accuracy", "accuracy_delta_pp", "bytes", "gzip_bytes", "x_smaller_raw",
    "x_smaller_gzip", "params", "nonzero_params", "latency_ms_median", "x_faster",
    "sparse_storage", "densify_ops", "layers",
}


@pytest.mark.slow
def test_export_sizes_quick(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\n{export_sizes.BEGIN}\nold\n{export_sizes.END}\n\nafter\n")
    code = export_sizes.main(
        ["--quick", "--out", str(out), "--data", str(mnist_dir), "--readme", str(readme)]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert results["benchmark"] == "export_sizes" and results["mode"] == "quick"
    assert {"tensorflow", "tf_keras", "tfmot", "litert", "python"} <= set(results["versions"])
    assert {"platform", "cpu_count"} <= set(results["machine"])
    assert results["seed"] == 0 and results["repeats"]["latency"] == 5
    assert results["repeats"]["latency_rounds"] == 2 and results["repeats"]["threads"] == 1
    latency = results["latency"]
    assert latency["rounds"] == 2 and latency["repeats"] == 5 and latency["threads"] == 1
    assert latency["baseline"] == "dense/float" and "interleaved rounds" in latency["method"]
    assert list(latency["files"]) == [row["name"] for row in results["variants"]]
    names = [row["name"] for row in results["variants"]]
    assert names[0] == "dense/float" == results["baseline"]
    assert "dense/int8" in names and results["control"] == "dense-ft/float" in names
    for plan in ("default", "high"):
        for variant in ("float", "sparse", "int8", "sparse-int8"):
            assert f"{plan}/{variant}" in names
    for row in results["variants"]:
        assert VARIANT_KEYS <= set(row), row["name"]
        timing = latency["files"][row["name"]]
        assert row["latency_ms_median"] == timing["median_ms"] > 0
        assert row["x_faster"] == timing["x_faster"]
        assert row["x_faster_range"] == timing["x_faster_range"]
        assert len(timing["round_medians_ms"]) == 2
    assert_speedups_from_rounds(latency)
    assert latency["files"]["dense/float"]["x_faster"] == 1.0
    assert {t["plan"] for t in results["targets"]} == {"default", "high"}
    assert all({"x_smaller_raw", "size_met", "accuracy_met", "accuracy_delta_vs_control_pp"}
               <= set(t)
               for t in results["targets"])
    by_name = {row["name"]: row for row in results["variants"]}
    assert by_name["high/sparse-int8"]["sparse_storage"]
    assert by_name["high/sparse-int8"]["x_smaller_raw"] > by_name["high/int8"]["x_smaller_raw"]
    reference = results["tfmot_reference"]
    # the tutorial's schedule, 50 % -> 80 %, and its last step reached: 80 % of the kernels
    assert {k: reference["schedule"][k] for k in ("initial_sparsity", "final_sparsity")} == {
        "initial_sparsity": 0.5, "final_sparsity": 0.8}
    assert reference["kernel_sparsity"]["overall"] == pytest.approx(0.8, abs=0.005)
    assert reference["latency"]["baseline"] == "tfmot/dense/float"
    assert reference["variants"][0]["x_faster"] == 1.0
    assert all(len(row["x_faster_range"]) == 2 for row in reference["variants"])
    assert {"pruned_tflite_gzip_vs_keras_gzip", "pruned_dynamic_gzip_vs_keras_gzip"} <= set(
        reference["tutorial_method"]
    )
    work = tmp_path / "results_files"
    assert (work / "report" / "report.json").exists()
    assert (work / "report" / "size_vs_accuracy.png").exists()
    text = readme.read_text()
    assert "old" not in text and text.endswith("after\n")
    assert "| `high/sparse-int8` |" in text and text.count(export_sizes.BEGIN) == 1
    assert "2 interleaved rounds of 5 runs" in text and "x faster [min, max" in text


def test_missing_mnist_is_an_error(tmp_path, capsys):
    code = export_sizes.main(["--quick", "--data", str(tmp_path / "nope"),
                              "--out", str(tmp_path / "r.json")])
    assert code == 2
    assert "MNIST not found" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
