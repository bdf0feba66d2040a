"""Checkpoints: atomic writes that a kill cannot spoil, and workflows that resume from them."""

import json
import os

import numpy as np
import pytest

from kprune.methods.checkpoints import Checkpoints


def arrays(value):
    return {"model": [np.full((2, 3), value, dtype="float32"), np.arange(4)]}


def test_a_checkpoint_round_trips_and_the_latest_wins(tmp_path):
    store = Checkpoints(tmp_path / "checkpoints", fingerprint="gradual")
    store.save("prune-r0-epoch1", arrays(1.0), {"epoch": 1})
    store.save("prune-r0-epoch2", arrays(2.0), {"epoch": 2, "records": [{"x": np.float32(0.5)}]})
    latest = store.latest("prune-r0-epoch")
    assert latest.name == "prune-r0-epoch2" and latest.state["epoch"] == 2
    assert latest.state["records"] == [{"x": 0.5}] and latest.state["fingerprint"] == "gradual"
    restored = latest.arrays("model")
    assert (restored[0] == 2.0).all() and restored[1].tolist() == [0, 1, 2, 3]
    assert store.find("prune-r0-epoch1").state["epoch"] == 1
    assert store.latest("retrain") is None


def test_a_kill_during_a_write_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch):
    store = Checkpoints(tmp_path / "checkpoints")
    store.save("prune-r0-epoch1", arrays(1.0), {"epoch": 1})

    def killed(*args):  # the process dies after writing the files, before the rename
        raise SystemExit("killed")

    monkeypatch.setattr(os, "rename", killed)
    with pytest.raises(SystemExit):
        store.save("prune-r0-epoch2", arrays(2.0), {"epoch": 2})
    monkeypatch.undo()
    partial = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".partial")]
    assert len(partial) == 1
    (partial[0] / "arrays.npz").write_bytes(b"PK\x03\x04 truncated")  # torn file, too
    again = Checkpoints(tmp_path / "checkpoints")
    latest = again.latest()
    assert latest.name == "prune-r0-epoch1" and (latest.arrays("model")[0] == 1.0).all()
    again.save("prune-r0-epoch2", arrays(2.0), {"epoch": 2})  # the next write cleans up
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["0001-prune-r0-epoch1", "0002-prune-r0-epoch2"]


def test_old_epoch_checkpoints_are_pruned(tmp_path):
    store = Checkpoints(tmp_path)
    for epoch in range(1, 5):
        store.save(f"prune-r1-epoch{epoch}", arrays(epoch), {"epoch": epoch})
        store.prune("prune-r1-epoch")
    assert [c.name for c in store.all()] == ["prune-r1-epoch3", "prune-r1-epoch4"]


def test_checkpoints_of_another_run_are_refused(tmp_path):
    Checkpoints(tmp_path, fingerprint="gradual 0.8").save("prune-r0-epoch1", arrays(1), {})
    with pytest.raises(ValueError, match=r"written by another run \(gradual 0.8\); this one "
                                         r"is gradual 0.9.*fresh checkpoint folder"):
        Checkpoints(tmp_path, fingerprint="gradual 0.9")


