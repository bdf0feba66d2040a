"""kprune.measure: LiteRT accuracy, sizes, latency, tensors read back from the .tflite."""

import gzip
import logging
import re
import sys

import numpy as np
import pytest

from kprune import measure
from kprune.engines.tfkeras import loader
from kprune.tflite.export import to_tflite

keras = loader.keras


def _keep_n_of_m(w, n=2, m=4):
    """Zero the m-n smallest of every m consecutive weights along the input axis (-2)."""
    moved = np.moveaxis(np.array(w), -2, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    order = np.argsort(np.abs(groups), axis=-1)[..., : m - n]
    np.put_along_axis(groups, order, 0.0, axis=-1)
    return np.moveaxis(groups.reshape(moved.shape), -1, -2)


def _prune_fraction(w, fraction):
    threshold = np.quantile(np.abs(w), fraction)
    return np.where(np.abs(w) > threshold, w, 0.0).astype(w.dtype)


def _prune_blocks(w, fraction, block):
    """Zero whole blocks of `block` consecutive input channels (Dense kernel, axis 0)."""
    groups = w.reshape(w.shape[0] // block, block, w.shape[1])
    magnitude = np.abs(groups).mean(axis=1)
    keep = magnitude > np.quantile(magnitude, fraction)
    return (groups * keep[:, None, :]).reshape(w.shape).astype(w.dtype)


def _tiny_cnn(batch_size=None):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), batch_size=batch_size),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="fc1"),
            keras.layers.Dense(10, name="head"),
        ],
        name="tiny",
    )
    conv2 = model.get_layer("conv2")
    conv2.kernel.assign(_keep_n_of_m(conv2.kernel.numpy()))
    fc1 = model.get_layer("fc1")
    fc1.kernel.assign(_keep_n_of_m(fc1.kernel.numpy()))
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((300, 8, 8, 1), dtype=np.float32)
    return x


@pytest.fixture(scope="module")
def files(tmp_path_factory, data):
    """The tiny CNN (conv2 and fc1 2:4) exported as float, sparse, int8 and sparse-int8."""
    model = _tiny_cnn()
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for name, options in {
        "float": {},
        "sparse": dict(sparse=True),
        "int8": dict(quantize="int8"),
        "sparse-int8": dict(quantize="int8", sparse=True),
    }.items():
        paths[name] = to_tflite(
            model, out / f"{name}.tflite", representative_data=data[:100], **options
        ).path
    return model, paths


# ------------------------------------------------------------------ accuracy


def test_float_accuracy_matches_keras(files, data):
    model, paths = files
    keras_labels = model.predict(data, verbose=0).argmax(axis=1)
    y = np.random.default_rng(1).integers(0, 10, len(data))
    keras_accuracy = float(np.mean(keras_labels == y))
    tflite_scores = measure.predict_tflite(paths["float"], data, batch_size=64)
    agreement = float(np.mean(tflite_scores.argmax(axis=1) == keras_labels))
    assert agreement >= 1 - 1e-6
    assert measure.evaluate_tflite(paths["float"], data, y) == pytest.approx(
        keras_accuracy, abs=1e-6
    )
    np.testing.assert_allclose(tflite_scores, model.predict(data, verbose=0), atol=1e-4)


def test_int8_accuracy_close_to_keras(files, data):
    model, paths = files
    y = model.predict(data, verbose=0).argmax(axis=1)  # Keras accuracy is 1.0
    assert measure.evaluate_tflite(paths["int8"], data, y) >= 0.9
    assert measure.evaluate_tflite(paths["sparse-int8"], data, y) >= 0.9
    # int8 outputs are dequantized: scores on the same scale as the float model's
    scores = measure.predict_tflite(paths["int8"], data[:20])
    reference = model.predict(data[:20], verbose=0)
    assert np.max(np.abs(scores - reference)) < 0.2 * np.max(np.abs(reference))


def test_batched_equals_batch_one(files, data):
    _, paths = files
    batched = measure.predict_tflite(paths["int8"], data[:37], batch_size=16)  # padded last
    single = measure.predict_tflite(paths["int8"], data[:37], batch_size=1)
    assert batched.shape == (37, 10)
    np.testing.assert_array_equal(batched, single)


