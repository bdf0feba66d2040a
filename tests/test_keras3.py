"""The Keras 3 engine: the same plans, schedules, masks and reports as tfmot, on TF and JAX."""

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kprune
from kprune.core import layers
from kprune.core.plan import LayerRule, PruningPlan
from kprune.core.schedules import Schedule
from kprune.engines.callbacks import ScheduleWarning
from kprune.engines.tfkeras import loader
from tests import keras3_models

tf_keras = loader.keras
ROOT = Path(__file__).parents[1]


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# -- what each Keras 3 layer prunes ---------------------------------------------------------


def test_keras3_registry_agrees_with_tfmots_registry():
    registry = loader.PruneRegistry
    for cls, labels in registry._LAYERS_WEIGHTS_MAP.items():
        ours = getattr(keras.layers, cls.__name__, None)
        if ours is None or not labels:
            continue
        assert layers.KERAS3_PRUNED[cls.__name__] == tuple(labels), cls.__name__
    # EinsumDense is the one Keras 3 addition (tfmot has no entry: its projections sit in
    # MultiHeadAttention and KerasHub blocks, which tfmot cannot enter).
    assert {name for name, labels in layers.KERAS3_PRUNED.items()
            if "cell." not in labels[0]} - {"EinsumDense"} == {
        cls.__name__ for cls, labels in registry._LAYERS_WEIGHTS_MAP.items()
        if labels and hasattr(keras.layers, cls.__name__)}
    for cls in registry._RNN_LAYERS:
        if cls.__name__ != "RNN":
            assert layers.KERAS3_PRUNED[cls.__name__] == ("cell.kernel", "cell.recurrent_kernel")


def test_the_plan_table_is_the_same_on_both_engines():
    plan = PruningPlan.default()
    tf_table = plan.resolve(keras3_models.seed_cnn(tf_keras), steps_per_epoch=50, epochs=2)
    k3_table = plan.resolve(keras3_models.seed_cnn(keras), steps_per_epoch=50, epochs=2)
    assert str(tf_table) == str(k3_table)
    assert tf_table.to_dict() == k3_table.to_dict()
    assert k3_table["conv1"].method == "unstructured"
    assert k3_table["conv2"].method_label == "2:4"
    assert k3_table["head"].method == "skip"


def test_keras3_layers_report_kinds_and_reasons():
    dw = keras.layers.DepthwiseConv2D(3)
    dw.build((None, 8, 8, 4))
    assert layers.kind(dw) == "depthwise"
    assert layers.not_pruned_reason(dw) == "kprune's Keras 3 engine does not prune depthwise kernels"
    sep = keras.layers.SeparableConv2D(8, 3)
    sep.build((None, 8, 8, 4))
    assert [w.label for w in layers.prunable_weights(sep)] == ["pointwise_kernel"]

    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.kernel = self.add_weight(shape=(shape[-1],))

        def call(self, x):
            return x * self.kernel

    scale = Scale()
    scale.build((None, 4))
    assert "not a layer kprune's Keras 3 engine prunes" in layers.not_pruned_reason(scale)


@pytest.mark.parametrize(("engine", "who"), [("tf_keras", "tfmot"),
                                             ("keras3", "kprune's Keras 3 engine")])
def test_messages_name_the_engine_that_prunes_the_model(engine, who):
    from kprune.methods import allocation, sensitivity

    lib = tf_keras if engine == "tf_keras" else keras
    built = {}
    for name, layer, shape in (("dw", lib.layers.DepthwiseConv2D(3), (None, 8, 8, 4)),
                               ("conv1d", lib.layers.Conv1D(8, 3), (None, 12, 8)),
                               ("transposed", lib.layers.Conv2DTranspose(8, 3), (None, 6, 6, 8)),
                               ("conv", lib.layers.Conv2D(8, 3), (None, 6, 6, 8))):
        layer.build(shape)
        built[name] = layer
    assert layers.not_pruned_reason(built["dw"]) == f"{who} does not prune depthwise kernels"
    assert layers.n_m_problem(built["conv1d"], 2, 4) == (
        f"kernel has rank 3; {who} groups N:M only in rank-2 and rank-4 weights")
    assert layers.n_m_problem(built["transposed"], 2, 4) == (
        f"Conv2DTranspose: its kernel keeps output channels on the axis {who} groups N:M along")
    assert layers.block_problem(built["conv"], (16, 1)) == (
        f"kernel has rank 4; {who} prunes blocks only in 2-dimensional weights")

    inputs = lib.Input((8, 8, 4))
    outputs = lib.layers.ReLU()(lib.layers.DepthwiseConv2D(3, name="dw")(inputs))
    bare = lib.Model(inputs, outputs, name="bare")
    who = re.escape(who)
    with pytest.raises(ValueError, match=rf"'dw' \(DepthwiseConv2D\) has nothing {who} can "
                                         rf"prune \({who} does not prune depthwise kernels\)"):
        PruningPlan([LayerRule("dw", target=0.5)]).resolve(bare)
    with pytest.raises(ValueError, match=rf"'bare' has no prunable layer \(no weight {who} can"):
        allocation.global_plan(bare, 0.5)
    x, y = np.zeros((2, 8, 8, 4), np.float32), np.zeros(2)
    with pytest.raises(ValueError, match=rf"no layer with a weight that {who} can prune\)"):
        sensitivity.scan(bare, x, y, progress=False)


