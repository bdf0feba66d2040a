"""kprune.report: compare variants against the dense float baseline; json, md and png."""

import json
from pathlib import Path

import numpy as np
import pytest

import kprune
from kprune import _compat, export, report

keras = _compat.keras

VARIANT_KEYS = {
    "name", "path", "accuracy", "accuracy_delta_pp", "bytes", "gzip_bytes", "x_smaller_raw",
    "x_smaller_gzip", "params", "nonzero_params", "latency_ms_median", "x_faster",
    "sparse_storage", "densify_ops", "layers", "tensors", "tflite_weight_sparsity",
}


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="head"),
        ],
        name="tiny",
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dense model and a 75%-pruned copy (fc1 unstructured, by hand), exported."""
    out = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    x = rng.random((200, 8, 8, 1), dtype=np.float32)
    dense = _model()
    y = dense.predict(x, verbose=0).argmax(axis=1)
    plan = kprune.PruningPlan([kprune.LayerRule("fc1", target=0.75)])
    pruned = _model()
    fc1 = pruned.get_layer("fc1")
    w = fc1.kernel.numpy()
    fc1.kernel.assign(np.where(np.abs(w) > np.quantile(np.abs(w), 0.75), w, 0.0))
    base = export.to_tflite(dense, out / "dense.tflite", variant="dense")
    runs = export.export_variants(pruned, out, ["float", "sparse", "int8", "sparse-int8"],
                                  representative_data=x[:50], prefix="pruned-")
    variants = [report.Variant.from_export(base, model=dense, group="dense", name="dense")]
    variants += [
        report.Variant.from_export(r, model=pruned, group="pruned", plan=plan)
        for r in runs.values()
    ]
    return out, x, y, variants


@pytest.fixture(scope="module")
def result(setup):
    out, x, y, variants = setup
    return report.compare(variants, baseline="dense", x_test=x, y_test=y,
                          out_dir=out / "report", latency_repeats=3, latency_warmup=1)


def test_report_json_schema(result):
    data = json.loads(result.json_path.read_text())
    assert data == json.loads(json.dumps(result.data))
    assert data["schema_version"] == report.SCHEMA_VERSION
    assert {"tensorflow", "tf_keras", "tfmot", "litert", "python"} <= set(data["versions"])
    assert all(data["versions"][k] for k in ("tensorflow", "tf_keras", "tfmot", "litert"))
    assert {"platform", "cpu_count"} <= set(data["machine"])
    assert data["baseline"] == "dense" and data["test_samples"] == 200
    names = [v["name"] for v in data["variants"]]
    assert names == ["dense", "pruned/float", "pruned/sparse", "pruned/int8",
                     "pruned/sparse-int8"]
    for row in data["variants"]:
        assert VARIANT_KEYS <= set(row), row["name"]
        for layer in row["layers"]:
            assert set(layer) == {"name", "weight", "method", "target", "achieved"}


def test_report_numbers(result):
    base = result["dense"]
    assert base["accuracy"] == 1.0 and base["accuracy_delta_pp"] == 0.0
    assert base["x_smaller_raw"] == 1.0 and base["x_faster"] == 1.0
    float_ = result["pruned/float"]
    assert float_["accuracy_delta_pp"] == pytest.approx((float_["accuracy"] - 1.0) * 100)
    assert float_["bytes"] == pytest.approx(base["bytes"], rel=0.01)  # trap 8: raw unchanged
    assert float_["x_smaller_gzip"] > 1.5
    sparse = result["pruned/sparse"]
    assert sparse["sparse_storage"] and sparse["densify_ops"] >= 1
    assert sparse["x_smaller_raw"] == pytest.approx(base["bytes"] / sparse["bytes"])
    assert sparse["x_smaller_raw"] > 1.5
    assert result["pruned/int8"]["x_smaller_raw"] > 3
    assert not result["pruned/int8"]["sparse_storage"]
    assert float_["nonzero_params"] < float_["params"] == base["params"]
    fc1 = {layer["name"]: layer for layer in float_["layers"]}["fc1"]
    assert fc1["method"] == "unstructured" and fc1["target"] == 0.75
    assert fc1["achieved"] == pytest.approx(0.75, abs=0.01)
    tensors = {tuple(t["shape"]): t for t in sparse["tensors"]}
    assert tensors[(64, 144)]["stored_sparse"]
    assert tensors[(64, 144)]["sparsity"] == pytest.approx(0.75, abs=0.01)


def test_report_markdown_and_plots(result):
    text = result.markdown_path.read_text()
    assert text.startswith("# kprune comparison")
    assert "| variant | accuracy % | Δ pp | bytes | gzip bytes | x smaller raw" in text
    assert "`pruned/sparse-int8`" in text and "`dense` (baseline)" in text
    assert "Raw vs gzip" in text and "XNNPACK" in text
    assert "## Per-layer sparsity" in text and "| fc1 | unstructured | 0.750 |" in text
    assert str(result).startswith("| variant |")
    assert {p.name for p in result.plots} == {"size_vs_accuracy.png", "layer_sparsity.png"}
    for path in result.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({path.name})" in text


def test_sparse_storage_making_a_file_bigger_is_called_out():
    rows = [
        dict(name="a/int8", group="a", quantize="int8", sparse=False, bytes=100, gzip_bytes=50),
        dict(name="a/sparse-int8", group="a", quantize="int8", sparse=True, bytes=150,
             gzip_bytes=60),
    ]
    notes = report._storage_notes({"variants": rows})
    assert len(notes) == 2 and "*larger* raw" in notes[0] and "150 vs 100" in notes[0]


def test_bad_input(setup, tmp_path):
    out, x, y, variants = setup
    kwargs = dict(x_test=x, y_test=y, out_dir=tmp_path / "r", latency_repeats=0)
    with pytest.raises(ValueError, match="`baseline` must name one of the variants"):
        report.compare(variants, baseline="nope", **kwargs)
    with pytest.raises(ValueError, match="must be the dense float .tflite"):
        report.compare(variants, baseline="pruned/sparse", **kwargs)
    with pytest.raises(ValueError, match="unique"):
        report.compare(variants + variants[:1], baseline="dense", **kwargs)
    with pytest.raises(TypeError, match="Variant, ExportResult or"):
        report.compare([object()], baseline="dense", **kwargs)
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        report.compare([("dense", tmp_path / "missing.tflite")], baseline="dense", **kwargs)
    assert not (tmp_path / "r" / "report.json").exists()


def test_minimal_compare_without_models(setup, tmp_path):
    out, x, y, _ = setup
    result = report.compare(
        [("dense", out / "dense.tflite"), ("sparse", out / "pruned-sparse.tflite")],
        baseline="dense", x_test=x, y_test=y, out_dir=tmp_path, latency_repeats=0,
        plots=False,
    )
    row = result["sparse"]
    assert row["params"] is None and row["layers"] == [] and row["x_faster"] is None
    assert row["tflite_weight_sparsity"] > 0.5
    assert result.plots == () and (tmp_path / "report.md").exists()


def test_environment_names_the_cpu_where_the_os_tells():
    from kprune.tflite.report import environment

    machine = environment()["machine"]
    if Path("/proc/cpuinfo").exists():
        assert machine["cpu_model"]  # the int8 speed-up depends on it (VNNI or not)
        assert set(machine["cpu_flags"]) <= {"avx", "avx2", "fma", "avx512f", "avx512_vnni",
                                             "avx_vnni", "amx_int8", "neon", "asimd", "asimddp"}
