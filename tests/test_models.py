"""Tests for kprune.models."""

import numpy as np
import pytest

from kprune import models
from kprune.engines.tfkeras import loader

keras = loader.keras

EXPECTED = {
    "seed-cnn": (
        "seed_cnn",
        [
            "conv1",
            "pool1",
            "conv2",
            "bn2",
            "relu2",
            "pool2",
            "flatten",
            "fc1",
            "dropout",
            "head",
        ],
        # conv1 832 + conv2 51,264 + bn2 256 + fc1 3,212,288 + head 10,250
        3_274_890,
    ),
    "tfmot-cnn": (
        "tfmot_tutorial_cnn",
        ["reshape", "conv1", "pool1", "flatten", "head"],
        20_410,  # conv1 120 + head 20,290 (13 * 13 * 12 -> 10)
    ),
    "lenet-300-100": ("lenet_300_100", ["flatten", "fc1", "fc2", "head"], 266_610),
    "lenet-5": (
        "lenet_5",
        ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "head"],
        431_080,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_build(name):
    model_name, layer_names, params = EXPECTED[name]
    model = models.build(name)
    assert model.name == model_name
    assert [layer.name for layer in model.layers] == layer_names
    assert model.count_params() == params
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    assert models.MODELS[name] is getattr(models, models.MODELS[name].__name__)
    assert model.optimizer is None  # not compiled


def test_builds_are_fresh():
    a, b = models.build("lenet-300-100"), models.build("lenet-300-100")
    assert a is not b and a.layers[1] is not b.layers[1]


def test_seed_cnn_details():
    model = models.seed_cnn()
    bn = model.get_layer("bn2")
    assert sum(int(np.prod(w.shape)) for w in bn.non_trainable_weights) == 128
    assert model.get_layer("conv2").activation.__name__ == "linear"
    assert model.get_layer("dropout").rate == 0.4
    assert model.get_layer("head").activation.__name__ == "linear"  # logits


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("lenet5", "lenet-5"),
        ("lenet_300_100", "lenet-300-100"),
        ("seed_cnn", "seed-cnn"),
    ],
)
def test_build_typo_suggests(typo, suggestion):
    with pytest.raises(
        ValueError, match=rf"Received: name='{typo}'\. Did you mean '{suggestion}'\?"
    ):
        models.build(typo)


def test_build_unknown_lists_names():
    with pytest.raises(
        ValueError, match=r"must be a model name in \['lenet-300-100', 'lenet-5'"
    ):
        models.build("resnet-50")
    with pytest.raises(ValueError, match=r"Received: name=None"):
        models.build(None)


def test_compile_classifier_logits_and_softmax():
    model = models.compile_classifier(models.lenet_300_100(), learning_rate=0.01)
    assert model.loss.get_config()["from_logits"] is True
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    softmax = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, "softmax"),
        ]
    )
    assert models.compile_classifier(softmax).loss.get_config()["from_logits"] is False
    forced = models.compile_classifier(models.lenet_5(), from_logits=False)
    assert forced.loss.get_config()["from_logits"] is False


@pytest.mark.parametrize("lr", [0, -1.0, "fast", True])
def test_compile_classifier_bad_lr(lr):
    with pytest.raises(
        ValueError, match=r"Argument `learning_rate` must be a positive"
    ):
        models.compile_classifier(models.lenet_300_100(), learning_rate=lr)


def test_compiled_model_trains(seeded):
    model = models.compile_classifier(models.tfmot_tutorial_cnn())
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    logs = model.train_on_batch(x, np.arange(8) % 10, return_dict=True)
    assert set(logs) == {"loss", "accuracy"} and np.isfinite(logs["loss"])


def test_load_builtin_name():
    assert models.load("lenet-5").name == "lenet_5"


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_load_roundtrip(tmp_path, suffix, seeded):
    model = models.compile_classifier(models.lenet_300_100())
    path = tmp_path / f"m{suffix}"
    model.save(path)
    loaded = models.load(path)
    assert [layer.name for layer in loaded.layers] == ["flatten", "fc1", "fc2", "head"]
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    )
    assert models.load(str(path)).count_params() == 266_610


def test_load_custom_objects(tmp_path):
    class Scale(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    model = keras.Sequential([keras.Input((28, 28, 1)), Scale(name="scale")])
    path = tmp_path / "custom.keras"
    model.save(path)
    loaded = models.load(path, custom_objects={"Scale": Scale})
    assert isinstance(loaded.get_layer("scale"), Scale)


def test_load_missing_path(tmp_path):
    missing = tmp_path / "nope.keras"
    with pytest.raises(
        FileNotFoundError,
        match=r"Received: path_or_name='.*nope\.keras' \(no such file\)",
    ):
        models.load(missing)


def test_load_unknown_name_suggests():
    with pytest.raises(
        ValueError,
        match=r"Received: path_or_name='tfmot_cnn'\. Did you mean 'tfmot-cnn'\?",
    ):
        models.load("tfmot_cnn")


def test_load_wrong_type():
    with pytest.raises(TypeError, match=r"Received: path_or_name=3"):
        models.load(3)
