"""Run a recipe into a run folder: baseline, workflow, strip, verify, export, report.

The run folder gets ``recipe.yaml`` (a copy), ``plan.json`` (the resolved plan),
``baseline.keras`` (the dense model the report compares with: with ``baseline:
{trained_as_long: true}`` a control trained on for as many epochs as the pruned model got
after the baseline, the baseline itself then kept as ``baseline-start.keras``) and
``pruned.keras``, ``dense-float.tflite`` and the pruned ``.tflite`` variants, ``report.json``,
``report.md`` and the plots, and ``checkpoints/`` (the trained baseline, and the
workflow at every epoch: see :mod:`kprune.methods.checkpoints`) from which
``resume=True`` (``kprune run --resume``) continues a run that was interrupted. Training
is seeded with the recipe's ``seed`` and runs with TensorFlow's op determinism, so a
resumed run ends with the masks and weights of one never interrupted; with
``distribute: {strategy: ...}`` it trains under that ``tf.distribute`` strategy. The data is any source :mod:`kprune.sources` reads, and the
model any tf_keras classifier (a built-in name is built on the data's shape and classes).
The recipe's ``validation`` split is held out of the training examples (seeded with its
``seed``); the baseline and the workflow train on the
rest and the workflow validates on it, so the test split is touched only by the final
report (what was loaded and the split sizes are logged, in the report's title and under
``extra.data`` in ``report.json``). Everything that can be checked is checked before
training (the recipe, the model file, the data against the model's input shape and class
count, the plan against the model, the output folder), and a
folder that already holds a finished run (a ``report.json``) is never overwritten
unless ``force=True``; one that holds an unfinished run is continued with
``resume=True``, started over with ``force=True``, and otherwise refused.

Example:
    >>> from kprune.experiments.recipe import Recipe
    >>> from kprune.experiments.runner import run_recipe
    >>> result = run_recipe(Recipe.load("examples/seed_cnn_gradual.yaml"), "runs/seed")
    >>> print(result.report)
"""

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["run_recipe", "export_and_compare", "RunResult", "check_out_dir", "check_run_dir"]

FINISHED_MARKER = "report.json"
RECIPE_COPY = "recipe.yaml"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the folder, the models, the sparsity and the report."""

    out_dir: Path
    baseline: object
    pruned: object
    sparsity: object
    report: object
    history: object


def check_out_dir(out_dir, *, force=False, create=True):
    """Refuse a folder that holds a finished run (unless ``force``); create it otherwise."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"Output path exists and is not a folder. Received: out={str(out)!r}")
    if (out / FINISHED_MARKER).exists() and not force:
        raise FileExistsError(
            f"{out} already holds a finished run ({FINISHED_MARKER}); choose another --out, "
            "or pass --force to overwrite it."
        )
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def check_run_dir(out_dir, recipe, *, force=False, resume=False):
    """Check that ``recipe`` may run into ``out_dir``: a new folder, an unfinished run of
    the same recipe with ``resume``, or anything but a file with ``force``.

    Example:
        >>> check_run_dir("runs/seed", recipe, resume=True)   # continue an interrupted run
    """
    out = Path(out_dir)
    if force and resume:
        raise ValueError("Give --resume (continue the run in the folder) or --force (start "
                         "it over), not both. Received: force=True, resume=True")
    check_out_dir(out, force=force or resume, create=False)
    copy = out / RECIPE_COPY
    if resume:
        if (out / FINISHED_MARKER).exists():
            raise FileExistsError(
                f"{out} holds a finished run ({FINISHED_MARKER}): there is nothing to resume. "
                "Choose another --out, or pass --force (without --resume) to run it again.")
        if not copy.is_file():
            raise FileNotFoundError(
                f"{out} holds no unfinished run to resume (no {RECIPE_COPY}); run without "
                "--resume to start one there.")
        if copy.read_text() != recipe.to_yaml():
            changed = _first_difference(copy.read_text(), recipe.to_yaml())
            raise ValueError(
                f"{out} holds a run of another recipe: its {RECIPE_COPY} differs from this "
                f"one ({changed}), so its checkpoints do not apply. Resume it with the same "
                "recipe, or choose a fresh --out.")
    elif copy.is_file() and not (out / FINISHED_MARKER).exists() and not force:
        raise FileExistsError(
            f"{out} holds an unfinished run (a {RECIPE_COPY} and no {FINISHED_MARKER}): pass "
            "--resume to continue it from its latest checkpoint, or choose a fresh --out "
            "(--force starts it over).")
    return out


