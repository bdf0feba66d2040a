"""Pruning workflows over a Keras ``fit``: one-shot, gradual, iterative and rewind.

Every workflow takes a tf_keras model (never modified), a plan or a target sparsity,
and a :class:`Trainer` that says how to train (arrays, or your own ``fit`` callable).
Each returns a :class:`WorkflowResult`: the pruned, stripped model and a history of
:class:`Record` rows (stage, round, epoch, per-layer sparsity, validation accuracy).

- :func:`one_shot`: train, prune to the target at once, fine-tune.
- :func:`gradual`: sparsity rises on a polynomial (cubic) schedule while training goes
  on (Zhu and Gupta 2017).
- :func:`iterative`: prune part of the way, retrain, repeat until the target or an
  accuracy floor (Han et al. 2015).
- :func:`rewind`: train with pruning, keep the mask, reset the surviving weights to
  their initial values or an early checkpoint and train again with the mask fixed
  (lottery ticket, Frankle and Carbin 2019).

A float target means "unstructured magnitude pruning at that sparsity for every
prunable layer except the classifier head" (see :func:`target_plan`).

:func:`one_shot`, :func:`gradual`, :func:`iterative` and :func:`rewind` also take a Keras 3
model (built with ``import keras``) and return a stripped Keras 3 model, pruned by kprune's
Keras 3 engine, with the same options (``checkpoint_dir``, a seeded :class:`Trainer`,
:func:`rewind` to an epoch number) on the TensorFlow and JAX backends.

Example:
    >>> from kprune import workflows
    >>> trainer = workflows.Trainer(x_train, y_train, validation_data=(x_val, y_val),
    ...                             batch_size=128)
    >>> result = workflows.gradual(model, 0.9, trainer=trainer, epochs=4)
    >>> print(result)                     # one row per epoch
    >>> result.model                      # stripped tf_keras model, 90% sparse
"""

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from kprune.core import layers
from kprune.core.checks import check_int
from kprune.core.plan import PruningPlan, ResolvedPlan
from kprune.core.schedules import Schedule
from kprune.core.table import table
from kprune.engines import engine_of
from kprune.engines.callbacks import callbacks as pruning_callbacks
from kprune.engines.verify import sparsity_report, strip
from kprune.engines.wrap import apply, copy_model
from kprune.engines.wrap import kernel_masks as wrapper_masks
from kprune.methods.checkpoints import resumable_fit, run_checkpoints
from kprune.methods.trainer import Trainer, accuracy

__all__ = [
    "Trainer",
    "accuracy",
    "Record",
    "WorkflowResult",
    "FixedMask",  # noqa: F822 (module __getattr__: made with tf_keras when first asked for)
    "fixed_mask",
    "target_plan",
    "as_plan",
    "kernel_masks",
    "one_shot",
    "gradual",
    "iterative",
    "rewind",
    "WORKFLOWS",
]

