"""Allocation, sensitivity and the workflows on Keras 3 models: the same answers as on the
tf_keras twin with the same weights, and Keras 3 models back."""

import keras
import numpy as np
import pytest

import kprune
from kprune.engines.tfkeras import loader
from kprune.methods import allocation, sensitivity
from tests import keras3_models

tf_keras = loader.keras


def _twins():
    """small_cnn in Keras 3 and in tf_keras, with the same (random) weights."""
    tf_model = keras3_models.small_cnn(tf_keras)
    k3_model = keras3_models.small_cnn(keras)
    k3_model.set_weights(tf_model.get_weights())
    return tf_model, k3_model


def test_global_plan_is_the_same_as_for_the_tf_keras_twin():
    tf_model, k3_model = _twins()
    before = [np.array(w) for w in k3_model.get_weights()]
    ours = allocation.global_plan(k3_model, 0.8, exclude=["head"])
    theirs = allocation.global_plan(tf_model, 0.8, exclude=["head"])
    assert ours == theirs
    assert ours.allocation == theirs.allocation
    assert str(ours.allocation) == str(theirs.allocation)
    assert [row.name for row in ours.allocation.rows] == ["conv_a", "conv_b", "dense_a",
                                                          "dense_b", "head"]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, k3_model.get_weights()))
    # the plan prunes the Keras 3 model to its shares
    pruned = kprune.apply(k3_model, ours, steps_per_epoch=4, epochs=1)
    assert pruned._kprune_plan["dense_a"].target == ours.allocation["dense_a"].sparsity


def test_global_plan_and_sensitivity_take_a_subclassed_model_and_nested_layers():
    from tests.test_nested import block_model

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc1 = keras.layers.Dense(8, name="fc1")
            self.fc2 = keras.layers.Dense(2, name="fc2")

        def call(self, x):
            return self.fc2(self.fc1(x))

    net = Net()
    net(np.zeros((1, 4), np.float32))
    plan = allocation.global_plan(net, 0.5)
    assert [row.name for row in plan.allocation.rows] == ["fc1", "fc2"]
    assert abs(plan.allocation.sparsity - 0.5) < 0.05
    nested = allocation.global_plan(block_model(), 0.5, exclude=["head"])
    assert [row.name for row in nested.resolve(block_model()).pruned] == [
        "block/fc_a", "block/fc_b", "block/fc_c"]
    x = np.random.default_rng(0).normal(size=(32, 16)).astype("float32")
    scanned = sensitivity.scan(block_model(), x, np.zeros(32, "int64"), sparsities=(0.0, 0.5),
                               progress=False)
    assert scanned.layers == [
        "block/fc_a", "block/fc_b", "block/fc_c", "head"]


def _two_layer(lib):
    return lib.Sequential([lib.Input((28, 28, 1)), lib.layers.Flatten(name="flatten"),
                           lib.layers.Dense(32, activation="relu", name="fc"),
                           lib.layers.Dense(10, name="head")], name="two_layer")


@pytest.fixture(scope="module")
def trained_twins(mnist_small):
    """A two-layer MNIST classifier trained 1 epoch in tf_keras, and its Keras 3 twin."""
    from kprune.methods.trainer import Trainer

    (x, y), _ = mnist_small
    tf_keras.utils.set_random_seed(0)
    tf_model = _two_layer(tf_keras)
    Trainer(x, y, batch_size=64).fit(tf_model, 1)
    k3_model = _two_layer(keras)
    k3_model.set_weights(tf_model.get_weights())
    return tf_model, k3_model


