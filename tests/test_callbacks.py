"""callbacks(): UpdatePruningStep, sparsity in Keras logs, TensorBoard; custom loops."""

import csv

import numpy as np
import pytest

import kprune
from kprune import LayerRule, PruningPlan
from kprune.engines.tfkeras import loader

from helpers import keras, tiny_mlp


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)


def pruned_mlp(epochs=2, steps_per_epoch=6):
    plan = PruningPlan([LayerRule("fc1", target=0.8), LayerRule("fc2", method="m_by_n")])
    model = kprune.apply(tiny_mlp(), plan, steps_per_epoch=steps_per_epoch, epochs=epochs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_sparsity_reaches_history_and_csv(tmp_path):
    x, y = data()
    model = pruned_mlp()
    log = tmp_path / "log.csv"
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=kprune.callbacks() + [keras.callbacks.CSVLogger(str(log))],
    )
    fc1 = history.history["sparsity/fc1"]
    assert fc1[0] < fc1[-1] == pytest.approx(0.8, abs=0.01)
    assert history.history["sparsity/fc2"] == [0.5, 0.5]
    assert 0.5 < history.history["sparsity"][-1] < 0.8
    rows = list(csv.DictReader(log.open()))
    assert float(rows[-1]["sparsity/fc1"]) == pytest.approx(0.8, abs=0.01)


def pruning_scalars(log_dir):
    """{tag: {step: value}} of the sparsity and threshold scalars in ``log_dir``'s events."""
    tf = loader.tf
    found = {}
    for path in log_dir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.endswith(("/sparsity", "/threshold")):
                    found.setdefault(value.tag, {})[event.step] = float(
                        tf.make_ndarray(value.tensor))
    return found


def test_tensorboard_summaries_are_written(tmp_path):
    x, y = data()
    model = pruned_mlp()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=kprune.callbacks(log_dir=tmp_path))
    scalars = pruning_scalars(tmp_path)
    assert set(scalars) == {f"prune_low_magnitude_{name}/{tag}" for name in ("fc1", "fc2")
                            for tag in ("mask:0/sparsity", "threshold:0/threshold")}
    fc1, fc2 = (scalars[f"prune_low_magnitude_{n}/mask:0/sparsity"] for n in ("fc1", "fc2"))
    # tfmot writes them as each epoch begins (steps 0 and 6): fc1 on its cubic way from 0 to
    # 0.8 over steps 1..12, fc2 at 2:4 from the first step
    assert fc1[0] == 0.0 and fc1[6] == pytest.approx(0.8 * (1 - (1 - 5 / 11) ** 3), abs=1e-3)
    assert fc2 == {0: 0.0, 6: 0.5}


def test_fit_without_update_step_fails_as_tfmot_does():
    x, y = data()
    model = pruned_mlp()
    with pytest.raises(Exception, match="UpdatePruningStep"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_custom_training_loop_with_pruning_stepper():
    x, y = data()
    model = pruned_mlp(epochs=2, steps_per_epoch=6)
    optimizer = keras.optimizers.Adam()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with kprune.PruningStepper(model) as stepper:
        for _ in range(2):
            for start in range(0, 96, 16):
                with loader.tf.GradientTape() as tape:
                    loss = loss_fn(y[start : start + 16], model(x[start : start + 16], training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
            stepper.end_epoch()
    report = kprune.sparsity_report(kprune.strip(model))
    assert report["fc1"].achieved == pytest.approx(0.8, abs=0.01)
    assert report["fc2"].achieved == pytest.approx(0.5, abs=0.01)


def test_pruning_stepper_needs_a_wrapped_model():
    with pytest.raises(ValueError, match="has no pruning wrappers"):
        kprune.PruningStepper(tiny_mlp())


def test_schedule_guard_warns_when_the_fit_runs_fewer_steps_than_planned():
    from kprune.engines.callbacks import ScheduleWarning

    x, y = data()
    model = pruned_mlp(epochs=1, steps_per_epoch=6)  # 96 examples / 16 = 6 steps planned
    with pytest.warns(ScheduleWarning, match=r"fc1 at step 4 of 6 \(2 steps short\).*ran 4"):
        model.fit(x[:64], y[:64], batch_size=16, verbose=0, callbacks=kprune.callbacks())
    strict = pruned_mlp(epochs=1, steps_per_epoch=6)
    with pytest.raises(RuntimeError, match="validation_split, a drop_remainder dataset"):
        strict.fit(x, y, batch_size=16, verbose=0, validation_split=0.25,
                   callbacks=kprune.callbacks(strict=True))


def test_schedule_guard_is_silent_when_every_schedule_completed(recwarn):
    x, y = data()
    model = pruned_mlp(epochs=1, steps_per_epoch=6)
    model.fit(x, y, batch_size=16, verbose=0, callbacks=kprune.callbacks(strict=True))
    assert not [w for w in recwarn if "stopped short" in str(w.message)]


def test_kprune_callbacks_add_no_per_batch_hook():
    # A callback overriding a batch hook makes Keras run Python after every training step
    # (a pruning step would cost more than a dense one); the guard reads the optimizer's step
    # counter instead.
    model = pruned_mlp()
    hooks = keras.callbacks.CallbackList(kprune.callbacks(), model=model)
    assert not hooks._should_call_train_batch_hooks
    assert keras.callbacks.CallbackList([keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: None)], model=model)._should_call_train_batch_hooks


def test_schedule_guard_counts_the_steps_of_each_fit():
    from kprune.engines.callbacks import ScheduleGuard, training_step

    x, y = data()
    model = pruned_mlp(epochs=2, steps_per_epoch=6)
    assert training_step(model) == 0  # no optimizer step yet
    guard = ScheduleGuard()
    with pytest.warns(UserWarning, match="ran 4 training steps"):
        model.fit(x[:64], y[:64], batch_size=16, verbose=0,
                  callbacks=[loader.tfmot.sparsity.keras.UpdatePruningStep(), guard])
    assert guard.steps == 4
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[loader.tfmot.sparsity.keras.UpdatePruningStep(), guard])
    assert guard.steps == 12 and training_step(model) == 16


def test_the_schedule_guard_of_either_engine_is_recognised():
    from kprune.engines.callbacks import is_schedule_guard
    from kprune.engines.keras3 import callbacks as keras3_callbacks

    assert [is_schedule_guard(c) for c in kprune.callbacks()] == [False, True, False]
    assert [is_schedule_guard(c) for c in kprune.callbacks(pruned_mlp())] == [False, True, False]
    assert is_schedule_guard(keras3_callbacks.ScheduleGuard())
    assert not is_schedule_guard(keras.callbacks.CSVLogger("log.csv"))