# -- history -------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One point of a workflow's history.

    Attributes:
        stage: ``"dense"`` (the model as given), ``"prune"``, ``"finetune"``,
            ``"rewind"`` (the rewound model before retraining) or ``"retrain"``.
        round: the iterative round (0 outside :func:`iterative`).
        epoch: epochs trained so far in this workflow (0 = before any training).
        sparsity: achieved sparsity of each layer's kernel, by layer path.
        overall: sparsity over all kernels (non-zero kernel weights / kernel weights).
        val_accuracy: validation accuracy, or None without validation data.
        loss: training loss of the epoch, when there was one.
        note: what happened (why a round stopped, ...).
    """

    stage: str
    round: int
    epoch: int
    sparsity: dict
    overall: float
    val_accuracy: float | None = None
    loss: float | None = None
    note: str = ""

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class WorkflowResult:
    """What a workflow returns: the final stripped model and its history.

    Attributes:
        model: the pruned model (of the input's Keras), wrappers stripped, masks applied.
        history: :class:`Record` rows, in order.
        workflow: the workflow's name.
        plan: the resolved plan of the last pruning step (None for a dense result).
        note: how the workflow ended (for :func:`iterative`: which round and why).
        stop_round: the round the iterative workflow stopped at (None elsewhere).
        masks: ``{layer path: keep-mask}`` of the last pruning fit (for :func:`rewind`,
            the fixed masks of the retraining).
    """

    model: object = field(repr=False)
    history: list = field(default_factory=list, repr=False)
    workflow: str = ""
    plan: object = field(default=None, repr=False)
    note: str = ""
    stop_round: int | None = None
    masks: dict | None = field(default=None, repr=False)

    @property
    def final(self):
        """The last record: the state of :attr:`model`."""
        return self.history[-1]

    @property
    def dense_accuracy(self):
        """Validation accuracy of the model as given (the first record)."""
        return self.history[0].val_accuracy if self.history else None

    @property
    def accuracy(self):
        return self.final.val_accuracy

    @property
    def sparsity(self):
        """Per-layer achieved sparsity of the final model."""
        return dict(self.final.sparsity)

    def report(self):
        """The :class:`~kprune.verify.SparsityReport` of the final model."""
        return sparsity_report(self.model, plan=self.plan)

    def to_dict(self):
        return {
            "workflow": self.workflow,
            "note": self.note,
            "stop_round": self.stop_round,
            "history": [record.to_dict() for record in self.history],
            "plan": None if self.plan is None else self.plan.to_dict(),
        }

    def __str__(self):
        layers = list(self.history[0].sparsity) if self.history else []
        header = ("stage", "round", "epoch", *layers, "overall", "val acc", "note")
        lines = [
            (
                r.stage,
                str(r.round),
                str(r.epoch),
                *(f"{r.sparsity.get(name, 0.0):.3f}" for name in layers),
                f"{r.overall:.3f}",
                "" if r.val_accuracy is None else f"{r.val_accuracy:.4f}",
                r.note,
            )
            for r in self.history
        ]
        text = table(header, lines)
        return f"{self.workflow}: {self.note}\n{text}" if self.note else text


class _RecordEpochs:
    """Appends a :class:`Record` to ``records`` at the end of every epoch (the methods of
    :class:`_Recorder`, on either engine's Callback: see :func:`_recorder`)."""

    def __init__(self, trainer, records, *, stage, round, epoch_offset):
        super().__init__()
        self._trainer = trainer
        self._records = records
        self._stage, self._round, self._offset = stage, round, epoch_offset

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        self._records.append(
            _record(
                self.model, self._trainer, stage=self._stage, round=self._round,
                epoch=self._offset + epoch + 1, loss=None if loss is None else float(loss),
            )
        )


def _recorder(model, *args, **kwargs):
    """A :class:`_RecordEpochs` callback of ``model``'s Keras."""
    return engine_of(model).callback_class(_RecordEpochs, "_Recorder")(*args, **kwargs)


def _record(model, trainer, *, stage, round, epoch, loss=None, note=""):
    report = _report(model)
    return Record(
        stage=stage,
        round=round,
        epoch=epoch,
        sparsity={row.name: row.achieved for row in report.rows},
        overall=report.sparsity,
        val_accuracy=trainer.evaluate(model),
        loss=loss,
        note=note,
    )


def _report(model):
    # The plan attached by ``apply`` is irrelevant here: only achieved sparsity is read.
    return sparsity_report(model, plan=ResolvedPlan(()))


# -- fixed masks -----------------------------------------------------------------


class _FixedMasks:
    """Keeps pruned weights exactly zero: multiplies them by fixed masks after every batch
    (the methods of :class:`FixedMask`, on either engine's Callback: see :func:`fixed_mask`).

    Args:
        masks: ``{layer path: {weight label: keep-mask}}`` as :func:`kernel_masks` gives
            (labels as ``kprune.layers.prunable_weights`` names them), or
            ``{layer path: keep-mask}`` for a layer that prunes a single weight. Masks are
            bool or 0/1 arrays shaped like the weights.

    The forward pass of every step sees masked weights (the masks are applied before
    training and after each batch), so the pruned weights never act, and the model
    after ``fit`` holds exact zeros there.

    Example:
        >>> model.fit(x, y, callbacks=[FixedMask(kernel_masks(pruned))])
    """

    def __init__(self, masks):
        super().__init__()
        if not isinstance(masks, dict) or not masks:
            raise ValueError(
                "Argument `masks` must be a non-empty dict {layer path: mask}. "
                f"Received: masks={masks!r}"
            )
        self.masks = {path: ({label: np.asarray(m) != 0 for label, m in mask.items()}
                             if isinstance(mask, dict) else np.asarray(mask) != 0)
                      for path, mask in masks.items()}
        self._pairs = []

    def set_model(self, model):
        super().set_model(model)
        engine = self._engine
        if (engine.uses_tfmot and not isinstance(model, engine.keras.Sequential)
                and engine.graph_nodes(model) is None):
            raise ValueError(
                f"FixedMask cannot mask model {model.name!r}: tfmot cannot prune a subclassed "
                "tf_keras model. Build it with the Sequential or functional API, or with Keras "
                "3 (import keras), whose engine prunes subclassed models. Received: model of "
                f"class {type(model).__name__}")
        found = dict(layers.weight_layers(model))
        pairs = []
        for path, mask in self.masks.items():
            weights = {w.label: w.variable
                       for w in layers.prunable_weights(found[path])} if path in found else {}
            if not weights:
                raise ValueError(
                    f"FixedMask has a mask for layer {path!r}, which has no prunable weight "
                    f"in model {model.name!r}. Layers: {sorted(found)}"
                )
            if not isinstance(mask, dict):
                if len(weights) > 1:
                    raise ValueError(
                        f"FixedMask got one mask for layer {path!r}, which prunes "
                        f"{len(weights)} weights {sorted(weights)}; give "
                        "{label: mask} for each."
                    )
                mask = {next(iter(weights)): mask}
            for label, keep in mask.items():
                if label not in weights:
                    raise ValueError(
                        f"FixedMask has a mask for weight {label!r} of layer {path!r}, "
                        f"which prunes {sorted(weights)}."
                    )
                variable = weights[label]
                if tuple(variable.shape) != keep.shape:
                    raise ValueError(
                        f"FixedMask's mask for layer {path!r} ({label}) has shape "
                        f"{keep.shape}, but the weight has shape {tuple(variable.shape)}."
                    )
                pairs.append((variable, self._engine.constant(keep, variable.dtype)))
        self._pairs = pairs

    def apply(self):
        self._engine.sync_state(self.model)  # JAX: the trainer's state into the variables
        for variable, mask in self._pairs:
            variable.assign(variable * mask)

    def on_train_begin(self, logs=None):
        self.apply()

    def on_train_batch_end(self, batch, logs=None):
        self.apply()

    def on_train_end(self, logs=None):
        self.apply()


def __getattr__(name):  # the tf_keras callback, made (with tf_keras) when first asked for
    if name == "FixedMask":
        from kprune.engines.tfkeras import engine as tf_keras_engine

        return tf_keras_engine.callback_class(_FixedMasks, "FixedMask")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fixed_mask(model, masks):
    """A :class:`FixedMask` callback of ``model``'s Keras (tf_keras or Keras 3).

    Example:
        >>> model.fit(x, y, callbacks=[fixed_mask(model, kernel_masks(pruned))])
    """
    return engine_of(model).callback_class(_FixedMasks, "FixedMask")(masks)


def kernel_masks(model):
    """``{layer path: {weight label: keep-mask}}`` of every pruning wrapper in ``model``.

    The masks are the engine's own (tfmot's, or the Keras 3 engine's), for each weight the
    wrapper prunes.

    Example:
        >>> kernel_masks(pruned)["fc1"]["kernel"].mean()   # the fraction kept
        0.5
    """
    return wrapper_masks(model)


# -- plans -----------------------------------------------------------------------


def target_plan(target, *, schedule=None):
    """Unstructured magnitude pruning at ``target`` for every prunable layer but the head.

    The same as :meth:`PruningPlan.uniform`: the head is the last ``Dense`` layer.

    Example:
        >>> print(target_plan(0.9).resolve(model))
    """
    return PruningPlan.uniform(target, schedule=schedule)


def as_plan(plan_or_target, *, schedule=None):
    """A :class:`PruningPlan` as given, or :func:`target_plan` for a float target."""
    if isinstance(plan_or_target, PruningPlan):
        return plan_or_target
    if isinstance(plan_or_target, bool) or not isinstance(plan_or_target, (int, float)):
        raise TypeError(
            "Argument `plan_or_target` must be a kprune.PruningPlan or a target sparsity "
            f"in [0, 1). Received: plan_or_target={plan_or_target!r}"
        )
    return target_plan(plan_or_target, schedule=schedule)


def _scaled(plan, fraction, *, schedule):
    """``plan`` with every unstructured or block target times ``fraction`` and ``schedule``
    set."""
    rules = []
    for rule in plan.rules:
        if rule.method in ("unstructured", "block"):
            rule = replace(rule, target=rule.target * fraction, schedule=schedule)
        rules.append(rule)
    return PruningPlan(tuple(rules))


def _check_prunes(plan, model):
    resolved = plan.resolve(model)
    if not resolved.pruned:
        raise ValueError(
            f"The plan prunes no layer of model {model.name!r}; nothing to do. "
            f"Resolved plan:\n{resolved}"
        )
    return resolved


# -- workflows -------------------------------------------------------------------


def _prune_fit(model, plan, trainer, *, epochs, stage, round, records, epoch_offset,
               extra_callbacks=(), store=None):
    """Apply ``plan`` to a copy of ``model``, train it, strip it: the shared loop.

    With a checkpoint ``store``, a pruning fit already finished is read back instead of
    run again, one interrupted resumes from its last epoch, and the result is saved.
    """
    pruned = apply(model, plan, steps_per_epoch=trainer.steps_per_epoch, epochs=epochs)
    key = f"{stage}-r{round}"
    done = None if store is None else store.find(f"{key}-done")
    if done is not None:
        records[:] = _records(done.state)
        final = strip(pruned)
        final.set_weights(done.arrays("model"))
        return final, _masks_from(done)
    recorder = _recorder(pruned, trainer, records, stage=stage, round=round,
                         epoch_offset=epoch_offset)
    callbacks = pruning_callbacks(pruned) + list(extra_callbacks) + [recorder]
    _fit(trainer, pruned, epochs, callbacks, store=store, key=key, records=records)
    masks = kernel_masks(pruned)
    final = strip(pruned)
    if store is not None:
        order = [(path, label) for path, by_label in masks.items() for label in by_label]
        flat = [masks[path][label] for path, label in order]
        store.save(f"{key}-done", {"model": final.get_weights(), "masks": flat},
                   {"key": key, "records": _jsonable(records), "mask_order": order})
    return final, masks


def _fit(trainer, model, epochs, callbacks, *, store, key, records):
    """``trainer.fit`` that checkpoints every epoch into ``store`` and resumes from it."""
    def restore(state):
        records[:] = _records(state)

    resumable_fit(trainer, model, epochs, callbacks, store=store, key=key,
                  state=lambda: {"records": _jsonable(records)}, restore=restore)


def _records(state):
    return [Record(**row) for row in state["records"]]


def _jsonable(records):
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.to_dict().items()}
            for r in records]