@pytest.mark.slow
def test_sensitivity_scan_of_a_keras3_model_matches_its_tf_keras_twin(trained_twins,
                                                                     mnist_small):
    from kprune import sensitivity

    tf_model, k3_model = trained_twins
    _, (x_val, y_val) = mnist_small
    x_val, y_val = x_val[:1000], y_val[:1000]
    before = [np.array(w) for w in k3_model.get_weights()]
    ours = sensitivity.scan(k3_model, x_val, y_val, sparsities=(0.5, 0.95), progress=False)
    theirs = sensitivity.scan(tf_model, x_val, y_val, sparsities=(0.5, 0.95), progress=False)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, k3_model.get_weights()))
    assert ours.layers == theirs.layers == ["fc", "head"]
    assert ours.dense_accuracy > 0.7  # chance is 0.1
    for mine, tfmots in zip(ours.rows, theirs.rows):
        assert (mine.layer, mine.type, mine.weights, mine.sparsity) == (
            tfmots.layer, tfmots.type, tfmots.weights, tfmots.sparsity)
        assert abs(mine.accuracy - tfmots.accuracy) <= 0.002  # one example of 1,000
    assert ours.curve("fc")[-1][1] < ours.dense_accuracy  # 95 % of fc removed costs accuracy
    assert ours.to_plan(max_drop_pp=1.0) == theirs.to_plan(max_drop_pp=1.0)


@pytest.mark.slow
def test_sensitivity_finetune_on_a_keras3_model_recovers_accuracy(trained_twins, mnist_small):
    from kprune import sensitivity
    from kprune.methods.trainer import Trainer

    _, k3_model = trained_twins
    (x, y), (x_val, y_val) = mnist_small
    plain = sensitivity.scan(k3_model, x_val[:1000], y_val[:1000], sparsities=(0.95,),
                             layers=["fc"], progress=False)
    tuned = sensitivity.scan(k3_model, x_val[:1000], y_val[:1000], sparsities=(0.95,),
                             layers=["fc"], progress=False,
                             finetune=Trainer(x[:2000], y[:2000], batch_size=64))
    assert tuned.finetune_epochs == 1
    assert tuned.curve("fc")[0][1] > plain.curve("fc")[0][1]  # fine-tuning recovers some


@pytest.mark.slow
@pytest.mark.parametrize("workflow", ["one_shot", "gradual", "iterative", "rewind"])
def test_workflows_prune_a_keras3_model_and_return_a_stripped_keras3_model(
        workflow, trained_twins, mnist_small):
    from kprune import workflows
    from kprune.engines import is_keras3
    from kprune.engines.keras3.wrap import wrapped_layers

    _, k3_model = trained_twins
    (x, y), (x_val, y_val) = mnist_small
    before = [np.array(w) for w in k3_model.get_weights()]
    trainer = workflows.Trainer(x[:2000], y[:2000], validation_data=(x_val[:1000], y_val[:1000]),
                                batch_size=64)
    keras.utils.set_random_seed(0)
    if workflow == "one_shot":
        result = workflows.one_shot(k3_model, 0.8, trainer=trainer, finetune_epochs=1)
    elif workflow == "gradual":
        result = workflows.gradual(k3_model, 0.8, trainer=trainer, epochs=2)
    elif workflow == "iterative":
        result = workflows.iterative(k3_model, 0.8, trainer=trainer, rounds=2)
        assert result.note == "reached the target at round 2 of 2"
    else:  # the mask of one pruning epoch, rewound to the weights given, retrained masked
        result = workflows.rewind(k3_model, 0.8, trainer=trainer, epochs=1)
        assert [r.stage for r in result.history] == ["dense", "prune", "rewind", "retrain"]
    final = result.model
    assert is_keras3(final) and not wrapped_layers(final)
    assert [layer.name for layer in final.layers] == ["flatten", "fc", "head"]
    report = kprune.sparsity_report(final, plan=result.plan, strict=True)
    assert report.ok and abs(report["fc"].achieved - 0.8) < 0.01
    assert report["head"].achieved == 0.0
    assert result.masks.keys() == {"fc"}
    assert np.array_equal(result.masks["fc"]["kernel"], np.asarray(final.get_layer("fc").kernel) != 0)
    if workflow != "rewind":
        stage = "finetune" if workflow == "one_shot" else "prune"
        assert [r.stage for r in result.history] == ["dense"] + [stage] * (len(result.history) - 1)
    assert result.final.sparsity["fc"] == pytest.approx(0.8, abs=0.01)
    assert result.accuracy > 0.6  # chance is 0.1
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, k3_model.get_weights()))