def test_fixed_batch_model_loops_batch_one(tmp_path, data):
    model = _tiny_cnn(batch_size=1)
    path = to_tflite(model, tmp_path / "fixed.tflite").path
    interpreter = measure.load_interpreter(path)
    assert list(interpreter.get_input_details()[0]["shape_signature"][:1]) == [1]
    scores = measure.predict_tflite(path, data[:5], batch_size=256)
    np.testing.assert_allclose(scores, model.predict(data[:5], verbose=0), atol=1e-4)


def test_one_hot_labels(files, data):
    model, paths = files
    y = model.predict(data, verbose=0).argmax(axis=1)
    one_hot = np.eye(10)[y]
    assert measure.evaluate_tflite(paths["float"], data, one_hot) == pytest.approx(1.0)


def test_missing_file(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        measure.evaluate_tflite(tmp_path / "nope.tflite", data, np.zeros(len(data)))
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        measure.tflite_tensors(tmp_path / "nope.tflite")
    with pytest.raises(FileNotFoundError, match="No file"):
        measure.file_sizes(tmp_path / "nope.tflite")


def test_corrupt_file(tmp_path, files, data):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer")
    with pytest.raises(ValueError, match="not a TFLite model"):
        measure.evaluate_tflite(bad, data, np.zeros(len(data)))
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(files[1]["float"].read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot load|Cannot parse"):
        measure.predict_tflite(truncated, data)


def test_bad_inputs(files, data):
    _, paths = files
    with pytest.raises(ValueError, match=r"shape \(N, 8, 8, 1\).*x.shape=\(300, 8, 8\)"):
        measure.evaluate_tflite(paths["float"], data[..., 0], np.zeros(len(data)))
    with pytest.raises(ValueError, match="same number of samples"):
        measure.evaluate_tflite(paths["float"], data, np.zeros(3))
    with pytest.raises(ValueError, match="batch_size"):
        measure.predict_tflite(paths["float"], data, batch_size=0)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_litert_is_the_runtime_and_fallback_is_logged(files, data, monkeypatch, caplog):
    _, paths = files
    assert measure.runtime_name() == "ai_edge_litert"
    monkeypatch.setattr(measure, "_RUNTIME", {})
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="kprune"):
        scores = measure.predict_tflite(paths["float"], data[:4])
    assert measure.runtime_name() == "tf.lite"
    assert "falling back to the deprecated tf.lite.Interpreter" in caplog.text
    assert scores.shape == (4, 10)


def test_sparse_int8_runs_on_builtin_kernels_when_xnnpack_refuses(
    files, data, caplog, monkeypatch
):
    """XNNPACK cannot prepare int8 weights that come out of DENSIFY: builtin kernels run."""
    _, paths = files
    monkeypatch.setattr(measure, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="kprune"):
        timing = measure.latency(paths["sparse-int8"], repeats=2, warmup=0)
    assert timing["kernels"] == "builtin"
    assert "XNNPACK delegate cannot prepare" in caplog.text
    assert not re.search(r"\SNode number", caplog.text)  # LiteRT's two messages kept apart
    assert measure.latency(paths["int8"], repeats=2, warmup=0)["kernels"] == "xnnpack"


# ------------------------------------------------------------------ sizes, latency, params


def test_file_sizes(files):
    _, paths = files
    sizes = measure.file_sizes(paths["float"])
    raw = paths["float"].read_bytes()
    assert sizes == {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9, mtime=0))}
    assert sizes["gzip_bytes"] < sizes["bytes"]


def test_sparse_storage_of_75_percent_sparse_model_is_smaller_raw(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, name="fc1"), keras.layers.Dense(10)]
    )
    fc1 = model.get_layer("fc1")
    fc1.kernel.assign(_prune_fraction(fc1.kernel.numpy(), 0.75))
    dense = to_tflite(model, tmp_path / "dense.tflite")
    sparse = to_tflite(model, tmp_path / "sparse.tflite", sparse=True)
    assert sparse.bytes < 0.8 * dense.bytes
    assert measure.file_sizes(sparse.path)["bytes"] == sparse.bytes
    info = measure.tflite_tensors(sparse.path)
    assert info.sparse_storage and info.densify_ops == 1
    (weight,) = [t for t in info.weights if t.stored_sparse]
    assert weight.sparsity == pytest.approx(0.75, abs=0.01)


def test_latency(files):
    _, paths = files
    result = measure.latency(paths["int8"], repeats=5, warmup=1, threads=1)
    assert set(result) >= {"median_ms", "p10_ms", "p90_ms", "iqr_ms", "repeats", "threads"}
    assert result["repeats"] == 5 and result["threads"] == 1 and result["batch"] == 1
    assert 0 < result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    with pytest.raises(ValueError, match="repeats"):
        measure.latency(paths["int8"], repeats=0)