def _masks_from(checkpoint):
    masks = {}
    for (path, label), mask in zip(checkpoint.state["mask_order"], checkpoint.arrays("masks")):
        masks.setdefault(path, {})[label] = mask
    return masks


def _store(checkpoint_dir, checkpoint_steps, name, plan, *, model, **lengths):
    """The workflow's :class:`Checkpoints` in ``checkpoint_dir`` (None: no checkpoints),
    agreed on by the workers of ``model``'s strategy (see :meth:`Checkpoints.agree`)."""
    if checkpoint_dir is None:
        if checkpoint_steps is not None:
            raise ValueError(
                "Argument `checkpoint_steps` needs a `checkpoint_dir` to write into. "
                f"Received: checkpoint_steps={checkpoint_steps!r}, checkpoint_dir=None"
            )
        return None
    if checkpoint_steps is not None:
        check_int(checkpoint_steps, "checkpoint_steps")
    return run_checkpoints(checkpoint_dir, {"workflow": name, "plan": plan.to_dict(), **lengths},
                           model=model, every_steps=checkpoint_steps)


def _start(model, trainer):
    layers.model_layers(model)  # checks the model, on either engine
    if not isinstance(trainer, Trainer):
        raise TypeError(
            "Argument `trainer` must be a kprune.workflows.Trainer (arrays or your own "
            f"fit). Received: trainer={trainer!r}"
        )
    return [_record(model, trainer, stage="dense", round=0, epoch=0)]


