"""kprune.export: TFLite variants, atomic writes, bad input, pruning-preserving QAT."""

import logging
import os

import numpy as np
import pytest

import kprune
from kprune import export, measure
from kprune.engines.tfkeras import loader

keras = loader.keras


def _keep_two_of_four(w):
    """2:4 along the Keras input-channel axis (-2) by magnitude."""
    moved = np.moveaxis(np.array(w), -2, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // 4, 4)
    np.put_along_axis(groups, np.argsort(np.abs(groups), axis=-1)[..., :2], 0.0, axis=-1)
    return np.moveaxis(groups.reshape(moved.shape), -1, -2)


def _tiny(seed=0):
    """conv (1 in) -> conv (8 in, batch norm) -> dense 64 (2:4) -> head, on 8x8 inputs."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, activation="relu", name="conv1"),
            layers.Conv2D(8, 3, name="conv2"),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(name="relu2"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="fc1"),
            layers.Dense(10, name="head"),
        ],
        name="tiny",
    )
    fc1 = model.get_layer("fc1")
    fc1.kernel.assign(_keep_two_of_four(fc1.kernel.numpy()))
    return model


@pytest.fixture(scope="module")
def model():
    return _tiny()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------ variants


def test_float_export(model, tmp_path):
    result = export.to_tflite(model, tmp_path / "sub" / "m.tflite")
    assert result.path == tmp_path / "sub" / "m.tflite"
    assert result.bytes == result.path.stat().st_size
    assert (result.variant, result.quantize, result.sparse) == ("float", "none", False)
    assert result.path.read_bytes()[4:8] == b"TFL3"
    assert result.to_dict()["path"] == str(result.path)
    assert _leftovers(result.path.parent) == []


@pytest.mark.slow
def test_each_quantization_stores_the_expected_dtypes(model, x, tmp_path):
    expected = {"none": "float32", "dynamic": "int8", "int8": "int8", "float16": "float16"}
    for quantize, dtype in expected.items():
        result = export.to_tflite(
            model, tmp_path / f"{quantize}.tflite", quantize=quantize, representative_data=x
        )
        info = measure.tflite_tensors(result.path)
        fc1 = [t for t in info.weights if t.shape == (64, 128)]
        assert fc1 and fc1[0].dtype == dtype, quantize
        assert fc1[0].sparsity == pytest.approx(0.5, abs=0.01)
        assert not info.sparse_storage
    interpreter = measure.load_interpreter(tmp_path / "int8.tflite")
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


def test_sparse_adds_sparse_storage(model, tmp_path):
    dense = export.to_tflite(model, tmp_path / "dense.tflite")
    sparse = export.to_tflite(model, tmp_path / "sparse.tflite", sparse=True)
    assert sparse.variant == "sparse" and sparse.sparse
    assert sparse.bytes < dense.bytes
    info = measure.tflite_tensors(sparse.path)
    assert info.sparse_storage and info.densify_ops >= 1


@pytest.mark.slow
def test_variants_presets_and_export_variants(model, x, tmp_path):
    assert {"float", "sparse", "dynamic", "int8", "sparse-int8", "float16"} <= set(
        export.VARIANTS
    )
    with pytest.raises(TypeError):
        export.VARIANTS["float"]["sparse"] = True  # presets are read-only
    results = export.export_variants(
        model, tmp_path, ["float", "sparse-int8"], representative_data=x, prefix="p-"
    )
    assert list(results) == ["float", "sparse-int8"]
    assert results["sparse-int8"].path.name == "p-sparse-int8.tflite"
    assert (results["sparse-int8"].quantize, results["sparse-int8"].sparse) == ("int8", True)
    with pytest.raises(ValueError, match="Unknown export variant 'int4'.*Known variants"):
        export.export_variants(model, tmp_path / "none", ["float", "int4"])
    with pytest.raises(ValueError, match=r"representative_data=x_train\[:200\]"):
        export.export_variants(model, tmp_path / "none", ["int8"])
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())


def test_representative_data_uses_num_calibration(model, x, tmp_path, monkeypatch):
    seen = []
    real = export._check_representative

    def spy(model, data, num):
        dataset = real(model, data, num)
        seen[:] = list(dataset())
        return dataset

    monkeypatch.setattr(export, "_check_representative", spy)
    export.to_tflite(model, tmp_path / "m.tflite", quantize="int8", representative_data=x,
                     num_calibration=10)
    assert len(seen) == 10 and seen[0][0].shape == (1, 8, 8, 1)


# ------------------------------------------------------------------ bad input


def test_int8_without_representative_data(model, tmp_path):
    path = tmp_path / "new" / "m.tflite"
    with pytest.raises(ValueError, match=r"pass `representative_data=x_train\[:200\]`"):
        export.to_tflite(model, path, quantize="int8")
    assert not path.parent.exists()  # nothing written, not even the folder


def test_unknown_quantize(model, tmp_path):
    with pytest.raises(ValueError, match=r"`quantize` must be one of .*quantize='int4'"):
        export.to_tflite(model, tmp_path / "new" / "m.tflite", quantize="int4")
    with pytest.raises(TypeError, match="`sparse` must be True or False"):
        export.to_tflite(model, tmp_path / "new" / "m.tflite", sparse="yes")
    assert list(tmp_path.iterdir()) == []


def test_representative_data_that_does_not_fit(model, tmp_path):
    with pytest.raises(ValueError, match=r"shape \(N, 8, 8, 1\).*\(5, 28, 28, 1\)"):
        export.to_tflite(model, tmp_path / "m.tflite", quantize="int8",
                         representative_data=np.zeros((5, 28, 28, 1)))
    with pytest.raises(ValueError, match="num_calibration"):
        export.to_tflite(model, tmp_path / "m.tflite", quantize="int8",
                         representative_data=np.zeros((5, 8, 8, 1)), num_calibration=0)


def test_wrapped_model_is_rejected(model, tmp_path):
    wrapped = kprune.apply(model, kprune.PruningPlan.default(), steps_per_epoch=2, epochs=1)
    with pytest.raises(ValueError, match="call kprune.strip first"):
        export.to_tflite(wrapped, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []
    stripped = kprune.strip(wrapped)
    assert export.to_tflite(stripped, tmp_path / "m.tflite").bytes > 0


def test_keras3_and_non_models_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="tf_keras"):
        export.to_tflite("model.keras", tmp_path / "m.tflite")


def test_path_must_be_tflite_and_folder_writable(model, tmp_path):
    with pytest.raises(ValueError, match="must end in .tflite"):
        export.to_tflite(model, tmp_path / "m.keras")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="Cannot create the output folder"):
        export.to_tflite(model, blocker / "m.tflite")


# ------------------------------------------------------------------ atomic writes


def test_conversion_error_leaves_existing_file_untouched(model, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous complete file")

    def boom(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export, "convert", boom)
    with pytest.raises(RuntimeError, match="converter exploded"):
        export.to_tflite(model, path)
    assert path.read_bytes() == b"previous complete file"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_interrupt_mid_write_leaves_no_partial_file(tmp_path, monkeypatch, where):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export.os, where, interrupt)
    with pytest.raises(KeyboardInterrupt):
        export.write_atomic(path, b"TFL3" * 1000)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []
    new = tmp_path / "new.tflite"
    monkeypatch.setattr(export.os, where, interrupt)
    with pytest.raises(KeyboardInterrupt):
        export.write_atomic(new, b"TFL3" * 1000)
    monkeypatch.undo()
    assert not new.exists()


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "m.tflite"
    export.write_atomic(path, b"data")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert path.read_bytes() == b"data"


def test_write_fails_mid_way(model, tmp_path, monkeypatch):
    """A write that dies half way (disk full) leaves the old file and no temp file."""
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        export.to_tflite(model, path)
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_serving_function_that_cannot_be_traced_falls_back_to_from_keras_model(
    model, tmp_path, monkeypatch, caplog
):
    def broken(model):
        raise RuntimeError("tracing broke")

    monkeypatch.setattr(loader, "serving_function", broken)
    with caplog.at_level(logging.WARNING, logger="kprune"):
        result = export.to_tflite(model, tmp_path / "m.tflite")
    assert "from_keras_model" in caplog.text and "tracing broke" in caplog.text
    x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(
        measure.predict_tflite(result.path, x), model.predict(x, verbose=0), atol=1e-4
    )


def test_the_serving_function_converts_as_from_keras_model_does(model, tmp_path):
    """The faster path (Keras's serving function, saved with the variables only) gives the
    file ``from_keras_model`` gives: same size, signature, tensors and answers."""
    tf = loader.tf
    ours = export.to_tflite(model, tmp_path / "ours.tflite").path.read_bytes()
    theirs = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    assert len(ours) == len(theirs)
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    answers = []
    for content in (ours, theirs):
        interpreter = tf.lite.Interpreter(model_content=content)
        runner = interpreter.get_signature_runner("serving_default")
        answers.append((interpreter.get_signature_list(),
                        [(d["name"], list(d["shape_signature"]))
                         for d in interpreter.get_input_details()
                         + interpreter.get_output_details()],
                        runner(**{interpreter.get_signature_list()["serving_default"][
                            "inputs"][0]: x})))
    assert answers[0][:2] == answers[1][:2]
    assert answers[0][2].keys() == answers[1][2].keys()
    for key, value in answers[0][2].items():
        np.testing.assert_array_equal(value, answers[1][2][key])


# ------------------------------------------------------------------ PQAT


@pytest.mark.slow
def test_pqat_preserves_sparsity_into_the_tflite(model, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((128, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    zeros = model.get_layer("fc1").kernel.numpy() == 0
    qat = export.pqat_int8(model, x, y, epochs=1, batch_size=32, learning_rate=1e-2)
    assert export.is_qat_model(qat) and not export.is_qat_model(model)
    kernel = next(
        v.numpy() for v in qat.weights if v.name.startswith("fc1/kernel")
    )
    assert np.all(kernel[zeros] == 0)  # pruned weights stayed zero through fine-tuning
    assert np.any(kernel[~zeros] != model.get_layer("fc1").kernel.numpy()[~zeros])  # trained
    assert np.all(model.get_layer("fc1").kernel.numpy()[zeros] == 0)  # input untouched
    # A QAT model exports to int8 without calibration data (its ranges were learnt).
    result = export.to_tflite(qat, tmp_path / "pqat.tflite", quantize="int8", sparse=True)
    info = measure.tflite_tensors(result.path)
    (fc1,) = [t for t in info.weights if t.shape == (64, 128)]
    assert fc1.dtype == "int8" and fc1.stored_sparse
    assert fc1.sparsity >= 0.5 and fc1.n_m_ok
    assert measure.load_interpreter(result.path).get_input_details()[0]["dtype"] == np.int8
    assert measure.predict_tflite(result.path, x[:4]).shape == (4, 10)


def test_pqat_bad_input(model):
    with pytest.raises(ValueError, match="same length"):
        export.pqat_int8(model, np.zeros((4, 8, 8, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="`epochs` must be a positive integer"):
        export.pqat_int8(model, np.zeros((4, 8, 8, 1)), np.zeros(4), epochs=0)