def test_latency_rounds(files):
    _, paths = files
    chosen = {name: paths[name] for name in ("float", "int8", "sparse")}
    result = measure.latency_rounds(chosen, baseline="float", rounds=3, repeats=2, warmup=0)
    assert {key: result[key] for key in ("rounds", "repeats", "warmup", "threads", "batch",
                                         "baseline")} == {
        "rounds": 3, "repeats": 2, "warmup": 0, "threads": 1, "batch": 1, "baseline": "float"}
    assert result["runtime"] == measure.runtime_name()
    assert list(result["files"]) == ["float", "int8", "sparse"]
    for name, timing in result["files"].items():
        assert set(timing) == {"median_ms", "x_faster", "x_faster_range", "round_medians_ms",
                               "p10_ms", "p90_ms", "kernels"}, name
        assert len(timing["round_medians_ms"]) == 3 and timing["median_ms"] > 0
        assert 0 < timing["p10_ms"] <= timing["p90_ms"]  # over all 3 x 2 timed invokes
        low, high = timing["x_faster_range"]
        assert low <= timing["x_faster"] <= high
        assert timing["kernels"] == "xnnpack"
    base = result["files"]["float"]
    assert base["x_faster"] == 1.0 and base["x_faster_range"] == [1.0, 1.0]
    # The speed-ups are taken within a round: baseline's round median over the file's.
    int8 = result["files"]["int8"]
    ratios = [b / t for b, t in zip(base["round_medians_ms"], int8["round_medians_ms"])]
    assert int8["x_faster_range"] == [min(ratios), max(ratios)]


def test_latency_rounds_single_file_and_builtin_kernels(files, monkeypatch):
    _, paths = files
    monkeypatch.setattr(measure, "_WARNED", {str(paths["sparse-int8"])})  # no warning
    result = measure.latency_rounds({"only": paths["sparse-int8"]}, baseline="only", rounds=1,
                                    repeats=1, warmup=0)
    assert result["files"]["only"]["x_faster"] == 1.0
    assert result["files"]["only"]["kernels"] == "builtin"


def test_latency_rounds_rejects_bad_input(files, tmp_path):
    _, paths = files
    good = {"float": paths["float"]}
    with pytest.raises(ValueError, match="`paths` must be a non-empty dict"):
        measure.latency_rounds({}, baseline="float")
    with pytest.raises(ValueError, match="`paths` must be a non-empty dict"):
        measure.latency_rounds([paths["float"]], baseline="float")
    with pytest.raises(ValueError, match=r"`baseline` must be one of .*baseline='dense'"):
        measure.latency_rounds(good, baseline="dense")
    for name, value in (("rounds", 0), ("repeats", 0), ("warmup", -1), ("threads", 0),
                        ("rounds", 2.0), ("repeats", True)):
        with pytest.raises(ValueError, match=f"`{name}` must be an integer"):
            measure.latency_rounds(good, baseline="float", **{name: value})
    with pytest.raises(FileNotFoundError, match="No .tflite file"):
        measure.latency_rounds({**good, "gone": tmp_path / "gone.tflite"}, baseline="float")


def test_count_params(files):
    model, _ = files
    counts = measure.count_params(model)
    assert counts["params"] == model.count_params()
    kernels = model.get_layer("fc1").kernel.numpy().size // 2 + (
        model.get_layer("conv2").kernel.numpy().size // 2
    )
    assert counts["nonzero_params"] <= counts["params"] - kernels


def test_count_params_rejects_wrapped_model():
    import kprune

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc")])
    wrapped = kprune.apply(
        model, kprune.PruningPlan([kprune.LayerRule("fc")]), steps_per_epoch=2, epochs=1
    )
    with pytest.raises(ValueError, match="call kprune.strip"):
        measure.count_params(wrapped)


# ------------------------------------------------------------------ any data, not MNIST

# Five classes on 32x32 RGB images: each class a distinct mean colour plus noise.
COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32) * 0.6 + 0.2


def colour_images(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(COLOURS), n)
    x = COLOURS[y][:, None, None, :] + rng.normal(0, 0.25, (n, 32, 32, 3))
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    """A small CNN trained on the colour images, exported as float and int8."""
    x, y = colour_images(600)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(5, name="head"),
        ],
        name="colour",
    )
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:400], y[:400], epochs=5, batch_size=32, verbose=0)
    out = tmp_path_factory.mktemp("colour")
    paths = {
        "float": to_tflite(model, out / "float.tflite").path,
        "int8": to_tflite(model, out / "int8.tflite", quantize="int8",
                          representative_data=x[:100]).path,
    }
    return model, (x[400:], y[400:]), paths