def one_shot(model, plan_or_target, *, trainer, finetune_epochs=1, checkpoint_dir=None,
             checkpoint_steps=None):
    """Prune a trained model to the target at once, then fine-tune with the mask held.

    Every unstructured rule gets a constant schedule: tfmot prunes to the full target
    at the first step and keeps re-pruning to it during the fine-tune.

    Args:
        model: a trained tf_keras or Keras 3 model (not modified).
        plan_or_target: a :class:`PruningPlan` or a float target (see :func:`target_plan`).
        trainer: a :class:`Trainer`.
        finetune_epochs: epochs of fine-tuning (at least 1: tfmot prunes inside fit).
        checkpoint_dir: a folder for checkpoints at every epoch (see
            :mod:`kprune.methods.checkpoints`); if it holds some from an interrupted
            call with the same arguments, this call resumes from the latest. With a
            seeded trainer (``Trainer(seed=...)``) the result is the same as without
            the interruption.
        checkpoint_steps: also checkpoint every this many steps inside an epoch (needs
            a seeded trainer); resuming from one is exact for models without random
            layers (Dropout draws resume exactly only from epoch checkpoints).

    Example:
        >>> result = one_shot(trained, 0.9, trainer=trainer, finetune_epochs=2)
    """
    plan = _scaled(as_plan(plan_or_target), 1.0, schedule=Schedule(kind="constant"))
    check_int(finetune_epochs, "finetune_epochs")
    _check_prunes(plan, model)
    store = _store(checkpoint_dir, checkpoint_steps, "one_shot", plan, model=model,
                   epochs=finetune_epochs)
    records = _start(model, trainer)
    final, masks = _prune_fit(model, plan, trainer, epochs=finetune_epochs,
                              stage="finetune", round=0, records=records, epoch_offset=0,
                              store=store)
    return WorkflowResult(final, records, "one_shot", plan=_resolved(final),
                          note=f"pruned at once, fine-tuned {finetune_epochs} epoch(s)",
                          masks=masks)