# -- the same masks at the same steps as tfmot ------------------------------------------------


def _record_masks(model, engine_masks, callback_base):
    """A callback that records every pruned layer's masks after each training batch."""
    record = []

    class Recorder(callback_base):
        def on_train_batch_end(self, batch, logs=None):
            record.append(engine_masks(self.model))

    return record, Recorder()


def _tfmot_masks(model):
    from kprune.engines.callbacks import wrapped_layers

    return {path: [np.array(mask.numpy()) for _, mask, _ in wrapper.pruning_vars]
            for path, wrapper in wrapped_layers(model)}


def _keras3_masks(model):
    from kprune.engines.keras3.wrap import wrapped_layers

    return {path: [np.array(mask.numpy()) for mask in wrapper.masks]
            for path, wrapper in wrapped_layers(model)}


@pytest.mark.filterwarnings("ignore::kprune.core.plan.PlanWarning")  # 2x4 blocks, not 16x1
def test_same_masks_at_the_same_firing_steps_as_tfmot():
    # unstructured on a cubic schedule (conv_a, dense_a), 2:4 along the inputs (conv_b),
    # 2x4 max-pooled blocks on a constant schedule (dense_b), head skipped
    tf_model = keras3_models.small_cnn(tf_keras)
    k3_model = keras3_models.small_cnn(keras)
    k3_model.set_weights(tf_model.get_weights())
    schedule = Schedule(frequency=3)
    plan = PruningPlan.default(schedule=schedule).with_rule(
        LayerRule("dense_a", target=0.75, schedule=schedule)).with_rule(
        LayerRule("dense_b", target=0.5, block=(2, 4), pool="MAX",
                  schedule=Schedule(kind="constant", frequency=3)))
    x = np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 10
    runs = {}
    for name, lib, engine_masks in (("tfmot", tf_keras, _tfmot_masks),
                                    ("keras3", keras, _keras3_masks)):
        model = tf_model if name == "tfmot" else k3_model
        pruned = kprune.apply(model, plan, steps_per_epoch=5, epochs=2)
        pruned.compile(optimizer=lib.optimizers.SGD(learning_rate=0.0),
                       loss=lib.losses.SparseCategoricalCrossentropy(from_logits=True))
        record, recorder = _record_masks(pruned, engine_masks, lib.callbacks.Callback)
        callbacks = kprune.callbacks() if name == "tfmot" else kprune.callbacks(pruned)
        pruned.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                   callbacks=[*callbacks, recorder])
        runs[name] = record
    assert len(runs["tfmot"]) == len(runs["keras3"]) == 10
    for step, (ours, theirs) in enumerate(zip(runs["keras3"], runs["tfmot"]), start=1):
        assert ours.keys() == theirs.keys() == {"conv_a", "conv_b", "dense_a", "dense_b"}
        for path in ours:
            for mine, tfmots in zip(ours[path], theirs[path]):
                np.testing.assert_array_equal(mine, tfmots, err_msg=f"{path} at step {step}")
    # the schedule fires at steps 1, 4, 7, 10 (at 1 its sparsity is 0: nothing changes)
    changed = [step for step in range(2, 11)
               if not np.array_equal(runs["keras3"][step - 1]["dense_a"][0],
                                     runs["keras3"][step - 2]["dense_a"][0])]
    resolved = kprune.apply(k3_model, plan, steps_per_epoch=5, epochs=2)._kprune_plan
    assert changed == resolved["dense_a"].schedule.fire_steps()[1:] == [4, 7, 10]
    assert runs["keras3"][0]["conv_b"][0].mean() == 0.5  # 2:4 from the first step
    block_mask = runs["keras3"][0]["dense_b"][0]  # constant: the target at the first step
    assert 0.45 < 1 - block_mask.mean() < 0.55 and (block_mask[0::2] == block_mask[1::2]).all()


