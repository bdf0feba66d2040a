"""run_recipe: the workflow trains and validates on training images only; test is for the report."""

import json
from dataclasses import replace

import numpy as np
import pytest

from kprune.experiments.recipe import Recipe
from kprune.experiments.runner import run_recipe
from kprune.methods import trainer as trainer_module
from kprune.methods import workflows  # noqa: F401  (before Trainer is patched: keeps the real one)


def synthetic_mnist(path, n_train=600, n_test=200):
    """An .npz MNIST look-alike: the class is a bright band, every image is numbered,
    and test images carry a marker pixel (bottom right = 255) that no training image has."""
    rng = np.random.default_rng(0)

    def images(n, marker):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 40, (n, 28, 28)).astype("uint8")
        for i, label in enumerate(y):
            x[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        x[:, 0, 0], x[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
        x[:, 27, 27] = marker
        return x, y.astype("uint8")

    (x_train, y_train), (x_test, y_test) = images(n_train, 0), images(n_test, 255)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def numbers(x):
    """The image numbers written into pixels (0, 0) and (0, 1), as a set."""
    pixels = np.rint(np.asarray(x)[:, 0, :2].reshape(len(x), 2) * 255).astype(int)
    return set((pixels[:, 0] * 256 + pixels[:, 1]).tolist())


def is_test(x):
    return np.asarray(x)[:, 27, 27].reshape(-1) > 0.5


def recipe(tmp_path, **changes):
    data = synthetic_mnist(tmp_path / "mnist.npz")
    spec = {
        "model": "lenet-300-100",
        "data": str(data),
        "subset": {"train": 500, "test": 150},
        "validation": 0.2,
        "seed": 3,
        "baseline": {"epochs": 1, "batch_size": 50},
        "plan": {"rules": [{"match": "fc1", "target": 0.5}]},
        "workflow": {"name": "iterative", "epochs": 1, "rounds": 2, "accuracy_floor": 0.3},
        "export": {"variants": ["float"], "latency_repeats": 1},
    }
    spec.update(changes)
    return Recipe.from_dict(spec)


@pytest.mark.slow
def test_the_workflow_never_sees_the_test_split(tmp_path, monkeypatch):
    trainers = []

    class RecordingTrainer(trainer_module.Trainer):
        """The real Trainer (real fits, real tfmot), remembering what it was given."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(trainer_module, "Trainer", RecordingTrainer)
    logged = []
    result = run_recipe(recipe(tmp_path), tmp_path / "run", log=logged.append)

    (trainer,) = trainers
    x_val, y_val = trainer.validation_data
    assert len(x_val) == len(y_val) == 100            # 20% of the 500-image training subset
    assert len(trainer.x) == len(trainer.y) == 400
    assert not is_test(x_val).any() and not is_test(trainer.x).any()
    assert not numbers(x_val) & numbers(trainer.x)    # validation is held out of training
    assert all(record["val_accuracy"] is not None for record in result.history)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    counts = {key: report["extra"]["data"][key] for key in ("train", "validation", "test")}
    assert counts == {"train": 400, "validation": 100, "test": 150}
    assert report["data"]["split"] == "test" and report["data"]["samples"] == 150
    assert report["test_samples"] == 150
    assert "400 train / 100 validation / 150 test examples of 28x28x1" in logged[0]
    assert "400 training / 100 validation / 150 test examples" in report["title"]


def test_a_validation_count_that_leaves_nothing_fails_before_anything_is_written(tmp_path):
    spec = recipe(tmp_path, subset={"train": None, "test": 150}, validation=600)
    with pytest.raises(ValueError, match=r"Argument `validation` must leave training "
                                         r"examples: it holds out 600 of 600"):
        run_recipe(spec, tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_trained_as_long_compares_with_a_dense_control_of_as_many_epochs(tmp_path, monkeypatch):
    from kprune.engines.saving import load_model
    from kprune.tflite.measure import predict_tflite

    fits = []
    real_fit = trainer_module.Trainer.fit

    def recording_fit(self, model, epochs, *args, **kwargs):
        fits.append(epochs)
        return real_fit(self, model, epochs, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "fit", recording_fit)
    spec = recipe(tmp_path, baseline={"epochs": 1, "batch_size": 50, "trained_as_long": True},
                  structural={"fraction": 0.5, "fine_tune_epochs": 1},
                  workflow={"name": "one-shot", "epochs": 2})
    result = run_recipe(spec, tmp_path / "run", log=lambda *_: None)

    # baseline 1, structural fine-tune 1, one-shot 2, then the dense control 1 + 2 more
    assert fits == [1, 1, 2, 3]
    run = tmp_path / "run"
    for name in ("baseline.keras", "baseline-start.keras", "pruned.keras",
                 "dense-float.tflite", "pruned-float.tflite"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    assert report["extra"]["epochs"] == {"baseline": 1, "pruned_after_baseline": 3,
                                         "dense_after_baseline": 3}
    control, start = load_model(run / "baseline.keras"), load_model(run / "baseline-start.keras")
    assert control.count_params() == start.count_params()  # dense, not structurally pruned
    assert not np.allclose(control.get_weights()[0], start.get_weights()[0])
    # the report's dense file is the control's export, and RunResult.baseline is the control
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(predict_tflite(run / "dense-float.tflite", x),
                               control.predict(x, verbose=0), atol=1e-4)
    np.testing.assert_allclose(result.baseline.predict(x, verbose=0),
                               control.predict(x, verbose=0), atol=1e-5)


def test_trained_as_long_must_be_a_bool(tmp_path):
    from kprune.experiments.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"Key `baseline.trained_as_long` must be a bool. "
                                          r"Received: baseline.trained_as_long='yes'"):
        recipe(tmp_path, baseline={"epochs": 1, "trained_as_long": "yes"})


@pytest.mark.slow
def test_learning_rate_decay_restarts_with_every_fit(tmp_path, monkeypatch):
    from kprune.engines.tfkeras import loader

    rates = []  # per fit, the rate each epoch trained at
    real_fit = trainer_module.Trainer.fit

    class Record(loader.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates[-1].append(round(float(self.model.optimizer.learning_rate), 6))

    def recording_fit(self, model, epochs, callbacks=(), **kwargs):
        rates.append([])
        return real_fit(self, model, epochs, [*callbacks, Record()], **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "fit", recording_fit)
    spec = recipe(tmp_path, baseline={"epochs": 2, "batch_size": 50, "learning_rate": 0.01,
                                      "learning_rate_decay": 0.5, "trained_as_long": True},
                  workflow={"name": "one-shot", "epochs": 3})
    run_recipe(spec, tmp_path / "run", log=lambda *_: None)
    # baseline 2 epochs, one-shot fine-tune 3, dense control 3: each from 0.01, halving
    assert rates == [[0.01, 0.005], [0.01, 0.005, 0.0025], [0.01, 0.005, 0.0025]]

    rates.clear()
    spec = replace(spec, baseline=replace(spec.baseline, learning_rate_decay="cosine"))
    run_recipe(spec, tmp_path / "cosine", log=lambda *_: None)
    assert rates == [[0.01, 0.005], [0.01, 0.0075, 0.0025], [0.01, 0.0075, 0.0025]]

    # workflow.learning_rate_decay: the fits after the baseline (fine-tune, control) decay so
    rates.clear()
    spec = replace(spec, workflow=replace(spec.workflow, learning_rate_decay=0.5))
    run_recipe(spec, tmp_path / "after", log=lambda *_: None)
    assert rates == [[0.01, 0.005], [0.01, 0.005, 0.0025], [0.01, 0.005, 0.0025]]


@pytest.mark.parametrize("key", ["baseline", "workflow"])
@pytest.mark.parametrize("decay", [0, 1.5, -0.9, "linear", True])
def test_learning_rate_decay_must_be_a_factor_in_0_1_or_cosine(tmp_path, key, decay):
    from kprune.experiments.recipe import RecipeError

    with pytest.raises(RecipeError, match=rf"Key `{key}.learning_rate_decay` must be a "
                                          r"factor per epoch in \(0, 1\] \(1: a constant "
                                          r"rate\) or 'cosine'"):
        recipe(tmp_path, **{key: {"epochs": 1, "learning_rate_decay": decay}})


def keras3_classifier(path):
    """A small Keras 3 CNN saved as .keras (a user's own model, not a built-in one)."""
    import keras

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(32, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="head")])
    model.save(path)
    return path


@pytest.mark.slow
def test_a_keras3_model_runs_through_every_stage(tmp_path):
    """Channels removed, the rate decayed per fit, gradual pruning with step checkpoints,
    a dense control trained as long, export: a Keras 3 model goes where a tf_keras one
    does, and comes back as Keras 3."""
    from kprune.engines import is_keras3
    from kprune.engines.saving import load_model

    spec = recipe(tmp_path, model=str(keras3_classifier(tmp_path / "mine.keras")),
                  baseline={"epochs": 1, "batch_size": 50, "learning_rate_decay": "cosine",
                            "trained_as_long": True},
                  structural={"fraction": 0.5, "fine_tune_epochs": 1},
                  plan="default", checkpoint_steps=4,
                  workflow={"name": "gradual", "epochs": 2, "learning_rate_decay": 0.9})
    result = run_recipe(spec, tmp_path / "run", log=lambda *_: None)
    pruned, control = (load_model(tmp_path / "run" / name)
                       for name in ("pruned.keras", "baseline.keras"))
    assert is_keras3(pruned) and is_keras3(control)
    # channels and units removed (half of them, globally); the control keeps them all
    assert control.get_layer("fc1").kernel.shape[-1] == 32
    assert pruned.get_layer("fc1").kernel.shape[-1] < 32
    assert pruned.count_params() < 0.5 * control.count_params()
    assert result.sparsity.ok and any(row.ok for row in result.sparsity.rows)  # targets met
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["extra"]["epochs"] == {"baseline": 1, "pruned_after_baseline": 3,
                                         "dense_after_baseline": 3}
    assert list((tmp_path / "run" / "checkpoints").glob("*-prune-r0-epoch1-step4"))


def test_a_keras3_model_is_refused_by_the_variational_workflow_before_training(tmp_path):
    spec = recipe(tmp_path, model=str(keras3_classifier(tmp_path / "mine.keras")),
                  workflow={"name": "variational"})
    with pytest.raises(TypeError, match="variational.sparsify trains tf_keras models; this "
                                        "is a Keras 3 model"):
        run_recipe(spec, tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


@pytest.mark.slow
def test_the_post_training_workflow_calibrates_on_training_images_and_keeps_its_zeros(
        tmp_path, monkeypatch):
    from kprune.methods import post_training

    seen, zeros = [], []
    real = post_training.prune_post_training

    def recording(model, calibration, plan, **options):
        seen.append(np.asarray(calibration))
        pruned, report = real(model, calibration, plan, **options)
        zeros.append({name: pruned.get_layer(name).kernel.numpy() == 0 for name in ("fc1", "fc2")})
        return pruned, report

    monkeypatch.setattr(post_training, "prune_post_training", recording)
    plan = {"rules": [{"match": "fc1", "target": 0.5}, {"match": "fc2", "method": "m_by_n"}]}
    spec = recipe(tmp_path, plan=plan, workflow={
        "name": "post-training", "method": "wanda", "calibration": 64,
        "finetune_epochs": 1})
    result = run_recipe(spec, tmp_path / "run", log=lambda line: None)
    assert len(seen[-1]) == 64 and not is_test(seen[-1]).any()
    report = result.sparsity
    assert report["fc1"].achieved == pytest.approx(0.5, abs=0.01)
    assert report["fc2"].n_m_violations == 0
    stage = result.history[0]
    assert stage["stage"] == "post-training" and stage["report"]["method"] == "wanda"
    assert result.history[-1]["stage"] == "finetune"
    for name, zero in zeros[-1].items():  # the fine-tune kept every zero
        assert np.all(result.pruned.get_layer(name).kernel.numpy()[zero] == 0)