def gradual(model, plan_or_target, *, trainer, epochs, recover_epochs=0, checkpoint_dir=None,
            checkpoint_steps=None):
    """Prune while training: sparsity rises on the plan's schedules (cubic by default).

    Args:
        model: a tf_keras or Keras 3 model, trained or not (not modified).
        plan_or_target: a :class:`PruningPlan` (its schedules are used as they are) or
            a float target, pruned on a cubic schedule from 0 that ends
            ``recover_epochs`` before the end of training.
        trainer: a :class:`Trainer`.
        epochs: training epochs in all.
        recover_epochs: for a float target: epochs at the final sparsity at the end.
        checkpoint_dir: a folder for checkpoints at every epoch (see
            :mod:`kprune.methods.checkpoints`); if it holds some from an interrupted
            call with the same arguments, this call resumes from the latest. With a
            seeded trainer (``Trainer(seed=...)``) the result is the same as without
            the interruption.
        checkpoint_steps: also checkpoint every this many steps inside an epoch (needs
            a seeded trainer); resuming from one is exact for models without random
            layers (Dropout draws resume exactly only from epoch checkpoints).

    Example:
        >>> result = gradual(model, 0.9, trainer=trainer, epochs=6, recover_epochs=2)
    """
    check_int(epochs, "epochs")
    check_int(recover_epochs, "recover_epochs", minimum=0)
    if recover_epochs >= epochs:
        raise ValueError(
            "Argument `recover_epochs` must leave at least one epoch to prune in. "
            f"Received: recover_epochs={recover_epochs}, epochs={epochs}"
        )
    if recover_epochs and isinstance(plan_or_target, PruningPlan):
        raise ValueError(
            "Argument `recover_epochs` applies to a float target; with a plan, set `end` "
            f"on its rules' schedules instead. Received: recover_epochs={recover_epochs}"
        )
    end = None if recover_epochs == 0 else epochs - recover_epochs
    plan = as_plan(plan_or_target, schedule=Schedule(kind="polynomial", end=end))
    _check_prunes(plan, model)
    store = _store(checkpoint_dir, checkpoint_steps, "gradual", plan, model=model, epochs=epochs)
    records = _start(model, trainer)
    final, masks = _prune_fit(model, plan, trainer, epochs=epochs, stage="prune", round=0,
                              records=records, epoch_offset=0, store=store)
    return WorkflowResult(final, records, "gradual", plan=_resolved(final),
                          note=f"pruned on the plan's schedules over {epochs} epoch(s)",
                          masks=masks)