def _first_difference(old, new):
    for number, (a, b) in enumerate(zip(old.splitlines(), new.splitlines()), start=1):
        if a != b:
            return f"line {number}: {a.strip()!r} in the folder, {b.strip()!r} now"
    return "one is longer"


def run_recipe(recipe, out_dir, *, force=False, resume=False, data=None, model=None,
               log=print):
    """Run ``recipe`` (a :class:`~kprune.recipe.Recipe`) and write the run folder.

    ``resume=True`` continues an unfinished run in ``out_dir`` from its latest
    checkpoint (the folder's recipe copy must equal ``recipe``).

    ``data`` and ``model`` replace the recipe's from Python: any source
    :func:`kprune.sources.load_data` takes (a ``Dataset``, arrays, two ``tf.data``
    datasets, a path), and a tf_keras classifier (left unmodified: the run trains a copy).
    """
    from kprune.engines import distribute
    from kprune.engines.tfkeras import loader
    from kprune.engines.wrap import copy_model
    from kprune.experiments import models
    from kprune.experiments.recipe import Recipe
    from kprune.experiments.sources import load_data
    from kprune.methods.checkpoints import Checkpoints
    from kprune.methods.trainer import Trainer

    if not isinstance(recipe, Recipe):
        raise TypeError(f"Argument `recipe` must be a kprune Recipe. Received: recipe={recipe!r}")
    started = time.perf_counter()
    check_run_dir(out_dir, recipe, force=force, resume=resume)
    strategy = (None if recipe.distribute.strategy is None
                else distribute.make(recipe.distribute.strategy))
    builtin = model is None and recipe.model in models.MODELS
    loader.keras.utils.set_random_seed(recipe.seed)  # a built-in model's initial weights
    if model is not None:
        model = copy_model(model, strategy=strategy)
    elif not builtin:
        recipe.import_modules()  # they register the model's custom classes
        with distribute.scope(strategy=strategy):
            model = _load_model(models, recipe)
    dataset = load_data(
        recipe.data_source() if data is None else data, model=model,
        scale=recipe.data.scale, image_size=recipe.data.image_size,
        test_split=recipe.data.test_split, seed=recipe.seed, verbose=False)
    if builtin:  # the built-in architecture, on the data's shape and classes
        shape = dataset.input_shape
        shape = shape + (1,) if len(shape) == 2 else shape  # (H, W) images: one channel
        with distribute.scope(strategy=strategy):
            model = models.build(recipe.model, input_shape=shape,
                                 num_classes=dataset.num_classes)
        dataset = dataset.fit_to(model)
    plan = recipe.pruning_plan()
    plan.resolve(model)  # a rule for a missing layer fails here, before any training
    cut = recipe.structural
    if cut.active:  # a graph kprune cannot prune fails here, too
        _check_structural(model, cut)
    if recipe.workflow.name == "variational":  # a model it cannot train fails here, too
        from kprune.methods.variational import check_model

        check_model(model)

    # The test split is only for the final report: the baseline and the workflow train on
    # the rest of the training examples, and the workflow validates (accuracy_floor) on a
    # split held out of them.
    dataset = dataset.subset(recipe.subset.train, recipe.subset.test, seed=recipe.seed)
    dataset = dataset.hold_out(recipe.validation, seed=recipe.seed)
    x_train, y_train = dataset.x_train, dataset.y_train
    x_val, y_val = dataset.x_val, dataset.y_val
    x_test, y_test = dataset.x_test, dataset.y_test
    sizes = dataset.counts
    split_text = (f"{sizes['train']:,} training / {sizes['validation']:,} validation / "
                  f"{sizes['test']:,} test examples")
    log(f"kprune run: {recipe.model} on {dataset}")
    log(f"validation held out of the training examples with seed {recipe.seed}; "
        f"workflow {recipe.workflow.name}"
        + ("" if strategy is None else f"; {recipe.distribute.strategy} strategy over "
           f"{strategy.num_replicas_in_sync} replicas"))

    out = check_out_dir(out_dir, force=True)
    checkpoints = Checkpoints(out / CHECKPOINTS)
    if resume:
        checkpoints.agree(strategy)  # the workers of a multi-worker run resume together
    if not resume:
        (out / FINISHED_MARKER).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        (out / RECIPE_COPY).write_text(recipe.to_yaml())
    else:
        log(f"resuming the run in {out} from its latest checkpoint")

    stages = ["baseline", "structural", "workflow", "sparsity", "export"]
    if not cut.active:
        stages.remove("structural")
    elif cut.when == "after":  # channels go from the sparse model, the plan is re-applied
        stages[1:3] = ["workflow", "structural"]

    def stage(name):
        return f"[{stages.index(name) + 1}/{len(stages)}] {name}"

    loader.keras.utils.set_random_seed(recipe.seed)
    training = recipe.baseline
    _compile(model, training)
    initial_weights = [w.copy() for w in model.get_weights()]

    def trainer_with(decay):
        return Trainer(x_train, y_train, validation_data=(x_val, y_val),
                       batch_size=training.batch_size, compile=lambda m: _compile(m, training),
                       callbacks=_decay(model, training.learning_rate, decay),
                       verbose=_fit_verbosity(), seed=recipe.seed)

    trainer = trainer_with(training.learning_rate_decay)
    trained = checkpoints.find("baseline-done")
    if not training.epochs:
        log(f"{stage('baseline')}: the model as given (baseline.epochs: 0)")
    elif trained is not None:
        log(f"{stage('baseline')}: read back from {trained.path}")
        model.set_weights(trained.arrays("model"))
    else:
        log(f"{stage('baseline')}: {training.epochs} epoch(s)")
        trainer.fit(model, training.epochs)
        checkpoints.save("baseline-done", {"model": model.get_weights()}, {"stage": "baseline"})

    if recipe.workflow.learning_rate_decay is not None:  # the fits after the baseline
        trainer = trainer_with(recipe.workflow.learning_rate_decay)
    start = model
    calibration = {"train": (x_train[:cut.calibration], y_train[:cut.calibration]),
                   "validation": (x_val, y_val)}
    if cut.active and cut.when == "before":
        start = _remove_channels(model, cut, stage("structural"), log, calibration)
        if cut.fine_tune_epochs:
            trainer.fit(start, cut.fine_tune_epochs)

    log(f"{stage('workflow')} {recipe.workflow.name}")
    steps_per_epoch = math.ceil(len(x_train) / training.batch_size)
    resolved = plan.resolve(start, steps_per_epoch=steps_per_epoch, epochs=recipe.workflow.epochs)
    log(str(resolved) if recipe.workflow.name != "variational" else
        "variational: each layer's sparsity is learned (the KL term), not the plan's "
        "method or target; the plan only picks the layers (plan: default = every Dense "
        "and Conv2D)")
    (out / "plan.json").write_text(json.dumps(resolved.to_dict(), indent=2))
    control, control_epochs = None, None  # the dense control, trained first as the teacher
    if "control" in (recipe.workflow.teacher, recipe.workflow.finetune_teacher):
        control_epochs = _planned_epochs_after_baseline(recipe, cut)
        control = _train_as_long(model, control_epochs, trainer, checkpoints, log)
    final, history = _run_workflow(recipe, start, plan, trainer, initial_weights,
                                   checkpoint_dir=out / CHECKPOINTS, control=control)
    if cut.active and cut.when == "after":
        from kprune.methods.workflows import one_shot

        smaller = _remove_channels(final, cut, stage("structural"), log, calibration)
        log(f"the plan again on the smaller model, one-shot, {cut.fine_tune_epochs} "
            "fine-tune epoch(s): 2:4 groups are re-formed over the inputs that remain")
        final = one_shot(smaller, plan, trainer=trainer, finetune_epochs=cut.fine_tune_epochs,
                         checkpoint_dir=out / CHECKPOINTS / "structural-after").model

    from kprune.engines.saving import save_model
    from kprune.engines.verify import sparsity_report

    learned = recipe.workflow.name == "variational"  # no targets: the KL term chose them
    report = sparsity_report(final, plan=None if learned else plan.resolve(final))
    log(f"{stage('sparsity')}\n" + str(report))
    epochs = {"baseline": training.epochs,
              "pruned_after_baseline": _epochs_after_baseline(cut, history)}
    dense = model
    if training.trained_as_long:  # the dense control: as many epochs in total as the pruned
        save_model(model, out / "baseline-start.keras")
        if control is None:
            control_epochs = epochs["pruned_after_baseline"]
            control = _train_as_long(model, control_epochs, trainer, checkpoints, log)
        dense = control
        epochs["dense_after_baseline"] = control_epochs
    save_model(dense, out / "baseline.keras")
    save_model(final, out / "pruned.keras")

    log(f"{stage('export')} {', '.join(recipe.export.variants)} and measure")
    n_cal = min(recipe.export.calibration_samples, len(x_train))
    comparison = export_and_compare(
        dense,
        final,
        variants=recipe.export.variants,
        representative_data=x_train[:n_cal],
        x_test=x_test,
        y_test=y_test,
        out_dir=out,
        plan=None if learned else plan,
        latency_repeats=recipe.export.latency_repeats,
        title=f"kprune run: {recipe.model}, {recipe.workflow.name} ({split_text})",
        data=dataset.split_description("test"),
        extra={"recipe": recipe.to_dict(), "data": dataset.to_dict(),
               "seconds": round(time.perf_counter() - started, 1), "history": history,
               "epochs": epochs},
    )
    log("\n" + str(comparison))
    if training.epochs and not training.trained_as_long:
        tuned = (f"{cut.fine_tune_epochs} structural fine-tune epoch(s) and "
                 if cut.active and cut.fine_tune_epochs else "")
        log(f"note: the pruned model kept training ({tuned}the {recipe.workflow.name} "
            f"workflow) after the {training.epochs}-epoch baseline; the accuracy change "
            "includes that training.")
    log(f"report: {comparison.markdown_path} and {comparison.json_path}; plots: "
        + ", ".join(str(out / name) for name in comparison.data["plots"]))
    return RunResult(out, dense, final, report, comparison, history)


