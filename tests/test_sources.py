"""kprune.sources and kprune run on data that is not MNIST: 32x32 RGB images, 5 classes,
as an .npz, as a folder of PNG files, as arrays and tf.data, with a user's .keras model."""

import json
import re

import matplotlib.image
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kprune.cli import main
from kprune.engines.tfkeras import loader
from kprune.experiments import sources
from kprune.experiments.sources import Dataset, load_data

keras = loader.keras
COLORS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30], [30, 230, 230]])
CLASSES = len(COLORS)
SHAPE = (32, 32, 3)


def color_images(n, seed):
    """Five classes of 32x32 RGB images: a class colour plus noise (learnable in an epoch)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % CLASSES
    rng.shuffle(y)
    noise = rng.normal(0, 25, (n, *SHAPE))
    x = np.clip(COLORS[y][:, None, None, :] + noise, 0, 255).astype("uint8")
    return x, y.astype("int64")


def write_npz(path, n_train=400, n_test=100, **replace):
    arrays = dict(zip(("x_train", "y_train"), color_images(n_train, 0)))
    arrays.update(zip(("x_test", "y_test"), color_images(n_test, 1)))
    arrays.update(replace)
    np.savez(path, **arrays)
    return path


def write_folder(root, n=150, classes=CLASSES):
    """A folder of PNG files in class subfolders, ``root/class_k/i.png``."""
    x, y = color_images(n, 2)
    for i, (image, label) in enumerate(zip(x, y)):
        if label < classes:
            folder = root / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            matplotlib.image.imsave(folder / f"{i}.png", image)
    return root


def user_model(rescaling=False, classes=CLASSES, shape=SHAPE):
    """A small functional classifier a user would bring (softmax output)."""
    inputs = keras.Input(shape, name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs) if rescaling else inputs
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="user_cnn")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    keras.utils.set_random_seed(0)  # the same user model whatever ran before
    model = user_model()
    model.save(root / "user.keras")
    user_model(rescaling=True).save(root / "rescaling.keras")
    return {"root": root, "npz": write_npz(root / "data.npz"),
            "folder": write_folder(root / "images"), "model": root / "user.keras",
            "rescaling_model": root / "rescaling.keras"}


# -- loading -----------------------------------------------------------------------------


def test_npz_of_any_shape_says_what_it_loaded(files, capsys):
    data = load_data(files["npz"], model=keras.models.load_model(files["model"]))
    assert data.input_shape == SHAPE and data.num_classes == 5
    assert data.counts == {"train": 400, "validation": 0, "test": 100}
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() and data.x_train.max() <= 1
    line = capsys.readouterr().out
    assert "npz file" in line and "400 train / 100 test" in line and "32x32x3" in line
    assert "5 classes" in line and "/ 255" in line


def test_a_model_with_its_own_rescaling_gets_the_pixels_as_they_are(files):
    model = keras.models.load_model(files["rescaling_model"])
    data = load_data(files["npz"], model=model, verbose=False)
    assert data.scale is None and data.x_train.max() > 200
    assert load_data(files["npz"], model=model, scale=255, verbose=False).x_train.max() <= 1


def test_a_keras3_model_with_its_own_rescaling_gets_the_pixels_as_they_are(files):
    import keras as keras3

    def classifier(*first):
        return keras3.Sequential([keras3.Input(SHAPE), *first, keras3.layers.Flatten(),
                                  keras3.layers.Dense(5, "softmax")])

    rescaling = classifier(keras3.layers.Rescaling(1 / 255))
    assert load_data(files["npz"], model=rescaling, verbose=False).x_train.max() > 200
    assert load_data(files["npz"], model=classifier(), verbose=False).x_train.max() <= 1


def test_image_folder_takes_the_model_input_size_and_splits_per_class(files):
    model = user_model(shape=(24, 24, 1))  # grayscale, smaller: resized by Keras
    data = load_data(files["folder"], model=model, test_split=0.2, seed=0, verbose=False)
    assert data.input_shape == (24, 24, 1)
    assert data.class_names == tuple(f"class_{k}" for k in range(5))
    assert set(np.unique(data.y_test)) == set(range(5))  # every class in both splits
    assert data.counts["train"] + data.counts["test"] == 150
    assert data.counts["test"] == 30


def test_image_folder_with_train_and_test_subfolders(tmp_path):
    write_folder(tmp_path / "train", n=50)
    write_folder(tmp_path / "test", n=20)
    data = load_data(tmp_path, verbose=False)  # no model: the first image's size, RGBA PNGs
    assert data.counts == {"train": 50, "validation": 0, "test": 20}
    assert data.input_shape[:2] == (32, 32)
    assert "train/, test/" in data.source


def test_validation_never_overlaps_the_test_split(files):
    data = load_data(files["folder"], model=user_model(), verbose=False)
    data = data.subset(100, 25, seed=1).hold_out(0.2, seed=1)
    train, val, test = (set(data.files[split]) for split in ("train", "val", "test"))
    assert len(val) == 20 and len(train) == 80 and len(test) == 25
    assert not (val & test) and not (train & test) and not (train & val)
    # and the arrays are the files' images: the validation images are training images
    full = load_data(files["folder"], model=user_model(), verbose=False)
    position = {path: i for i, path in enumerate(full.files["train"])}
    np.testing.assert_array_equal(data.x_val, full.x_train[[position[p] for p in data.files["val"]]])


def test_arrays_and_tf_data_from_python(files):
    (x, y), (xt, yt) = color_images(60, 0), color_images(20, 1)
    from_arrays = load_data(((x, y), (xt, yt)), verbose=False)
    tf = loader.tf
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # batched
    test = tf.data.Dataset.from_tensor_slices((xt, yt))  # unbatched
    from_tf = load_data((train, test), verbose=False)
    np.testing.assert_array_equal(from_tf.x_train, from_arrays.x_train)
    np.testing.assert_array_equal(from_tf.y_test, from_arrays.y_test)
    assert from_tf.source == "tf.data datasets"


def test_grayscale_images_without_channel_axis_and_flat_vectors_fit_their_models():
    x, y = np.zeros((30, 8, 8), "uint8"), np.arange(30) % 3
    data = load_data(((x, y), (x[:6], y[:6])), verbose=False)
    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    mlp = keras.Sequential([keras.Input((64,)), keras.layers.Dense(3)])
    assert data.fit_to(cnn).input_shape == (8, 8, 1)
    assert data.fit_to(mlp).input_shape == (64,)


def test_fashion_mnist_without_the_keras_cache_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST is not in the Keras cache"):
        load_data("fashion-mnist")


@pytest.mark.slow
def test_mnist_idx_folder_is_read_as_before(mnist_dir):
    from kprune.experiments.data import load_mnist

    data = load_data(mnist_dir, verbose=False)
    (x_train, y_train), _ = load_mnist(mnist_dir, verbose=False)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.y_train, y_train)
    assert data.num_classes == 10 and "IDX files in" in data.source


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "replace, message",
    [
        ({"y_test": None}, r"missing key\(s\) \['y_test'\]"),
        ({"y_train": np.linspace(0, 4, 400)}, r"y_train must hold integer class labels"),
        ({"y_train": np.eye(5)[np.arange(400) % 5]}, r"one-hot labels: pass y.argmax"),
        ({"y_train": np.zeros(400, "int64")}, r"training split has a single class"),
        ({"x_test": np.zeros((100, 16, 16, 3), "uint8")}, r"x_train and x_test must hold examples"),
    ],
)
def test_bad_npz_is_refused_with_the_reason(tmp_path, replace, message):
    if replace.get("y_test", 0) is None:
        arrays = dict(zip(("x_train", "y_train"), color_images(400, 0)))
        arrays["x_test"] = arrays["x_train"]
        np.savez(tmp_path / "bad.npz", **arrays)
    else:
        write_npz(tmp_path / "bad.npz", **replace)
    with pytest.raises(ValueError, match=message):
        load_data(tmp_path / "bad.npz", verbose=False)


def test_a_folder_with_one_class_is_refused(tmp_path):
    write_folder(tmp_path / "one", n=20, classes=1)
    with pytest.raises(ValueError, match=r"has one class subfolder \('class_0'\); a classifier "
                                         r"needs images in at least two"):
        load_data(tmp_path / "one", verbose=False)


def test_image_size_and_class_count_must_fit_the_model(files):
    data = load_data(files["npz"], verbose=False)
    with pytest.raises(ValueError, match=r"holds examples of shape \(32, 32, 3\) but model "
                                         r"'user_cnn' takes inputs of shape \(28, 28, 1\)"):
        data.fit_to(user_model(shape=(28, 28, 1)))
    with pytest.raises(ValueError, match=r"has 5 classes \(labels 0..4\) but model 'user_cnn' "
                                         r"has 3 outputs"):
        data.fit_to(user_model(classes=3))
    binary = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(),
                               keras.layers.Dense(1, activation="sigmoid")], name="binary")
    with pytest.raises(ValueError, match=r"must output one score per class"):
        data.fit_to(binary)


def test_a_source_that_is_nowhere_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Received: source='.*nowhere' \(nothing at"):
        load_data(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"a \.txt file"):
        (tmp_path / "data.txt").write_text("1, 2, 3")
        load_data(tmp_path / "data.txt")
    with pytest.raises(TypeError, match=r"Received: source of type int"):
        load_data(3)
    with pytest.raises(ValueError, match=r"Argument `scale` must be 'auto'"):
        load_data("mnist", scale=-1)


def test_hold_out_twice_is_refused():
    x, y = color_images(20, 0)
    data = Dataset(x, y, x, y).hold_out(0.2)
    with pytest.raises(ValueError, match="already holds a validation split"):
        data.hold_out(0.2)


# -- the CLI on the user's files ---------------------------------------------------------


def recipe_file(folder, name, **keys):
    spec = {"subset": {"train": 300, "test": 100}, "validation": 0.1, "seed": 0,
            "baseline": {"epochs": 5, "batch_size": 32, "learning_rate": 0.01},
            "workflow": {"name": "gradual", "epochs": 1},
            "export": {"variants": ["float", "int8"], "calibration_samples": 50,
                       "latency_repeats": 2}, **keys}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, data, learning_rate",
    [("user.keras", "data.npz", 0.01), ("user.keras", "images", 0.01),
     ("lenet-5", "data.npz", 0.001)],
    ids=["npz", "image-folder", "built-in"],
)
def test_kprune_run_on_the_users_model_and_data(files, tmp_path, model, data, learning_rate,
                                                capsys):
    recipe = recipe_file(files["root"], f"recipe-{model}-{data}".replace(".", "-"),
                         model=model, data=data,
                         baseline={"epochs": 5, "batch_size": 32, "learning_rate": learning_rate},
                         workflow={"name": "gradual", "epochs": 2})
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"recipe.yaml", "plan.json", "baseline.keras", "pruned.keras", "report.json",
            "report.md", "dense-float.tflite", "pruned-float.tflite",
            "pruned-int8.tflite"} <= names
    report = json.loads((out / "report.json").read_text())
    assert report["extra"]["data"]["input_shape"] == list(SHAPE)
    assert report["extra"]["data"]["classes"] == 5
    assert report["extra"]["data"]["validation"] > 0
    accuracy = {v["name"]: v["accuracy"] for v in report["variants"]}
    assert accuracy["dense/float"] > 0.8, accuracy  # chance is 0.2
    assert accuracy["pruned/int8"] > 0.8, accuracy
    assert "5 classes" in capsys.readouterr().out


@pytest.mark.slow
def test_run_overrides_data_and_model_on_the_command_line(files, tmp_path, capsys, monkeypatch):
    recipe = recipe_file(files["root"], "override", model="lenet-300-100", data="mnist",
                         baseline={"epochs": 1, "batch_size": 32})
    monkeypatch.chdir(files["root"])  # --data/--model paths are taken from here
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--data", "images",
                 "--model", "user.keras"]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["extra"]["data"]["source"].startswith("image folder")
    assert report["extra"]["recipe"]["model"].endswith("user.keras")


@pytest.mark.slow
def test_sensitivity_and_export_take_the_users_files(files, tmp_path, capsys):
    model = files["model"]
    assert main(["sensitivity", str(model), "--data", str(files["npz"]),
                 "--out", str(tmp_path / "sens"), "--samples", "40"]) == 0
    assert (tmp_path / "sens" / "suggested_plan.yaml").is_file()
    assert main(["export", str(model), "--data", str(files["folder"]), "--quantize", "int8",
                 "--out", str(tmp_path / "exp")]) == 0
    report = json.loads((tmp_path / "exp" / "report.json").read_text())
    assert report["extra"]["data"]["source"].startswith("image folder")
    assert "validation examples" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "nowhere.npz"], r"Key `data.source` \(--data\) is neither one of"),
        (["--data", "one_class"], r"has one class subfolder \('class_0'\)"),
        (["--data", "tiny.npz"], r"holds examples of shape \(16, 16, 3\) but model 'user_cnn'"),
        (["--data", "data.npz", "--model", "three.keras"],
         r"has 5 classes \(labels 0..4\) but model 'user_cnn' has 3 outputs"),
        (["--model", "missing.keras"], r"Key `model` \(--model\) is neither a built-in"),
    ],
)
def test_bad_data_or_model_on_the_command_line_writes_nothing(files, tmp_path, args, message,
                                                              capsys, monkeypatch):
    root = files["root"]
    monkeypatch.chdir(root)
    if not (root / "one_class").exists():
        write_folder(root / "one_class", n=20, classes=1)
        write_npz(root / "tiny.npz", x_train=np.zeros((400, 16, 16, 3), "uint8"),
                  x_test=np.zeros((100, 16, 16, 3), "uint8"))
        user_model(classes=3).save(root / "three.keras")
    recipe = recipe_file(root, "bad", model="user.keras", data="data.npz")
    out = tmp_path / "never"
    assert main(["run", str(recipe), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists()


def test_export_and_sensitivity_refuse_data_that_does_not_fit(files, tmp_path, capsys):
    three = files["root"] / "three-classes.keras"
    user_model(classes=3).save(three)
    for command in (["export", str(three), "--quantize", "int8"], ["sensitivity", str(three)]):
        out = tmp_path / command[0]
        assert main([*command, "--data", str(files["npz"]), "--out", str(out)]) == 2
        assert "has 3 outputs" in capsys.readouterr().err
        assert not out.exists()


def test_sources_module_is_reachable_from_the_top():
    import kprune

    assert kprune.sources is sources


def test_the_readme_template_recipe_validates_with_the_users_files(files):
    from pathlib import Path

    from kprune.experiments.recipe import Recipe

    template = Path(__file__).parents[1] / "examples" / "template" / "your_model_your_data.yaml"
    recipe = Recipe.load(template, overrides={"model": ("--model", str(files["model"])),
                                              "data.source": ("--data", str(files["folder"]))})
    assert recipe.data.scale == "auto" and recipe.baseline.epochs == 0
    with pytest.raises(ValueError, match=r"Key `model` \(line \d+\) is neither a built-in"):
        Recipe.load(template)  # its placeholders are not files


# -- damaged data files: one line, exit 2, nothing written -------------------------------


def test_a_damaged_image_in_a_folder_is_named(tmp_path, capsys):
    folder = write_folder(tmp_path / "images", n=20)
    (folder / "class_1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"an image could not be read"):
        load_data(folder, model=user_model(), verbose=False)


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "small.npz"
    return write_npz(path, n_train=30, n_test=10).read_bytes()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000),
       flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=6))
@pytest.mark.slow
def test_damaged_npz_gets_one_line_through_the_cli(files, small_npz, tmp_path, cut, flips,
                                                   capsys):
    raw = bytearray(small_npz[: max(cut, len(small_npz) // 3) if cut < len(small_npz) else None])
    for position, value in flips:
        raw[position % len(raw)] ^= value
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(raw))
    out = tmp_path / "never"
    code = main(["export", str(files["model"]), "--data", str(damaged), "--out", str(out)])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert err.count("\n") == 1 and str(damaged) in err, err
        assert not out.exists()
    else:  # the damage missed everything that matters (e.g. zip padding): a full export
        assert (out / "report.json").is_file()
    __import__("shutil").rmtree(out, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("when, heading", [("before", "[2/5]"), ("after", "[3/5]")])
def test_a_recipe_removes_channels_before_or_after_the_sparse_plan(files, tmp_path, capsys,
                                                                   when, heading):
    recipe = recipe_file(files["root"], "structural", model="user.keras", data="data.npz",
                         baseline={"epochs": 5, "batch_size": 32, "learning_rate": 0.01},
                         structural={"fraction": 0.5, "scope": "layer", "when": when,
                                     "fine_tune_epochs": 1 if when == "before" else 3})
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"{heading} structural: remove 0.5 of the channels (layer, l1)" in printed
    from kprune.core.plan import PruningPlan
    from kprune.engines.saving import load_model
    from kprune.engines.verify import sparsity_report

    dense, pruned = (load_model(out / f"{name}.keras") for name in ("baseline", "pruned"))
    assert dense.get_layer("conv2").filters == 16 and pruned.get_layer("conv2").filters == 8
    assert pruned.count_params() < dense.count_params() / 2
    # every target reached, 2:4 on the smaller conv2 (re-formed after the removal, if after)
    assert sparsity_report(pruned, plan=PruningPlan.default(), strict=True).ok
    report = json.loads((out / "report.json").read_text())
    assert {v["name"]: v["accuracy"] for v in report["variants"]}["pruned/int8"] > 0.8


def test_an_image_folder_for_a_model_with_two_channels_is_refused(files):
    with pytest.raises(ValueError, match=r"The model takes 2 channels; image folders give 1 "
                                         r"\(grayscale\), 3 \(RGB\) or 4 \(RGBA\)\. Received: "
                                         r"model input with 2 channels"):
        load_data(files["folder"], model=user_model(shape=(32, 32, 2)), verbose=False)