def iterative(model, plan_or_target, *, trainer, rounds, epochs_per_round=1,
              accuracy_floor=None, ladder="cubic", checkpoint_dir=None,
              checkpoint_steps=None):
    """Prune part of the way, retrain, repeat: until the target or an accuracy floor.

    Round ``r`` prunes the model left by round ``r - 1`` to ``ladder[r - 1]`` times each
    unstructured target (a constant schedule), retrains ``epochs_per_round`` epochs
    and strips. When the validation accuracy after a round falls below
    ``accuracy_floor`` the workflow stops and keeps the last model at or above it
    (the dense model if round 1 already fell below).

    Args:
        model: a trained tf_keras or Keras 3 model (not modified).
        plan_or_target: a :class:`PruningPlan` or a float target.
        trainer: a :class:`Trainer` (with validation data when a floor is given).
        rounds: number of rounds (>= 1).
        epochs_per_round: retraining epochs per round.
        accuracy_floor: lowest acceptable validation accuracy, in (0, 1]; it must not be
            above the dense model's accuracy.
        ladder: fraction of the target reached after each round: ``"cubic"``
            (``1 - (1 - r/R)^3``, big steps first, as Zhu and Gupta), ``"linear"``
            (``r/R``) or a sequence of ``rounds`` non-decreasing fractions in (0, 1],
            the last 1.
        checkpoint_dir: a folder for checkpoints at every epoch (see
            :mod:`kprune.methods.checkpoints`); if it holds some from an interrupted
            call with the same arguments, this call resumes from the latest. With a
            seeded trainer (``Trainer(seed=...)``) the result is the same as without
            the interruption.
        checkpoint_steps: also checkpoint every this many steps inside an epoch (needs
            a seeded trainer); resuming from one is exact for models without random
            layers (Dropout draws resume exactly only from epoch checkpoints).
            A finished round is read back, not run again.

    Example:
        >>> result = iterative(trained, 0.9, trainer=trainer, rounds=3,
        ...                    accuracy_floor=0.97)
        >>> result.note
        'reached the target at round 3 of 3'
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(
            f"Argument `rounds` must be a positive integer (one round prunes, then "
            f"retrains). Received: rounds={rounds!r}"
        )
    check_int(epochs_per_round, "epochs_per_round")
    fractions = _ladder(ladder, rounds)
    plan = as_plan(plan_or_target)
    _check_prunes(plan, model)
    if accuracy_floor is not None:
        if (isinstance(accuracy_floor, bool) or not isinstance(accuracy_floor, (int, float))
                or not 0 < accuracy_floor <= 1):
            raise ValueError(
                "Argument `accuracy_floor` must be a validation accuracy in (0, 1]. "
                f"Received: accuracy_floor={accuracy_floor!r}"
            )
        if isinstance(trainer, Trainer) and not trainer.can_evaluate:
            raise ValueError(
                "Argument `accuracy_floor` needs a trainer with `validation_data` or "
                f"`evaluate`. Received: accuracy_floor={accuracy_floor!r}"
            )
    store = _store(checkpoint_dir, checkpoint_steps, "iterative", plan, model=model,
                   rounds=rounds, ladder=fractions,
                   epochs_per_round=epochs_per_round, accuracy_floor=accuracy_floor)
    records = _start(model, trainer)
    dense_accuracy = records[0].val_accuracy
    if accuracy_floor is not None and accuracy_floor > dense_accuracy:
        raise ValueError(
            f"Argument `accuracy_floor` ({accuracy_floor:.4f}) is above the dense model's "
            f"validation accuracy ({dense_accuracy:.4f}): the first round would already "
            f"stop. Lower the floor. Received: accuracy_floor={accuracy_floor!r}"
        )
    kept, kept_plan, kept_masks, kept_round = copy_model(model), None, None, 0
    current, note, stop_round = model, "", rounds
    for index, fraction in enumerate(fractions, start=1):
        round_plan = _scaled(plan, fraction, schedule=Schedule(kind="constant"))
        current, masks = _prune_fit(
            current, round_plan, trainer, epochs=epochs_per_round, stage="prune",
            round=index, records=records, epoch_offset=(index - 1) * epochs_per_round,
            store=store,
        )
        accuracy = records[-1].val_accuracy
        if accuracy_floor is not None and accuracy < accuracy_floor:
            stop_round = index
            kept_what = "the dense model" if kept_round == 0 else f"round {kept_round}"
            note = (
                f"stopped at round {index} of {rounds}: validation accuracy "
                f"{accuracy:.4f} fell below the floor {accuracy_floor:.4f}; kept "
                f"{kept_what} (overall sparsity {_overall(records, kept_round):.3f})"
            )
            break
        kept, kept_plan, kept_masks, kept_round = current, _resolved(current), masks, index
    else:
        note = f"reached the target at round {rounds} of {rounds}"
    records[-1] = replace(records[-1], note=note)
    if kept_round != stop_round:
        records.append(replace(_record(kept, trainer, stage="kept", round=kept_round,
                                       epoch=records[-1].epoch), note=f"kept round {kept_round}"))
    return WorkflowResult(kept, records, "iterative", plan=kept_plan, note=note,
                          stop_round=stop_round, masks=kept_masks)


def rewind(model, plan_or_target, *, trainer, epochs, to="init", retrain_epochs=None,
           checkpoint_dir=None, checkpoint_steps=None):
    """Lottery-ticket rewinding: train with pruning, keep the mask, rewind, retrain.

    1. Train a copy of ``model`` with pruning for ``epochs`` (the plan's schedules;
       cubic from 0 for a float target) and keep the final masks.
    2. Reset the weights to ``to``: the model's own weights as given (``"init"``: pass
       an untrained model for Frankle and Carbin's rewinding to initialisation), the
       weights after ``to`` epochs of step 1 (an int, late rewinding), or a checkpoint
       (a list of arrays in ``model.get_weights()`` order). Pruned weights are zeroed.
    3. Retrain ``retrain_epochs`` (default ``epochs``) with the masks fixed
       (:class:`FixedMask`): pruned weights stay exactly zero.

    ``checkpoint_dir``, ``checkpoint_steps``: checkpoints at every epoch of steps 1 and 3
    (and every that many steps), resumed from as in :func:`gradual` (not with ``to`` an
    epoch number, whose snapshot is not saved).

    Example:
        >>> result = rewind(fresh_model, 0.9, trainer=trainer, epochs=3)
        >>> result = rewind(fresh_model, 0.9, trainer=trainer, epochs=3, to=1)
    """
    layers.model_layers(model)  # checks the model, on either engine
    check_int(epochs, "epochs")
    retrain_epochs = epochs if retrain_epochs is None else retrain_epochs
    check_int(retrain_epochs, "retrain_epochs")
    checkpoint = _checkpoint(model, to, epochs)
    plan = as_plan(plan_or_target)
    _check_prunes(plan, model)
    late = isinstance(to, int) and to > 0
    if late and checkpoint_dir is not None:
        raise ValueError(
            "Argument `checkpoint_dir` cannot be used with `to` an epoch number (late "
            "rewinding): the weights of that epoch are not checkpointed. Rewind to 'init' "
            f"or to a list of weights. Received: to={to}, checkpoint_dir={str(checkpoint_dir)!r}"
        )
    store = _store(checkpoint_dir, checkpoint_steps, "rewind", plan, model=model,
                   epochs=epochs, retrain_epochs=retrain_epochs,
                   to=to if isinstance(to, str) else "weights")
    records = _start(model, trainer)
    snapshots = {}
    extra = [_snapshot(model, to, snapshots)] if late else []
    _, masks = _prune_fit(model, plan, trainer, epochs=epochs, stage="prune", round=0,
                          records=records, epoch_offset=0, extra_callbacks=extra, store=store)
    rewound = copy_model(model)
    if isinstance(to, int) and to > 0:
        for path, layer in layers.model_layers(rewound):
            if path in snapshots:
                layer.set_weights(snapshots[path])
    else:
        rewound.set_weights(checkpoint)
    fixed = fixed_mask(rewound, masks)
    fixed.set_model(rewound)
    fixed.apply()
    where = {"init": "initial weights"}.get(to if isinstance(to, str) else None) or (
        f"weights after epoch {to}" if isinstance(to, int) else "the given checkpoint"
    )
    records.append(_record(rewound, trainer, stage="rewind", round=0, epoch=epochs,
                           note=f"rewound to {where}, mask kept"))
    recorder = _recorder(rewound, trainer, records, stage="retrain", round=0,
                         epoch_offset=epochs)
    _fit(trainer, rewound, retrain_epochs, [fixed_mask(rewound, masks), recorder], store=store,
         key="retrain-r0", records=records)
    final = copy_model(rewound)
    resolved = plan.resolve(model)
    return WorkflowResult(final, records, "rewind", plan=resolved,
                          note=f"mask from {epochs} epoch(s) of pruning, rewound to {where}, "
                               f"retrained {retrain_epochs} epoch(s)",
                          masks=masks)


#: The workflows by name (for recipes and the CLI).
WORKFLOWS = {"one_shot": one_shot, "gradual": gradual, "iterative": iterative, "rewind": rewind}


class _SnapshotEpoch:
    """Saves every layer's own weights (inside wrappers) at the end of epoch ``epoch``
    (either engine: Keras syncs a JAX trainer's state into the variables before
    ``on_epoch_end``)."""

    def __init__(self, epoch, out):
        super().__init__()
        self._epoch, self._out = epoch, out

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 != self._epoch:
            return
        for path, layer in layers.model_layers(self.model):
            self._out[path] = [np.array(w) for w in layers.unwrap(layer).get_weights()]


def _snapshot(model, epoch, out):
    """A :class:`_SnapshotEpoch` callback of ``model``'s Keras."""
    return engine_of(model).callback_class(_SnapshotEpoch, "_Snapshot")(epoch, out)