def export_and_compare(baseline, pruned, *, variants, x_test, y_test, out_dir,
                       representative_data=None, plan=None, latency_repeats=20,
                       title="kprune comparison", data=None, extra=None):
    """Export the dense baseline (float) and ``pruned`` (each variant), then compare.

    ``data`` describes the evaluation data for the report (see ``report.compare``).

    Returns the :class:`kprune.report.Report` written into ``out_dir``.
    """
    from kprune.tflite import export, report

    dense = export.to_tflite(baseline, Path(out_dir) / "dense-float.tflite", variant="float")
    runs = export.export_variants(pruned, out_dir, variants,
                                  representative_data=representative_data, prefix="pruned-")
    entries = [report.Variant.from_export(dense, model=baseline, group="dense")]
    entries += [report.Variant.from_export(run, model=pruned, group="pruned", plan=plan)
                for run in runs.values()]
    return report.compare(entries, baseline="dense/float", x_test=x_test, y_test=y_test,
                          out_dir=out_dir, latency_repeats=latency_repeats, title=title,
                          data=data, extra=extra)


def _load_model(models, recipe):
    """The recipe's model file, loaded; a class it holds that no module registered gets
    the hint to list that module under ``imports``."""
    from kprune.engines.saving import unknown_class

    try:
        return models.load(str(recipe.resolve(recipe.model)))
    except ValueError as err:
        if unknown_class(err) is None:
            raise
        raise ValueError(
            f"{err}. kprune run: list the module that defines it under the recipe's "
            "`imports:` (e.g. imports: [my_package.layers]) or pass --import MODULE"
        ) from err