# -- workflows: interrupted, resumed, same result ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("workflow", ["iterative", "rewind"])
def test_an_interrupted_workflow_resumes_to_the_same_weights(tmp_path, mnist_small, workflow):
    """Stopped in the middle of its second fit (iterative: round 2; rewind: the retraining),
    a workflow resumed from its checkpoints ends with the weights and history of one never
    interrupted (round 1 / the pruning fit is read back, the second fit resumes at epoch 2),
    Dropout included."""
    from kprune.engines.seeding import set_seed
    from kprune.engines.tfkeras import loader
    from kprune.methods import workflows

    keras = loader.keras
    (x, y), (x_val, y_val) = mnist_small
    x, y, x_val, y_val = x[:400], y[:400], x_val[:200], y_val[:200]

    class Interrupt(loader.keras.callbacks.Callback):
        """Stops the process (as a kill would) after the first epoch of the second fit."""

        fits = 0

        def on_train_begin(self, logs=None):
            Interrupt.fits += 1

        def on_epoch_end(self, epoch, logs=None):
            if Interrupt.fits == 2 and epoch == 0:
                raise KeyboardInterrupt

    def run(checkpoint_dir, callbacks=()):
        set_seed(0)
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(64, activation="relu", name="fc1"),
                                  keras.layers.Dropout(0.3), keras.layers.Dense(10, name="head")])
        trainer = workflows.Trainer(x, y, validation_data=(x_val, y_val), batch_size=50,
                                    seed=4, callbacks=callbacks)
        kwargs = {"trainer": trainer, "checkpoint_dir": checkpoint_dir}
        if workflow == "iterative":
            return workflows.iterative(model, 0.8, rounds=2, epochs_per_round=2, **kwargs)
        return workflows.rewind(model, 0.8, epochs=2, **kwargs)

    reference = run(None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [Interrupt()])
    resumed = run(tmp_path)
    for want, got in zip(reference.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert [r.to_dict() for r in resumed.history] == [r.to_dict() for r in reference.history]
    saved = [p.name.split("-", 1)[1] for p in sorted(tmp_path.iterdir())]
    first, second = ("prune-r1", "prune-r2") if workflow == "iterative" else ("prune-r0",
                                                                             "retrain-r0")
    assert saved == [f"{first}-epoch1", f"{first}-epoch2", f"{first}-done",
                     f"{second}-epoch1", f"{second}-epoch2"] + (
                         [f"{second}-done"] if workflow == "iterative" else [])
    state = json.loads((sorted(tmp_path.iterdir())[0] / "state.json").read_text())
    assert f'"workflow": "{workflow}"' in state["fingerprint"]


def test_late_rewinding_cannot_be_checkpointed(tmp_path):
    from kprune.experiments import models
    from kprune.methods import workflows

    trainer = workflows.Trainer(np.zeros((4, 28, 28, 1)), np.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match=r"`checkpoint_dir` cannot be used with `to` an epoch "
                                         r"number.*Received: to=1"):
        workflows.rewind(models.build("lenet-300-100"), 0.8, trainer=trainer, epochs=2, to=1,
                         checkpoint_dir=tmp_path)


@pytest.mark.slow
def test_a_fit_interrupted_between_epochs_resumes_from_its_step_checkpoint(tmp_path, mnist_small):
    """checkpoint_steps=3 with 8 steps per epoch; stopped at step 5 of epoch 2, resumed from
    the checkpoint at step 3: the weights of a run never interrupted."""
    from kprune.engines.seeding import set_seed
    from kprune.engines.tfkeras import loader
    from kprune.experiments import models
    from kprune.methods import workflows

    (x, y), (x_val, y_val) = mnist_small

    class Interrupt(loader.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 4:
                raise KeyboardInterrupt

    def run(checkpoint_dir, callbacks=()):
        set_seed(0)
        trainer = workflows.Trainer(x[:400], y[:400], validation_data=(x_val[:100], y_val[:100]),
                                    batch_size=50, seed=2, callbacks=callbacks)
        return workflows.gradual(models.build("lenet-300-100"), 0.8, trainer=trainer, epochs=3,
                                 checkpoint_dir=checkpoint_dir,
                                 checkpoint_steps=None if checkpoint_dir is None else 3)

    reference = run(None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [Interrupt()])
    saved = [p.name.split("-", 1)[1] for p in sorted(tmp_path.iterdir())]
    assert saved == ["prune-r0-epoch1", "prune-r0-epoch1-step3"]
    resumed = run(tmp_path)
    for want, got in zip(reference.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(got, want)

    def without_loss(history):  # the resumed epoch's mean loss covers its last 5 steps only
        return [{**r.to_dict(), "loss": None} for r in history]

    assert without_loss(resumed.history) == without_loss(reference.history)


def test_step_checkpoints_need_a_folder_and_a_seeded_trainer(tmp_path):
    from kprune.experiments import models
    from kprune.methods import workflows

    model = models.build("lenet-300-100")
    trainer = workflows.Trainer(np.zeros((4, 28, 28, 1)), np.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match=r"`checkpoint_steps` needs a `checkpoint_dir`"):
        workflows.gradual(model, 0.8, trainer=trainer, epochs=1, checkpoint_steps=10)
    with pytest.raises(ValueError, match=r"`checkpoint_steps` needs a seeded trainer "
                                         r"\(Trainer\(seed=...\)\)"):
        workflows.gradual(model, 0.8, trainer=trainer, epochs=1, checkpoint_dir=tmp_path,
                          checkpoint_steps=10)
