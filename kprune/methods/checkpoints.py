"""Checkpoints of a pruning run, written atomically, and resuming from the latest.

A :class:`Checkpoints` folder holds one sub-folder per checkpoint, numbered in the
order written (``0003-prune-r1-epoch2``), each with ``state.json`` (what the workflow
needs to go on: stage, epoch, history, a fingerprint of the run) and ``arrays.npz``
(the model's weights with its pruning wrappers' masks, thresholds and step, and the
optimizer's variables; for a finished pruning fit, the stripped weights and the masks).
A checkpoint is written into a hidden
``.partial-*`` folder, every file and the folder are fsynced, and only then is it
renamed to its final name: a kill at any point of the write leaves the previous
checkpoints whole, and the partial folder is ignored (and removed by the next write).

:class:`FitCheckpoints` is the Keras callback that writes one at every epoch end (and
every ``every_steps`` steps, see its doc) and restores the model and optimizer at the
start of a resumed fit.

Example:
    >>> store = Checkpoints("runs/seed/checkpoints")
    >>> store.save("prune-r1-epoch2", {"model": model.get_weights()}, {"epoch": 2})
    >>> store.latest("prune-r1-epoch").state["epoch"]
    2
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kprune.engines import engine_of
from kprune.engines.tfkeras import loader

__all__ = ["Checkpoints", "Checkpoint", "FitCheckpoints",  # noqa: F822 (module __getattr__)
           "fit_checkpoints",
           "resumable_fit", "run_checkpoints", "optimizer_variables"]

STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"
PARTIAL_PREFIX = ".partial-"


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint: its folder, name, ``state`` (JSON) and arrays by group."""

    path: Path
    name: str
    state: dict

    def arrays(self, group):
        """The list of arrays saved under ``group`` (``"model"``, ``"optimizer"``, ...)."""
        with np.load(self.path / ARRAYS_FILE) as data:
            keys = sorted(k for k in data.files if k.startswith(f"{group}."))
            return [data[k] for k in keys]

    def groups(self):
        with np.load(self.path / ARRAYS_FILE) as data:
            return sorted({k.rsplit(".", 1)[0] for k in data.files})