# -- save mid-pruning, load, resume -----------------------------------------------------------


def test_save_mid_pruning_and_resume(tmp_path):
    model = keras3_models.small_cnn(keras)
    plan = PruningPlan.default()
    pruned = kprune.apply(model, plan, steps_per_epoch=5, epochs=2)
    keras3_models.compile_classifier(keras, pruned)
    x = np.random.default_rng(1).normal(size=(40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 10
    with pytest.warns(ScheduleWarning, match=r"conv_a at step 5 of 10 \(5 steps short\)"):
        pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
                   callbacks=kprune.callbacks(pruned))
    path = kprune.save_model(pruned, tmp_path / "mid.keras")
    loaded = kprune.load_model(path)

    wrapper = loaded.get_layer("prune_low_magnitude_conv_a")
    assert type(wrapper).__module__ == "kprune.engines.keras3.wrap"
    assert int(np.asarray(wrapper.pruning_step)) == 5
    assert wrapper.row == pruned.get_layer("prune_low_magnitude_conv_a").row
    assert _keras3_masks(loaded).keys() == _keras3_masks(pruned).keys()
    for path_, masks_ in _keras3_masks(pruned).items():
        for a, b in zip(masks_, _keras3_masks(loaded)[path_]):
            np.testing.assert_array_equal(a, b)
    assert loaded._kprune_plan == pruned._kprune_plan
    assert 0 < kprune.sparsity_report(loaded)["conv_a"].achieved < 0.5  # mid-schedule

    loaded.fit(x, y, batch_size=8, epochs=2, initial_epoch=1, verbose=0,
               callbacks=kprune.callbacks(loaded, strict=True))
    assert int(np.asarray(wrapper.pruning_step)) == 10
    report = kprune.sparsity_report(kprune.strip(loaded), strict=True)
    assert report["conv_a"].achieved == 0.5 and report.ok


BATCH_HOOKS = [f"on_{kind}batch_{when}" for kind in ("", "train_", "test_", "predict_")
               for when in ("begin", "end")]


def test_keras3_callbacks_hook_only_the_batch_begin_the_masks_need():
    from keras.src import backend as keras_backend

    pruned = kprune.apply(keras3_models.small_cnn(keras), steps_per_epoch=5, epochs=2)
    keras3_models.compile_classifier(keras, pruned)
    hooks = kprune.callbacks(pruned)
    overridden = {(type(callback).__name__, hook) for callback in hooks for hook in BATCH_HOOKS
                  if not getattr(getattr(callback, hook), "_is_default", False)}
    # the step counter and mask update, before each batch; no batch-end hook, so Keras 3
    # still dispatches batch ends asynchronously where the backend allows it
    assert overridden == {("UpdatePruningStep", "on_train_batch_begin")}
    listed = keras.callbacks.CallbackList(hooks, model=pruned)
    assert listed._async_train == keras_backend.IS_THREAD_SAFE

    # the guard reads each fit's steps from the optimizer, across two fits
    guard = next(c for c in hooks if type(c).__name__ == "ScheduleGuard")
    x = np.random.default_rng(3).normal(size=(40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 10
    with pytest.warns(ScheduleWarning, match=r"conv_a at step 5 of 10.*ran 5 training steps"):
        pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=hooks)
    assert guard.steps == 5
    guard.strict = True  # a second fit of 4 steps ends one step short
    with pytest.raises(RuntimeError, match=r"conv_a at step 9 of 10.*ran 4 training steps"):
        pruned.fit(x[:32], y[:32], batch_size=8, epochs=2, initial_epoch=1, verbose=0,
                   callbacks=hooks)
    assert guard.steps == 4


def test_a_keras3_model_is_saved_as_keras_only(tmp_path):
    model = keras3_models.small_cnn(keras)
    with pytest.raises(ValueError, match=r"Keras 3 model is saved as \.keras.*x\.h5"):
        kprune.save_model(model, tmp_path / "x.h5")


# -- bad input: clear errors, the model unchanged -----------------------------------------------


def test_a_subclassed_model_its_config_cannot_rebuild_is_refused_with_what_to_do():
    class Net(keras.Model):
        def __init__(self, activation):  # a function: not in a config Keras can rebuild
            super().__init__()
            self.activation = activation
            self.fc = keras.layers.Dense(4)

        def call(self, x):
            return self.activation(self.fc(x))

    net = Net(lambda x: x * 2)
    net(np.zeros((1, 3), np.float32))
    before = weights_of(net)
    with pytest.raises(TypeError, match=r"subclassed Keras 3 model .* cannot be rebuilt from "
                                        r"its config .*give the class a get_config\(\)"):
        kprune.apply(net, steps_per_epoch=1, epochs=1)
    assert same_weights(before, weights_of(net))


def test_unbuilt_keras3_model_is_refused():
    model = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="is not built"):
        kprune.apply(model, steps_per_epoch=1, epochs=1)
    assert not model.built


def test_a_layer_the_engine_cannot_prune_is_refused():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    before = weights_of(model)
    plan = PruningPlan([LayerRule("dw", target=0.5)])
    with pytest.raises(ValueError, match="'dw' .*nothing kprune's Keras 3 engine can prune.*depthwise"):
        kprune.apply(model, plan, steps_per_epoch=1, epochs=1)
    assert same_weights(before, weights_of(model))
    assert [type(layer).__name__ for layer in model.layers][1] == "DepthwiseConv2D"


def test_fit_without_the_kprune_callbacks_says_what_is_missing():
    pruned = kprune.apply(keras3_models.small_cnn(keras), steps_per_epoch=2, epochs=1)
    keras3_models.compile_classifier(keras, pruned)
    x = np.zeros((8, 8, 8, 1), np.float32)
    with pytest.raises(RuntimeError, match=r"without kprune's Keras 3 callbacks.*"
                                           r"callbacks=kprune.callbacks\(\)"):
        pruned.fit(x, np.zeros(8), epochs=1, verbose=0)


# -- one fit line for both engines: kprune.callbacks() without the model ---------------------------

CALLBACKS_PLAN = PruningPlan([LayerRule("conv_a", target=0.5), LayerRule("dense_a", target=0.75),
                              LayerRule("conv_b", method="m_by_n"),
                              LayerRule("dense_b", target=0.5, schedule=Schedule(kind="constant"))])

FIT_WITHOUT_THE_MODEL = """
import json
import keras
import numpy as np
import kprune
from kprune.core.plan import LayerRule, PruningPlan
from kprune.core.schedules import Schedule
from tests import keras3_models

plan = PruningPlan.from_dict(json.loads({plan!r}))
pruned = kprune.apply(keras3_models.small_cnn(keras), plan, steps_per_epoch=5, epochs=2)
keras3_models.compile_classifier(keras, pruned)
x = np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype("float32")
history = pruned.fit(x, np.arange(40) % 10, batch_size=8, epochs=2, verbose=0,
                     callbacks=kprune.callbacks(strict=True))
report = kprune.sparsity_report(kprune.strip(pruned), plan=plan, strict=True)
print(json.dumps({{"backend": keras.backend.backend(),
                   "achieved": {{row.name: row.achieved for row in report.rows}},
                   "logged": history.history["sparsity/dense_a"]}}))
"""


def _check_fit_without_the_model(result, backend):
    assert result["backend"] == backend
    assert result["achieved"]["conv_a"] == 0.5 and result["achieved"]["dense_b"] == 0.5
    assert result["achieved"]["conv_b"] == 0.5 and result["achieved"]["dense_a"] == 0.75
    assert result["achieved"]["head"] == 0.0
    assert result["logged"][0] < result["logged"][1] == pytest.approx(0.75)


def _fit_without_the_model(backend, extra_env=None):
    code = FIT_WITHOUT_THE_MODEL.format(plan=json.dumps(CALLBACKS_PLAN.to_dict()))
    env = {**os.environ, **(extra_env or {}), "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_kprune_callbacks_without_the_model_prune_a_keras3_model_on_tensorflow():
    pruned = kprune.apply(keras3_models.small_cnn(keras), CALLBACKS_PLAN, steps_per_epoch=5,
                          epochs=2)
    keras3_models.compile_classifier(keras, pruned)
    x = np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype("float32")
    hooks = kprune.callbacks(strict=True)
    history = pruned.fit(x, np.arange(40) % 10, batch_size=8, epochs=2, verbose=0,
                         callbacks=hooks)
    report = kprune.sparsity_report(kprune.strip(pruned), plan=CALLBACKS_PLAN, strict=True)
    _check_fit_without_the_model({"backend": keras.backend.backend(),
                                  "achieved": {row.name: row.achieved for row in report.rows},
                                  "logged": history.history["sparsity/dense_a"]},
                                 keras.backend.backend())
    assert [type(hook.chosen).__module__ for hook in hooks] == [
        "kprune.engines.keras3.callbacks"] * 3
    assert hooks[1].steps == 10  # the chosen guard's state reads through


@pytest.mark.slow
def test_kprune_callbacks_without_the_model_prune_a_keras3_model_on_jax(jax_compilation_cache):
    pytest.importorskip("jax")
    _check_fit_without_the_model(_fit_without_the_model("jax", jax_compilation_cache), "jax")


def test_callbacks_without_the_model_keep_the_keras3_batch_hooks_and_async_dispatch(tmp_path):
    from keras.src import backend as keras_backend

    pruned = kprune.apply(keras3_models.small_cnn(keras), steps_per_epoch=5, epochs=2)
    hooks = kprune.callbacks()
    listed = keras.callbacks.CallbackList(hooks, model=pruned)  # as fit builds it
    assert listed._async_train == keras_backend.IS_THREAD_SAFE
    overridden = {(type(hook.chosen).__name__, name) for hook in hooks for name in BATCH_HOOKS
                  if not getattr(getattr(hook, name), "_is_default", False)}
    assert overridden == {("UpdatePruningStep", "on_train_batch_begin")}
    with_board = kprune.callbacks(log_dir=str(tmp_path / "logs"))  # not the cwd
    assert not keras.callbacks.CallbackList(with_board, model=pruned)._async_train


@pytest.mark.slow
def test_the_same_callbacks_serve_a_tf_keras_and_then_a_keras3_model():
    hooks = kprune.callbacks(strict=True)
    x = np.random.default_rng(0).normal(size=(40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 10
    for lib in (tf_keras, keras):
        pruned = kprune.apply(keras3_models.small_cnn(lib), CALLBACKS_PLAN, steps_per_epoch=5,
                              epochs=1)
        pruned.compile(optimizer="adam",
                       loss=lib.losses.SparseCategoricalCrossentropy(from_logits=True))
        pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=hooks)
        assert kprune.sparsity_report(kprune.strip(pruned), plan=CALLBACKS_PLAN,
                                      strict=True).ok
        engine = "keras3" if lib is keras else "tf_keras"
        assert (type(hooks[1].chosen).__module__ == "kprune.engines.keras3.callbacks") == (
            engine == "keras3")


def test_callbacks_without_a_model_used_before_fit_say_so():
    update, guard, logger = kprune.callbacks()
    assert guard.chosen is None and "chosen=NoneType" in repr(guard)
    with pytest.raises(RuntimeError, match=r"before any model was set.*kprune.callbacks\(pruned\)"
                                           r".*Received: role='guard'"):
        guard.on_train_begin()
    with pytest.raises(RuntimeError, match="before any model was set"):
        guard.steps  # noqa: B018


def test_an_engine_callback_of_an_unknown_role_is_refused():
    from kprune.engines.callbacks import EngineCallback

    with pytest.raises(ValueError, match=r"`role` must be one of \('update', 'guard', 'logger'\)"
                                         r".*Received: role='summaries'"):
        EngineCallback("summaries")


def test_steps_per_execution_above_one_is_refused():
    pruned = kprune.apply(keras3_models.small_cnn(keras), steps_per_epoch=2, epochs=1)
    pruned.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    x = np.zeros((16, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=r"steps_per_execution=1.*Received: steps_per_execution=2"):
        pruned.fit(x, np.zeros((16, 10)), batch_size=8, verbose=0,
                   callbacks=kprune.callbacks(pruned))


def test_tf_keras_and_keras3_objects_are_not_mixed():
    from kprune.engines.keras3 import callbacks as keras3_callbacks
    from kprune.engines.keras3 import helpers

    tf_model = keras3_models.small_cnn(tf_keras)
    with pytest.raises(TypeError, match=r"must be a Keras 3 model.*tf_keras \(Keras 2\)"):
        keras3_callbacks.callbacks(tf_model)
    with pytest.raises(TypeError, match=r"must be a Keras 3 model.*tf_keras"):
        helpers.copy_model(tf_model)
    k3_model = keras3_models.small_cnn(keras)
    with pytest.raises(TypeError, match=r"Keras 3 object.*import tf_keras as keras"):
        loader.check_model(k3_model)  # what every tf_keras-only part checks first
    with pytest.raises(ValueError, match="strategy"):
        kprune.apply(k3_model, steps_per_epoch=1, epochs=1, strategy=object())
    with pytest.raises(ValueError, match=r"`strategy`.*applies to tf_keras models"):
        kprune.copy_model(k3_model, strategy=object())


# -- TFLite export -----------------------------------------------------------------------------


@pytest.mark.slow
def test_keras3_export_variants_keep_2_4_in_the_file(tmp_path):
    from kprune.tflite import export, flatbuffer, measure

    pruned = kprune.apply(keras3_models.small_cnn(keras), steps_per_epoch=2, epochs=1)
    keras3_models.compile_classifier(keras, pruned)
    x = np.random.default_rng(2).normal(size=(16, 8, 8, 1)).astype("float32")
    pruned.fit(x, np.arange(16) % 10, batch_size=8, verbose=0,
               callbacks=kprune.callbacks(pruned))
    final = kprune.strip(pruned)
    with pytest.raises(ValueError, match="call kprune.strip first"):
        export.to_tflite(pruned, tmp_path / "wrapped.tflite")
    results = export.export_variants(final, tmp_path, representative_data=x)
    assert set(results) == set(export.VARIANTS)
    logits = np.asarray(final.predict(x, verbose=0))
    # how far each variant's outputs in LiteRT may lie from Keras's (measured: float32 2e-7,
    # float16 4e-4, dynamic 7e-3, int8 2e-2); argmax on real images: the seed CNN runs below
    tolerance = {"float": 1e-5, "sparse": 1e-5, "float16": 1e-2}
    for name, result in results.items():
        info = flatbuffer.tflite_tensors(result.path, min_size=1)
        n_m = {t.shape: t.n_m_violations for t in info.weights}
        # conv_b (8x3x3x8), dense_a (32x128), dense_b (16x32): 2:4 along the inputs
        assert n_m[(8, 3, 3, 8)] == n_m[(32, 128)] == n_m[(16, 32)] == 0, name
        assert n_m[(10, 16)] > 0, name  # the head stays dense
        assert info.sparse_storage == result.sparse, name
        # runs in LiteRT (Keras 3's Flatten reshapes at run time: XNNPACK then refuses the
        # sparse int8 FULLY_CONNECTED at the first invoke, and measure falls back)
        got = measure.predict_tflite(result.path, x)
        assert np.abs(got - logits).max() < tolerance.get(name, 0.1), name

    # the comparison report takes the Keras 3 model (parameter counts)
    from kprune.tflite import report as tflite_report

    variants = [tflite_report.Variant.from_export(results[name], model=final)
                for name in ("float", "sparse")]
    compared = tflite_report.compare(variants, baseline="float", x_test=x, y_test=np.arange(16) % 10,
                                     out_dir=tmp_path / "report", latency_repeats=0)
    rows = {row["name"]: row for row in compared.data["variants"]}
    assert rows["sparse"]["params"] == final.count_params()
    assert rows["sparse"]["nonzero_params"] < final.count_params()

    # the same weights in tf_keras: the same sparsity report, and the same tensors exported
    twin = keras3_models.small_cnn(tf_keras)
    twin.set_weights(final.get_weights())
    plan = PruningPlan.default()
    ours_report = kprune.sparsity_report(final, plan=plan, strict=True)
    assert ours_report == kprune.sparsity_report(twin, plan=plan, strict=True)
    assert str(ours_report) == str(kprune.sparsity_report(twin, plan=plan))
    theirs = flatbuffer.tflite_tensors(export.to_tflite(twin, tmp_path / "tf.tflite").path,
                                       min_size=1)
    ours = flatbuffer.tflite_tensors(results["float"].path, min_size=1)
    assert (sorted((t.shape, t.nonzero, t.n_m_violations) for t in ours.weights)
            == sorted((t.shape, t.nonzero, t.n_m_violations) for t in theirs.weights))


# -- what the Keras 3 engine does not reach: the clear error, naming what to do instead ---------


def test_pqat_says_it_is_tf_keras_only_and_what_to_do_for_keras3():
    from kprune.tflite import export

    final = kprune.strip(kprune.apply(keras3_models.small_cnn(keras), steps_per_epoch=2,
                                      epochs=1))
    x = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(TypeError, match=r"pqat_int8 needs tfmot.*tf_keras models only.*"
                                        r"quantize='int8', representative_data=x"):
        export.pqat_int8(final, x, np.zeros(4))


# -- mixed use: kprune (and tfmot) beside Keras 3 ------------------------------------------------

MIXED_USE = """
import keras
first = keras
import numpy as np
import kprune
from kprune.engines.tfkeras import loader
tf_keras = loader.keras
model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(8, name="fc"),
                             tf_keras.layers.Dense(2, name="head")])
pruned = kprune.apply(model, steps_per_epoch=1, epochs=1)
pruned.compile(optimizer="sgd", loss="mse")
pruned.fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=0, callbacks=kprune.callbacks())
import keras
k3 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="fc"),
                       keras.layers.Dense(2, name="head")])
k3_pruned = kprune.apply(k3, steps_per_epoch=1, epochs=1)
print(keras is first, keras.__version__, type(k3_pruned).__module__,
      type(kprune.strip(pruned)).__module__)
"""


@pytest.mark.slow
def test_importing_kprune_does_not_change_what_import_keras_gives():
    result = subprocess.run([sys.executable, "-c", MIXED_USE], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    same, version, k3_module, tf_module = result.stdout.split()[-4:]
    assert same == "True" and version.startswith("3.")
    assert k3_module.startswith("keras.") and tf_module.startswith("tf_keras.")


# -- the seed CNN on real MNIST, TensorFlow and JAX ----------------------------------------------


def _check_seed_run(result, backend):
    assert result["backend"] == backend
    assert result["final_type"].startswith("keras.")
    assert result["input_unchanged"]
    assert result["conv1_method"] == "unstructured"
    assert result["conv1_achieved"] == pytest.approx(0.5, abs=0.01)
    assert result["n_m_along_inputs"] == {"conv2": True, "fc1": True}
    assert result["head_dense"] and result["head_unchanged"]
    assert result["fc1_logged"] == 0.5
    assert result["report_ok"]
    assert result["accuracy"] > 0.95
    export = result["export"]
    if backend == "tensorflow":  # every variant, in LiteRT, on 500 real MNIST test images
        from kprune.tflite.export import VARIANTS

        assert set(export) == set(VARIANTS)
        for name, found in export.items():
            assert found["agreement"] >= 0.99, (name, found)  # Keras's class (int8: 0.998)
        for name in ("float", "sparse"):  # float32 as in Keras (measured: 1e-6)
            assert export[name]["max_difference"] < 1e-4, name
        assert export["float16"]["max_difference"] < 1e-2  # (measured: 3e-4)
    else:  # Keras 3's own export path, where it works
        assert "KERAS_BACKEND=tensorflow" in export["seed_cnn"]
        assert export["small_cnn_max_difference"] < 1e-4
        assert export["small_cnn_sparse_storage"]


@pytest.mark.slow
def test_seed_cnn_default_plan_on_real_mnist_tensorflow_backend(mnist_dir):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the in-process run is for the TensorFlow backend")
    _check_seed_run(keras3_models.seed_run(mnist_dir), "tensorflow")


@pytest.mark.slow
def test_seed_cnn_default_plan_on_real_mnist_jax_backend(mnist_dir, jax_env):
    # 4,000 training images (XLA's CPU convolutions are slower than TensorFlow's oneDNN)
    result = subprocess.run([sys.executable, "-m", "tests.keras3_models", str(mnist_dir), "4000"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=jax_env)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_seed_run(json.loads(result.stdout.strip().splitlines()[-1]), "jax")


# -- on JAX, the Keras 3 path loads neither tfmot nor tf_keras ----------------------------------------

JAX_PATH_IMPORTS = """
import json, sys
import keras
import numpy as np
import kprune

model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="conv"),
                          keras.layers.Flatten(), keras.layers.Dense(16, name="fc"),
                          keras.layers.Dense(4, name="head")])
plan = kprune.PruningPlan.default()
print(plan.resolve(model, steps_per_epoch=2, epochs=1))
pruned = kprune.apply(model, plan, steps_per_epoch=2, epochs=1)
pruned.compile(optimizer="adam", loss="mse")
pruned.fit(np.zeros((16, 8, 8, 1), "float32"), np.zeros((16, 4), "float32"), batch_size=8,
           verbose=0, callbacks=kprune.callbacks(strict=True))
report = kprune.sparsity_report(kprune.strip(pruned), strict=True)
from kprune import workflows                     # a seeded workflow too, with checkpoints
from kprune.methods.trainer import Trainer
x, y = np.random.default_rng(0).random((16, 8, 8, 1), "float32"), np.zeros((16, 4), "float32")
result = workflows.gradual(model, 0.5, trainer=Trainer(x, y, batch_size=8, seed=0,
                                                       compile=dict(optimizer="adam",
                                                                    loss="mse")),
                           epochs=1, checkpoint_dir=sys.argv[1])
print(json.dumps({"backend": keras.backend.backend(), "ok": bool(report.ok),
                  "loaded": sorted(name for name in ("tensorflow_model_optimization", "tf_keras")
                                   if name in sys.modules)}))
"""


@pytest.mark.slow
def test_pruning_a_keras3_model_on_jax_never_imports_tfmot_or_tf_keras(tmp_path):
    pytest.importorskip("jax")
    # as a JAX user starts: without the TF_USE_LEGACY_KERAS=1 that importing tfmot set in
    # this test process (with it, TensorFlow, which Keras itself imports, loads tf_keras)
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    env.update(KERAS_BACKEND="jax", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", JAX_PATH_IMPORTS, str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts == {"backend": "jax", "ok": True, "loaded": []}


# -- the README's Keras 3 example, run as a user runs it, on TensorFlow and on JAX ----------------

README_DATA_LINE = "(x, y), (x_test, y_test) = data.load_mnist()"


def readme_keras3_example(mnist_dir, *, n_train=2000, n_test=500):
    """The code between the README's ``keras3-example`` markers, with one substitution: its
    data line loads ``n_train``/``n_test`` images of the official MNIST at ``mnist_dir``
    (``data.subset``) instead of the whole set found by ``data.load_mnist()``, to keep the
    test short. Nothing else is changed.
    """
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- keras3-example -->", 1)[1].split("<!-- /keras3-example -->")[0]
    code = block.split("```python", 1)[1].split("```", 1)[0]
    assert code.count(README_DATA_LINE) == 1, "the README example's data line changed"
    return code.replace(README_DATA_LINE, "(x, y), (x_test, y_test) = data.subset("
                        f"data.load_mnist({str(mnist_dir)!r}), {n_train}, {n_test}, seed=0)")


def printed_table(output, header, *, until):
    """The lines of ``output`` from the one starting with ``header`` up to the first line
    for which ``until(line)`` is true (excluded)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    return list(itertools.takewhile(lambda line: not until(line), lines[start:]))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_readme_keras3_example_runs_unchanged(backend, mnist_dir, tmp_path, request):
    from kprune.experiments import models
    from kprune.tflite import flatbuffer

    env = {**(request.getfixturevalue("jax_env") if backend == "jax" else os.environ),
           "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", readme_keras3_example(mnist_dir)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout.replace("\r", "\n")

    # the plan table a tf_keras user gets for the same model, steps and epochs
    tf_plan = PruningPlan.default().resolve(models.seed_cnn(), steps_per_epoch=32, epochs=2)
    assert printed_table(output, "layer    type", until=lambda line: line.startswith("Epoch")
                         ) == str(tf_plan).splitlines()
    # the sparsity report: conv1 at its target, 2:4 on conv2 and fc1, the head dense
    report = {line.split()[0]: line.split()
              for line in printed_table(output, "layer  type    weight", until=lambda line:
                                        line.startswith("total:"))[2:]}
    assert report["conv1"][5:] == ["0.500", "unstructured", "0.500", "ok"]
    for name in ("conv2", "fc1"):
        assert report[name][5:] == ["0.500", "2:4", "0.500", "2:4", "ok"], report[name]
    assert report["head"][5:] == ["0.000", "skip"] and len(report) == 4
    saved = kprune.load_model(tmp_path / "pruned.keras")
    assert type(saved).__module__.startswith("keras.")
    assert [row.name for row in kprune.sparsity_report(saved, strict=True).rows] == [
        "conv1", "conv2", "fc1", "head"]

    tflite = tmp_path / "pruned-sparse.tflite"
    if backend != "tensorflow":
        assert not tflite.exists()  # the example exports from the TensorFlow backend only
        return
    info = flatbuffer.tflite_tensors(tflite)
    n_m = {t.shape: t.n_m_violations for t in info.weights}
    assert n_m[(64, 5, 5, 32)] == n_m[(1024, 3136)] == 0  # conv2, fc1: 2:4 along the inputs
    assert n_m[(10, 1024)] > 0  # the head stays dense
    assert info.sparse_storage