def test_32x32x3_five_classes_float_and_int8_match_keras(colour):
    model, (x, y), paths = colour
    keras_accuracy = float(model.evaluate(x, y, verbose=0)[1])
    assert keras_accuracy >= 0.9  # the classes are separable: the test means something
    assert measure.evaluate_tflite(paths["float"], x, y) == pytest.approx(keras_accuracy,
                                                                         abs=1e-6)
    assert measure.evaluate_tflite(paths["int8"], x, y, batch_size=64) == pytest.approx(
        keras_accuracy, abs=0.02)
    assert measure.predict_tflite(paths["int8"], x[:7]).shape == (7, 5)
    detail = measure.load_interpreter(paths["int8"]).get_input_details()[0]
    assert detail["dtype"] == np.int8 and list(detail["shape"][1:]) == [32, 32, 3]


def test_labels_as_a_column_or_one_hot(colour):
    _, (x, y), paths = colour
    expected = measure.evaluate_tflite(paths["float"], x, y)
    assert measure.evaluate_tflite(paths["float"], x, y[:, None]) == expected  # CIFAR style
    assert measure.evaluate_tflite(paths["float"], x, np.eye(5)[y]) == expected
    assert measure.evaluate_tflite(paths["float"], x, y.astype(np.float32)) == expected


def test_labels_the_model_cannot_output_are_refused(colour):
    _, (x, y), paths = colour
    with pytest.raises(ValueError, match=r"labels in \[0, 4\].*Received: labels in \[0, 9\]"):
        measure.evaluate_tflite(paths["float"], x[:10], np.arange(10))
    with pytest.raises(ValueError, match="integer class labels"):
        measure.evaluate_tflite(paths["float"], x[:2], np.array([0.5, 1.0]))


def test_latency_feeds_the_files_own_shape_and_dtype(colour):
    _, _, paths = colour
    for path in paths.values():
        assert measure.latency(path, repeats=2, warmup=0)["median_ms"] > 0


def test_inputs_out_of_the_int8_range_are_warned_about(colour, caplog):
    _, (x, y), paths = colour
    with caplog.at_level(logging.WARNING, logger="kprune"):
        measure.evaluate_tflite(paths["int8"], x[:20], y[:20])
    assert "lie outside" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="kprune"):
        measure.evaluate_tflite(paths["int8"], x[:20] * 255, y[:20])  # not scaled as trained
    assert "lie outside" in caplog.text and "pixels / 255" in caplog.text


def test_flat_vector_input(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(axis=1)
    path = to_tflite(model, tmp_path / "int8.tflite", quantize="int8",
                     representative_data=x).path
    assert measure.predict_tflite(path, x).shape == (50, 3)
    assert measure.evaluate_tflite(path, x, y) >= 0.9
    assert measure.latency(path, repeats=2, warmup=0)["median_ms"] > 0


def test_uint8_input_without_a_scale_takes_raw_integers(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3), dtype="uint8"),
                              keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(4)])
    path = to_tflite(model, tmp_path / "uint8-in.tflite").path
    detail = measure.load_interpreter(path).get_input_details()[0]
    assert detail["dtype"] == np.uint8 and detail["quantization"] == (0.0, 0)
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(measure.predict_tflite(path, x), model.predict(x, verbose=0),
                               atol=1e-5)
    np.testing.assert_allclose(measure.predict_tflite(path, x.astype(np.int64)),
                               model.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="uint8 without a quantization scale"):
        measure.predict_tflite(path, x / 255)
    with pytest.raises(ValueError, match=r"must lie in \[0, 255\]"):
        measure.predict_tflite(path, x.astype(np.int64) + 1)
    assert measure.latency(path, repeats=2, warmup=0)["median_ms"] > 0


def test_open_dimensions_besides_the_batch_take_their_size_from_x(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(4)])
    path = to_tflite(model, tmp_path / "sequence.tflite").path
    x = np.random.default_rng(0).random((7, 11, 3), dtype=np.float32)
    np.testing.assert_allclose(measure.predict_tflite(path, x, batch_size=3),
                               model.predict(x, verbose=0), atol=1e-5)
    assert measure.latency(path, repeats=2, warmup=0)["median_ms"] > 0


