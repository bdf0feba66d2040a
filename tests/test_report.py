"""kprune.report: compare variants against the dense float baseline; json, md and png."""

import json
from pathlib import Path

import numpy as np
import pytest

import kprune
from kprune import export, report
from kprune.engines.tfkeras import loader

keras = loader.keras

VARIANT_KEYS = {
    "name", "path", "accuracy", "accuracy_delta_pp", "bytes", "gzip_bytes", "x_smaller_raw",
    "x_smaller_gzip", "params", "nonzero_params", "latency_ms_median", "latency_ms_p10",
    "latency_ms_p90", "latency_kernels", "x_faster", "x_faster_range", "sparse_storage", "densify_ops", "layers", "tensors", "tflite_weight_sparsity",
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
                          out_dir=out / "report", latency_repeats=3, latency_warmup=1,
                          latency_rounds=2)


def test_report_json_schema(result):
    data = json.loads(result.json_path.read_text())
    assert data == json.loads(json.dumps(result.data))
    assert data["schema_version"] == report.SCHEMA_VERSION
    assert {"tensorflow", "tf_keras", "tfmot", "litert", "python"} <= set(data["versions"])
    assert all(data["versions"][k] for k in ("tensorflow", "tf_keras", "tfmot", "litert"))
    assert {"platform", "cpu_count"} <= set(data["machine"])
    assert data["baseline"] == "dense" and data["test_samples"] == 200
    assert data["data"] == {"samples": 200, "input_shape": [8, 8, 1], "input_dtype": "float32"}
    assert data["latency"] == {"batch": 1, "rounds": 2, "repeats": 3, "warmup": 1,
                               "threads": 1, "measured": True}
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
    assert float_["bytes"] == pytest.approx(base["bytes"], rel=0.01)  # zeros alone: raw bytes unchanged
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
    assert "Measured on 200 samples of shape 8x8x1 (float32)." in text
    assert "in 2 interleaved rounds over all variants" in text and "(3 runs after 1 warm-up" in text
    assert {p.name for p in result.plots} == {"size_vs_accuracy.png", "layer_sparsity.png"}
    for path in result.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({path.name})" in text


def test_latency_is_timed_in_interleaved_rounds(result):
    for row in result.variants:
        assert row["latency_ms_median"] > 0 and row["latency_kernels"] in ("xnnpack", "builtin")
        assert 0 < row["latency_ms_p10"] <= row["latency_ms_p90"]
        low, high = row["x_faster_range"]
        assert low <= row["x_faster"] <= high
    assert result["dense"]["x_faster"] == 1.0 and result["dense"]["x_faster_range"] == [1.0, 1.0]


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
    with pytest.raises(ValueError, match="`latency_rounds` must be an integer >= 0"):
        report.compare(variants, baseline="dense", **{**kwargs, "latency_rounds": -1})
    with pytest.raises(ValueError, match="says samples=10000 but `x_test` has samples=200"):
        report.compare(variants, baseline="dense", data={"samples": 10000}, **kwargs)
    with pytest.raises(ValueError, match="says input_shape"):
        report.compare(variants, baseline="dense", data={"input_shape": [28, 28, 1]}, **kwargs)
    with pytest.raises(TypeError, match="`data` must be a short text or a dict"):
        report.compare(variants, baseline="dense", data=["mnist"], **kwargs)
    with pytest.raises(TypeError, match="`data` must be JSON-serialisable"):
        report.compare(variants, baseline="dense", data={"source": object()}, **kwargs)
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
    assert row["latency_ms_median"] is None and row["x_faster_range"] is None
    assert row["tflite_weight_sparsity"] > 0.5
    assert result.plots == () and (tmp_path / "report.md").exists()
    assert result.data["latency"]["measured"] is False
    text = (tmp_path / "report.md").read_text()
    assert "latency not measured (`latency_repeats=0`)" in text and "median of 0" not in text


def test_environment_names_the_cpu_where_the_os_tells():
    from kprune.tflite.report import environment

    machine = environment()["machine"]
    if Path("/proc/cpuinfo").exists():
        assert machine["cpu_model"]  # the int8 speed-up depends on it (VNNI or not)
        assert set(machine["cpu_flags"]) <= {"avx", "avx2", "fma", "avx512f", "avx512_vnni",
                                             "avx_vnni", "amx_int8", "neon", "asimd", "asimddp"}


# ------------------------------------------------------------------ any data, not MNIST

COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32) * 0.6 + 0.2


@pytest.mark.slow
def test_compare_on_32x32x3_images_with_five_classes_names_the_data(tmp_path):
    """Not MNIST: RGB 32x32, 5 classes (each a mean colour plus noise), float and int8."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 600)
    x = (COLOURS[y][:, None, None, :] + rng.normal(0, 0.25, (600, 32, 32, 3))).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:400], y[:400], epochs=5, batch_size=32, verbose=0)
    x_test, y_test = x[400:], y[400:, None]  # labels as an (N, 1) column, as CIFAR has them
    keras_accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
    dense = export.to_tflite(model, tmp_path / "float.tflite", variant="float")
    int8 = export.to_tflite(model, tmp_path / "int8.tflite", quantize="int8",
                            representative_data=x[:100])
    described = {"source": "synthetic colours", "split": "test", "classes": 5}
    result = report.compare(
        [report.Variant.from_export(dense, model=model, group="dense"),
         report.Variant.from_export(int8, model=model, group="dense")],
        baseline="dense/float", x_test=x_test, y_test=y_test, out_dir=tmp_path / "report",
        latency_repeats=2, latency_warmup=0, latency_rounds=1, plots=False, data=described)
    assert keras_accuracy >= 0.9
    assert result["dense/float"]["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert result["dense/int8"]["accuracy"] == pytest.approx(keras_accuracy, abs=0.02)
    data = json.loads(result.json_path.read_text())
    assert data["data"] == {**described, "samples": 200, "input_shape": [32, 32, 3],
                            "input_dtype": "float32"}
    assert data["test_samples"] == 200
    assert ("Measured on synthetic colours (test split): 200 samples of shape 32x32x3 "
            "(float32), 5 classes.") in result.markdown_path.read_text()

    text_only = report.compare([("dense", dense.path)], baseline="dense", x_test=x_test,
                               y_test=y_test, out_dir=tmp_path / "text", latency_repeats=0,
                               plots=False, data="CIFAR-like colour patches, held out")
    assert text_only.data["data"]["description"] == "CIFAR-like colour patches, held out"
    assert ("Measured on CIFAR-like colour patches, held out: 200 samples of shape 32x32x3 "
            "(float32).") in text_only.markdown_path.read_text()


def test_describe_data():
    assert report.describe_data({"source": "cifar10", "split": "test", "samples": 10000,
                                 "input_shape": [32, 32, 3], "classes": 10}) == (
        "cifar10 (test split): 10,000 samples of shape 32x32x3, 10 classes")
    assert report.describe_data({"split": "validation"}) == "the validation split"
    assert report.describe_data({}) == "unnamed data"