class Checkpoints:
    """A folder of atomically written checkpoints (see the module doc).

    Args:
        folder: where the checkpoints live (created on the first write).
        fingerprint: what must match to resume from these checkpoints (the workflow,
            its plan and lengths); a folder written under another fingerprint is refused.
        every_steps: also checkpoint every this many training steps inside an epoch
            (:class:`FitCheckpoints`); None: at epoch ends only.

    Example:
        >>> store = Checkpoints(tmp / "checkpoints", fingerprint="gradual 0.8 2 epochs")
    """

    def __init__(self, folder, *, fingerprint="", every_steps=None):
        self.folder = Path(folder)
        self.fingerprint = str(fingerprint)
        self.every_steps = every_steps
        self._check_fingerprint()

    def _check_fingerprint(self):
        found = self.all()
        if not found or not self.fingerprint:
            return
        theirs = found[-1].state.get("fingerprint", "")
        if theirs and theirs != self.fingerprint:
            raise ValueError(
                f"The checkpoints in {self.folder} were written by another run "
                f"({theirs}); this one is {self.fingerprint}. Resume with the same "
                "workflow and plan, or give a fresh checkpoint folder."
            )

    def all(self):
        """Every complete checkpoint, oldest first (partial writes are not listed)."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(PARTIAL_PREFIX) or not path.is_dir():
                continue
            if not (path / STATE_FILE).is_file() or not (path / ARRAYS_FILE).is_file():
                continue
            state = json.loads((path / STATE_FILE).read_text())
            found.append(Checkpoint(path, path.name.split("-", 1)[1], state))
        return found

    def latest(self, prefix=""):
        """The newest checkpoint whose name starts with ``prefix``, or None."""
        matching = [c for c in self.all() if c.name.startswith(prefix)]
        return matching[-1] if matching else None

    def find(self, name):
        """The newest checkpoint named exactly ``name``, or None."""
        matching = [c for c in self.all() if c.name == name]
        return matching[-1] if matching else None

    def save(self, name, arrays, state):
        """Write checkpoint ``name`` atomically; return it.

        ``arrays`` maps group names to lists of arrays; ``state`` is JSON-able.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f"{PARTIAL_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        existing = self.all()
        number = int(existing[-1].path.name.split("-", 1)[0]) + 1 if existing else 1
        final = self.folder / f"{number:04d}-{name}"
        partial = self.folder / f"{PARTIAL_PREFIX}{final.name}"
        partial.mkdir()
        flat = {f"{group}.{i:05d}": np.asarray(value)
                for group, values in arrays.items() for i, value in enumerate(values)}
        with open(partial / ARRAYS_FILE, "wb") as handle:
            np.savez(handle, **flat)
            _sync(handle)
        with open(partial / STATE_FILE, "w") as handle:
            json.dump({**state, "fingerprint": self.fingerprint}, handle, indent=1,
                      default=_plain)
            _sync(handle)
        _sync_folder(partial)
        os.rename(partial, final)
        _sync_folder(self.folder)
        return Checkpoint(final, name, json.loads((final / STATE_FILE).read_text()))

    def agree(self, strategy):
        """Under a strategy with several workers, make every worker's newest checkpoint the
        same: a worker one checkpoint ahead of another (killed while the other was still
        writing) drops its newest. A no-op for one worker or no strategy.

        Every worker writes the same checkpoints at the same steps into its own folder, so
        after a kill they are at most one apart; all workers must call this together (it
        is a collective), as ``kprune run --resume`` and the workflows do.

        Example:
            >>> Checkpoints("run/worker0/checkpoints").agree(strategy)
        """
        workers = getattr(getattr(strategy, "extended", None), "_num_workers", 1)
        if workers < 2:
            return
        tf = loader.tf
        found = self.all()
        newest = int(found[-1].path.name.split("-", 1)[0]) if found else 0
        mean = strategy.reduce(tf.distribute.ReduceOp.MEAN,
                               strategy.run(lambda: tf.constant(float(newest))), axis=None)
        if newest > float(mean) + 1e-6:
            shutil.rmtree(found[-1].path)

    def prune(self, prefix, *, keep=2):
        """Delete all but the newest ``keep`` checkpoints whose name starts with ``prefix``."""
        matching = [c for c in self.all() if c.name.startswith(prefix)]
        for old in matching[:-keep] if keep else matching:
            shutil.rmtree(old.path, ignore_errors=True)


def run_checkpoints(folder, description, *, model, every_steps=None):
    """The :class:`Checkpoints` of one run in ``folder`` (None without a folder), whose
    fingerprint is ``description`` (a dict, JSON-encoded) and whose newest checkpoint the
    workers of ``model``'s strategy agree on (:meth:`Checkpoints.agree`).

    Example:
        >>> store = run_checkpoints("run/checkpoints", {"workflow": "gradual"}, model=model)
    """
    if folder is None:
        return None
    from kprune.engines import distribute

    described = json.dumps(description, sort_keys=True, default=str)
    store = Checkpoints(folder, fingerprint=described, every_steps=every_steps)
    store.agree(distribute.strategy_of(model))
    return store


def _plain(value):
    """numpy scalars and arrays in a checkpoint's JSON state as plain Python."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _sync(handle):
    handle.flush()
    os.fsync(handle.fileno())


def _sync_folder(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def optimizer_variables(optimizer):
    """The optimizer's variables (iterations and slots), for either tf_keras optimizer API."""
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