def _checkpoint(model, to, epochs):
    """Validate ``to``; return the weights list to rewind to (None for an epoch number)."""
    if isinstance(to, str):
        if to != "init":
            raise ValueError(
                "Argument `to` must be 'init', an epoch number or a list of weight arrays. "
                f"Received: to={to!r}"
            )
        return [np.array(w) for w in model.get_weights()]
    if isinstance(to, bool):
        raise TypeError(f"Argument `to` must not be a bool. Received: to={to!r}")
    if isinstance(to, int):
        if not 0 <= to < epochs:
            raise ValueError(
                f"Argument `to` as an epoch number must be in [0, epochs) = [0, {epochs}): "
                f"the epoch of the pruning fit whose weights to rewind to. Received: to={to}"
            )
        return [np.array(w) for w in model.get_weights()] if to == 0 else None
    if not isinstance(to, (list, tuple)):
        raise TypeError(
            "Argument `to` must be 'init', an epoch number or a list of weight arrays "
            f"(model.get_weights() order). Received: to of type {type(to).__name__}"
        )
    expected = model.get_weights()
    if len(to) != len(expected):
        raise ValueError(
            f"Checkpoint `to` holds {len(to)} arrays but model {model.name!r} has "
            f"{len(expected)} weights; it must be in model.get_weights() order."
        )
    for index, (given, want) in enumerate(zip(to, expected)):
        shape = tuple(np.shape(given))
        if shape != want.shape:
            name = model.weights[index].name
            raise ValueError(
                f"Checkpoint `to` does not match the model: array {index} ({name}) has "
                f"shape {shape}, the model expects {want.shape}."
            )
    return [np.array(w, dtype=want.dtype) for w, want in zip(to, expected)]