def _fit_verbosity():
    """Keras fit prints one line per epoch, or nothing when kprune is quiet."""
    from kprune import progress

    return 0 if progress.is_quiet() else 2


def _compile(model, training):
    from kprune.experiments import models

    return models.compile_classifier(model, learning_rate=training.learning_rate,
                                     optimizer=training.optimizer)


def _epochs_after_baseline(cut, history):
    """Epochs the pruned model trained after the baseline: the structural fine-tune and
    the workflow's epochs (the last epoch of its history)."""
    tuned = cut.fine_tune_epochs if cut.active else 0
    return tuned + max((record.get("epoch", 0) for record in history), default=0)


def _planned_epochs_after_baseline(recipe, cut):
    """The epochs a variational workflow will train after the baseline (as
    :func:`_epochs_after_baseline` counts them when it has)."""
    tuned = cut.fine_tune_epochs if cut.active else 0
    return tuned + recipe.workflow.epochs + recipe.workflow.finetune_epochs


def _decay(model, rate, decay):
    """The callbacks that lower the rate from ``rate`` within each fit by ``decay`` (a
    factor per epoch or ``cosine``; none for a constant rate)."""
    from kprune.engines import engine_of

    if decay == 1:
        return []

    class Decay(engine_of(model).keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if decay == "cosine":
                factor = 0.5 * (1 + math.cos(math.pi * epoch / self.params["epochs"]))
            else:
                factor = decay**epoch
            self.model.optimizer.learning_rate = rate * factor

    return [Decay()]


def _train_as_long(model, epochs, trainer, checkpoints, log):
    """A copy of the dense ``model`` trained ``epochs`` more (read back when resuming)."""
    from kprune.engines.wrap import copy_model

    control = copy_model(model)
    trained = checkpoints.find("control-done")
    if trained is not None:
        log(f"dense control trained as long: read back from {trained.path}")
        control.set_weights(trained.arrays("model"))
        return control
    log(f"dense control trained as long: the baseline {epochs} more epoch(s), as many as "
        "the pruned model trained after it")
    if epochs:
        trainer.fit(control, epochs)
    checkpoints.save("control-done", {"model": control.get_weights()}, {"stage": "control"})
    return control


def _check_structural(model, cut):
    """Refuse, before any training, a structural step ``model`` cannot take: a graph kprune
    cannot prune, or a fraction of blocks that drops none."""
    from kprune.structural import residual_blocks, select

    fraction = cut.prune_fraction()
    if fraction is not None:
        select(model, fraction, criterion=_label_free(cut.criterion), scope=cut.scope,
               cost=cut.cost, round_to=cut.round_to, exclude=cut.exclude)
    if cut.blocks is not None:
        droppable = sum(block.droppable for block in residual_blocks(model, unit=cut.block_unit))
        if int(cut.blocks * droppable) < 1:
            kind = "transformer" if cut.block_unit == "transformer" else "residual"
            raise ValueError(
                f"Key `structural.blocks` drops {cut.blocks:g} of the model's {droppable} "
                f"droppable {kind} blocks, rounded down: none. Give a larger fraction, or "
                f"leave blocks out. Received: structural.blocks={cut.blocks!r}")


def _label_free(criterion):
    """The criterion for a check before training (the data-based ones score like l1)."""
    return "l1" if criterion in ("taylor", "fisher") else criterion


def _remove_channels(model, cut, heading, log, calibration):
    """The structural step of a recipe: ``model`` without ``cut.blocks`` of its residual
    blocks, then without ``cut.fraction`` (or ``heads``, ``neurons``) of its channels.

    ``calibration``: ``{"train": (x, y), "validation": (x, y)}``; the training examples
    score channels (taylor with labels, fisher without), rank blocks by influence and
    feed the correction, the validation ones rank blocks by sensitivity.
    """
    from kprune.engines import distribute
    from kprune.structural import drop_blocks, prune, residual_blocks, summary

    x_cal, y_cal = calibration["train"]
    fraction = cut.prune_fraction()
    weighed = f", weighted by {cut.cost}" if cut.cost else ""
    if isinstance(fraction, dict):
        what = " and ".join(f"{value:g} of the {'neurons' if unit == 'channels' else unit}"
                            for unit, value in fraction.items())
    else:
        what = None if fraction is None else f"{fraction:g} of the channels"
    kind = "transformer" if cut.block_unit == "transformer" else "residual"
    steps = ([f"drop {cut.blocks:g} of the {kind} blocks ({cut.block_criterion})"]
             if cut.blocks is not None else [])
    if what is not None:
        corrected = f", {cut.correction} correction" if cut.correction else ""
        steps.append(f"remove {what} ({cut.scope}{weighed}, {cut.criterion}{corrected})")
    log(f"{heading}: {', then '.join(steps)}, fine-tune {cut.fine_tune_epochs} epoch(s)")
    smaller = model
    with distribute.scope(model):
        if cut.blocks is not None:
            unit = cut.block_unit
            count = int(cut.blocks * sum(b.droppable for b in residual_blocks(model, unit=unit)))
            data = {"influence": x_cal, "sensitivity": calibration["validation"],
                    "l1": None}[cut.block_criterion]
            smaller = drop_blocks(model, count, criterion=cut.block_criterion, data=data,
                                  unit=unit)
        if fraction is not None:
            data = {"taylor": (x_cal, y_cal), "fisher": x_cal}.get(cut.criterion)
            smaller = prune(smaller, fraction, criterion=cut.criterion, scope=cut.scope,
                            cost=cut.cost, round_to=cut.round_to, exclude=cut.exclude,
                            data=data, correct=cut.correction,
                            calibration=None if cut.correction is None else x_cal)
    log(summary(model, smaller))
    return smaller


def _run_workflow(recipe, model, plan, trainer, initial_weights, *, checkpoint_dir,
                  control=None):
    """Dispatch to kprune.workflows; returns (stripped model, JSON-able history).

    ``control``: the dense control, trained already where the variational workflow
    distils it (``teacher`` or ``finetune_teacher: control``).
    """
    from kprune.methods import workflows

    spec = recipe.workflow
    saved = {"checkpoint_dir": checkpoint_dir, "checkpoint_steps": recipe.checkpoint_steps}
    if spec.name == "gradual":
        result = workflows.gradual(model, plan, trainer=trainer, epochs=spec.epochs, **saved)
    elif spec.name == "one-shot":
        result = workflows.one_shot(model, plan, trainer=trainer, finetune_epochs=spec.epochs,
                                    **saved)
    elif spec.name == "iterative":
        result = workflows.iterative(model, plan, trainer=trainer, rounds=spec.rounds,
                                     epochs_per_round=spec.epochs,
                                     accuracy_floor=spec.accuracy_floor, **saved)
    elif spec.name == "variational":  # plan: default = every Dense and Conv2D learns
        from kprune.methods import variational

        teachers = {None: None, "baseline": model, "control": control}
        result = variational.sparsify(
            model, trainer, epochs=spec.epochs, threshold=spec.threshold,
            layers=None if recipe.plan == "default" else plan,
            kl_weight=spec.kl_weight, kl_ramp_epochs=spec.kl_ramp_epochs,
            finetune_epochs=spec.finetune_epochs, distill=spec.distill,
            temperature=spec.temperature, teacher=teachers[spec.teacher],
            finetune_teacher=teachers[spec.finetune_teacher],
            finetune_temperature=spec.finetune_temperature, checkpoint_dir=checkpoint_dir)
    elif spec.name == "post-training":  # from calibration data; then the zeros held
        from kprune.methods.post_training import prune_post_training

        pruned, report = prune_post_training(model, trainer.x[:spec.calibration], plan,
                                             method=spec.method)
        record = {"stage": "post-training", "report": report.to_dict()}
        if not spec.finetune_epochs:
            return pruned, _jsonable([record])
        result = workflows.one_shot(pruned, plan, trainer=trainer,
                                    finetune_epochs=spec.finetune_epochs, **saved)
        return result.model, _jsonable([record, *result.history])
    else:
        result = workflows.rewind(model, plan, trainer=trainer, epochs=spec.epochs,
                                  to=initial_weights, **saved)
    return result.model, _jsonable(result.history)


def _jsonable(history):
    def convert(value):
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        if hasattr(value, "to_dict"):
            return convert(value.to_dict())
        if hasattr(value, "__dataclass_fields__"):
            from dataclasses import asdict

            return convert(asdict(value))
        return value

    return convert(list(history))