def test_outputs_with_size_one_middle_axes_and_single_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    conv_head = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(6, 4)])
    x = np.random.default_rng(0).random((9, 4, 4, 3), dtype=np.float32)
    y = conv_head.predict(x, verbose=0).reshape(9, 6).argmax(axis=1)
    path = to_tflite(conv_head, tmp_path / "conv-head.tflite").path  # outputs (N, 1, 1, 6)
    assert measure.evaluate_tflite(path, x, y) == 1.0
    binary = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, activation="sigmoid")])
    path = to_tflite(binary, tmp_path / "binary.tflite").path
    with pytest.raises(ValueError, match=r"at least 2 classes.*\(4, 1\)"):
        measure.evaluate_tflite(path, np.zeros((4, 5), np.float32), np.zeros(4))


# ------------------------------------------------------------------ tensors


def test_tensors_read_back_sparsity_and_n_m(files):
    model, paths = files
    fc1 = model.get_layer("fc1").kernel.numpy()
    conv1 = model.get_layer("conv1").kernel.numpy()
    for name in ("float", "sparse", "int8", "sparse-int8"):
        info = measure.tflite_tensors(paths[name])
        by_op = {}
        for tensor in info.weights:
            by_op.setdefault(tensor.op, []).append(tensor)
        fully = {t.shape: t for t in by_op["FULLY_CONNECTED"]}
        tensor = fully[(64, 256)]
        assert tensor.sparsity == pytest.approx(float(np.mean(fc1 == 0)), abs=0.002)
        assert tensor.n_m_violations == 0 and tensor.n_m_ok
        convs = {t.shape: t for t in by_op["CONV_2D"]}
        assert convs[(16, 3, 3, 8)].n_m_ok
        assert convs[(8, 3, 3, 1)].n_m_violations is None  # one input channel: not checked
        assert convs[(8, 3, 3, 1)].sparsity <= float(np.mean(conv1 == 0)) + 0.02
        assert fully[(10, 64)].n_m_ok is False  # the dense head is not 2:4
        sparse = name.startswith("sparse")
        assert info.sparse_storage is sparse
        assert (info.densify_ops > 0) is sparse
        assert tensor.dtype == ("int8" if "int8" in name else "float32")
    assert "2:4 ok" in str(measure.tflite_tensors(paths["sparse-int8"]))


def test_sparse_tensor_expands_to_the_keras_kernel(files):
    model, paths = files
    fc1 = model.get_layer("fc1").kernel.numpy()
    info = measure.tflite_tensors(paths["sparse"], keep_values=True)
    (tensor,) = [t for t in info.weights if t.stored_sparse and t.shape == (64, 256)]
    np.testing.assert_array_equal(tensor.values, fc1.T)  # TFLite Dense: (out, in)
    dense = measure.tflite_tensors(paths["int8"], keep_values=True)
    sparse = measure.tflite_tensors(paths["sparse-int8"], keep_values=True)
    q_dense = {t.shape: t.values for t in dense.weights}
    q_sparse = {t.shape: t.values for t in sparse.weights}
    np.testing.assert_array_equal(q_sparse[(64, 256)], q_dense[(64, 256)])


@pytest.mark.parametrize("quantize, block", [("none", 4), ("int8", 16)])
def test_block_sparse_tensors_expand(tmp_path, quantize, block):
    """Block-sparse storage (block_map levels): float uses 1x4 blocks, int8 1x16."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((128,)), keras.layers.Dense(64, name="fc1"), keras.layers.Dense(10)]
    )
    fc1 = model.get_layer("fc1")
    fc1.kernel.assign(_prune_blocks(fc1.kernel.numpy(), 0.9, block))
    x = np.random.default_rng(0).random((50, 128), dtype=np.float32)
    plain = to_tflite(model, tmp_path / "plain.tflite", quantize=quantize,
                      representative_data=x)
    sparse = to_tflite(model, tmp_path / "sparse.tflite", quantize=quantize, sparse=True,
                       representative_data=x)
    assert sparse.bytes < plain.bytes
    want = {t.shape: t for t in measure.tflite_tensors(plain.path, keep_values=True).weights}
    info = measure.tflite_tensors(sparse.path, keep_values=True)
    (tensor,) = [t for t in info.weights if t.stored_sparse]
    np.testing.assert_array_equal(tensor.values, want[(64, 128)].values)
    assert tensor.sparsity == pytest.approx(0.9, abs=0.02)