def _check_methods_run(out, backend):
    assert out["backend"] == backend
    assert out["seeded_twice_same"] and out["other_seed_differs"]  # the same seed, the same weights
    # interrupted after its first epoch, resumed: the masks and weights of a run never stopped
    assert out["interrupted"]
    assert out["checkpoints"] == ["prune-r0-done", "prune-r0-epoch1", "prune-r0-epoch2"]
    assert out["resumed_same_masks"] and out["resumed_same_weights"]
    assert out["rewind_note"] == "rewound to weights after epoch 1, mask kept"
    assert out["rewind_ok"] and out["rewind_zeros_are_the_mask"]
    assert out["stepper_fired"][0] == 1  # the 2:4 masks, at the first step
    assert out["stepper_report"] == {"conv_a": ["unstructured", 0.5], "conv_b": ["2:4", 0.5],
                                     "dense_a": ["2:4", 0.5], "dense_b": ["2:4", 0.5],
                                     "head": ["skip", 0.0]}


@pytest.mark.slow  # nine short fits
def test_seeded_trainers_checkpoints_late_rewind_and_stepper_on_keras3(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("runs in-process on the TensorFlow backend")
    _check_methods_run(keras3_models.methods_run(tmp_path), "tensorflow")


@pytest.mark.slow
def test_seeded_trainers_checkpoints_late_rewind_and_stepper_on_the_jax_backend(tmp_path,
                                                                               jax_env):
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json, pathlib, sys; from tests import keras3_models; "
            "print(json.dumps(keras3_models.methods_run(pathlib.Path(sys.argv[1]))))")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=600, cwd=root, env=jax_env)
    assert run.returncode == 0, run.stderr[-3000:]
    _check_methods_run(json.loads(run.stdout.strip().splitlines()[-1]), "jax")


ON_JAX = """
import json, sys
import keras, numpy as np
import kprune
from kprune import allocation, sensitivity, workflows
from tests import keras3_models

weights = np.load(sys.argv[1])
model = keras3_models.small_cnn(keras)
model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
y = x.reshape(64, -1)[:, :10].argmax(1)
trainer = workflows.Trainer(x, y, validation_data=(x, y), batch_size=16)
out = {"backend": keras.backend.backend(),
       "plan": allocation.global_plan(model, 0.8).to_dict(),
       "allocation": allocation.global_plan(model, 0.8).allocation.to_dict(),
       "scanned": sensitivity.scan(model, x, y, sparsities=(0.5,), progress=False,
                                   layers=["dense_a"], finetune=trainer).layers}
for name, result in (("one_shot", workflows.one_shot(model, 0.8, trainer=trainer)),
                     ("gradual", workflows.gradual(model, 0.8, trainer=trainer, epochs=2)),
                     ("rewind", workflows.rewind(model, 0.8, trainer=trainer, epochs=1))):
    report = kprune.sparsity_report(result.model, plan=result.plan, strict=True)
    kept = np.asarray(result.model.get_layer("dense_a").kernel) != 0
    out[name] = {"ok": report.ok, "module": type(result.model).__module__,
                 "sparsity": result.sparsity,
                 "zeros_are_the_mask": bool((kept == result.masks["dense_a"]["kernel"]).all())}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_allocation_scan_and_workflows_on_the_jax_backend(tmp_path, jax_env):
    # fine-tunes and rewind's retraining hold their masks through the JAX trainer's state
    import json
    import subprocess
    import sys
    from pathlib import Path

    tf_model = keras3_models.small_cnn(tf_keras)
    np.savez(tmp_path / "weights.npz", **{f"w{i}": w for i, w in enumerate(tf_model.get_weights())})
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", ON_JAX, str(tmp_path / "weights.npz")],
                         capture_output=True, text=True, timeout=300, cwd=root, env=jax_env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    theirs = allocation.global_plan(tf_model, 0.8)  # the same plan as on tf_keras
    assert out["plan"] == theirs.to_dict()
    assert out["allocation"] == theirs.allocation.to_dict()
    assert out["scanned"] == ["dense_a"]
    for name in ("one_shot", "gradual", "rewind"):
        assert out[name]["ok"] and out[name]["module"].startswith("keras.")
        assert out[name]["sparsity"]["dense_a"] == pytest.approx(0.8, abs=0.01)
        assert out[name]["sparsity"]["head"] == 0.0
        assert out[name]["zeros_are_the_mask"]