class _FitCheckpoints:
    """Checkpoints a fit at every epoch end (and every ``store.every_steps`` steps);
    restores a resumed fit at its start.

    The checkpoint ``{key}-epoch{N}`` (after ``N`` epochs) or ``{key}-epoch{N}-step{S}``
    (``S`` steps into the next one) holds the model's weights (with the pruning
    wrappers' masks, thresholds and steps), the optimizer's variables and
    ``state()``'s JSON (the workflow's history so far), with ``epoch`` and ``step``.
    Resume by passing ``resume_from`` (such a checkpoint) and starting the fit there
    (``Trainer.fit(initial_epoch=N, initial_step=S)``): the weights and optimizer are
    restored at the start of training, inside the model's strategy. Only the two
    newest checkpoints of ``key`` are kept.

    :class:`FitCheckpoints` is this callback for tf_keras models; :func:`fit_checkpoints`
    gives the one of a model's Keras (tf_keras or Keras 3).

    Example:
        >>> saver = FitCheckpoints(store, "prune-r0", state=lambda: {"records": ...})
        >>> model.fit(x, y, epochs=3, callbacks=[..., saver])
    """

    def __init__(self, store, key, *, state, resume_from=None):
        super().__init__()
        self.store, self.key, self._state = store, key, state
        self.resume_from = resume_from
        self._offset = 0  # steps of the current epoch run before this fit started

    def on_train_begin(self, logs=None):
        self._offset = 0
        if self.resume_from is None:
            return
        checkpoint, self.resume_from = self.resume_from, None  # restored once
        self._offset = checkpoint.state.get("step", 0)
        self.model.set_weights(checkpoint.arrays("model"))
        saved = checkpoint.arrays("optimizer")
        if saved:
            optimizer = self.model.optimizer
            if hasattr(optimizer, "build"):  # tf_keras's optimizer API
                optimizer.build(self.model.trainable_variables)
            else:  # its legacy one, which optimizers.get gives by name
                optimizer._create_all_weights(self.model.trainable_variables)
            variables = optimizer_variables(optimizer)
            if len(variables) != len(saved):
                raise ValueError(
                    f"Checkpoint {checkpoint.path} holds {len(saved)} optimizer "
                    f"variables, the optimizer has {len(variables)}: it was written with "
                    "another optimizer or model."
                )
            for variable, value in zip(variables, saved):
                variable.assign(value)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        every = self.store.every_steps
        step = self._offset + batch + 1
        if every and step % every == 0 and step < self._offset + self.params["steps"]:
            self._save(f"{self.key}-epoch{self._epoch}-step{step}", self._epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self._offset = 0
        self._save(f"{self.key}-epoch{epoch + 1}", epoch + 1, 0)

    def _save(self, name, epoch, step):
        self._engine.sync_state(self.model)  # Keras 3 on JAX: the trainer's state
        arrays = {"model": self.model.get_weights(),
                  "optimizer": [v.numpy() for v in optimizer_variables(self.model.optimizer)]}
        self.store.save(name, arrays, {"key": self.key, "epoch": epoch, "step": step,
                                       **self._state()})
        self.store.prune(f"{self.key}-epoch")


def __getattr__(name):  # the tf_keras callback, made (with tf_keras) when first asked for
    if name == "FitCheckpoints":
        from kprune.engines.tfkeras import engine as tf_keras_engine

        return tf_keras_engine.callback_class(_FitCheckpoints, "FitCheckpoints")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fit_checkpoints(model, store, key, *, state, resume_from=None):
    """The :class:`_FitCheckpoints` callback of ``model``'s Keras (tf_keras or Keras 3).

    Example:
        >>> saver = fit_checkpoints(pruned, store, "prune-r0", state=lambda: {})
    """
    cls = engine_of(model).callback_class(_FitCheckpoints, "FitCheckpoints")
    return cls(store, key, state=state, resume_from=resume_from)


def resumable_fit(trainer, model, epochs, callbacks, *, store, key, state, restore):
    """``trainer.fit`` that checkpoints every epoch into ``store`` under ``key`` and, when
    ``store`` holds some from an interrupted fit, resumes after the newest.

    ``state()`` (JSON-able: the caller's history so far) is saved with each checkpoint and
    ``restore(state)`` called with the one resumed from. ``store`` None: a plain fit.

    Example:
        >>> resumable_fit(trainer, model, 5, [recorder], store=store, key="finetune",
        ...               state=lambda: {"rows": rows}, restore=lambda s: rows.extend(s["rows"]))
    """
    if store is None:
        trainer.fit(model, epochs, callbacks)
        return
    if store.every_steps and trainer.seed is None:
        raise ValueError(
            "Argument `checkpoint_steps` needs a seeded trainer (Trainer(seed=...)): a fit "
            "resumed inside an epoch must know which batches that epoch had left. "
            f"Received: checkpoint_steps={store.every_steps}, a trainer without seed"
        )
    last = store.latest(f"{key}-epoch")
    epoch, step = (0, 0) if last is None else (last.state["epoch"], last.state.get("step", 0))
    if last is not None:
        restore(last.state)
    if epoch >= epochs:  # killed after the last epoch
        model.set_weights(last.arrays("model"))
        return
    saver = fit_checkpoints(model, store, key, resume_from=last, state=state)
    trainer.fit(model, epochs, list(callbacks) + [saver], initial_epoch=epoch,
                initial_step=step)