# -- helpers ---------------------------------------------------------------------


def _ladder(ladder, rounds):
    if isinstance(ladder, str):
        if ladder == "cubic":
            return [1.0 - (1.0 - r / rounds) ** 3 for r in range(1, rounds + 1)]
        if ladder == "linear":
            return [r / rounds for r in range(1, rounds + 1)]
        raise ValueError(
            "Argument `ladder` must be 'cubic', 'linear' or a sequence of fractions. "
            f"Received: ladder={ladder!r}"
        )
    try:
        values = [float(v) for v in ladder]
    except (TypeError, ValueError):
        raise TypeError(
            f"Argument `ladder` must be 'cubic', 'linear' or a sequence of fractions. "
            f"Received: ladder={ladder!r}"
        ) from None
    if len(values) != rounds:
        raise ValueError(
            f"Argument `ladder` must hold one fraction per round ({rounds}). "
            f"Received: ladder={ladder!r}"
        )
    if any(not 0 < v <= 1 for v in values) or values != sorted(values) or values[-1] != 1:
        raise ValueError(
            "Argument `ladder` must be non-decreasing fractions of the target in (0, 1], "
            f"ending at 1. Received: ladder={ladder!r}"
        )
    return values


def _overall(records, round_index):
    matching = [r for r in records if r.round == round_index]
    return matching[-1].overall if matching else 0.0


def _resolved(model):
    return getattr(model, "_kprune_plan", None)
