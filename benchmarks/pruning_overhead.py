"""What pruning costs per training step on tf_keras + tfmot: dense fit against pruning fit.

Three models, each trained from the same weights three ways in one process:

- ``dense``: the model itself, no callbacks;
- ``tfmot``: ``kprune.apply(model, PruningPlan.default())`` fitted with tfmot's
  ``UpdatePruningStep`` alone, the least a tfmot pruning fit needs (the wrappers' per-step
  work: the step counter, ``conditional_mask_update``, ``weight = weight * mask``);
- ``kprune``: the same pruned model fitted with ``kprune.callbacks()`` (``UpdatePruningStep``,
  ``ScheduleGuard``, ``SparsityLogger``), what a kprune user runs.

Models: the seed CNN and LeNet-5 on MNIST (28x28x1), and ``tf_keras.applications``
MobileNetV2 (alpha 0.35, ``weights=None``) on MNIST zero-padded to 32x32x1. Epochs of the three
alternate (each round starting one later) so that all see the same machine load; the first
epoch of each (tracing) is not timed. Each training step is timed from the start of its first
callback to the end of its last (a step timer first in the callbacks of every fit alike).
Reported per model: the median step time of each over all timed steps, and the ratios kprune /
dense (the target: at most 1.10x on the seed CNN), tfmot / dense (tfmot's share) and kprune /
tfmot (kprune's callbacks' share), each the median over rounds of the within-round ratio of
median step times, with its range, beside the ratio of the pooled medians, of the fastest
rounds and of epochs. Many short rounds and within-round ratios resist the bursts of load of
a shared machine (an epoch here runs either at full speed or at about half, whatever the fit);
the load average is recorded before and after.

The step timer is a per-batch callback, and any callback that overrides a batch hook makes
Keras run Python after every step (kprune's ScheduleGuard once did). So a second
set of interleaved rounds times whole epochs with no step timer: dense, dense with an empty
per-batch callback (what such a hook costs), and ``kprune.callbacks()``; reported as the ratio
of median epochs, the range of per-round ratios and the ratio of the fastest epochs.

    python -m benchmarks.pruning_overhead            # 1,280 images, 15 + 9 rounds (~4 min)
    python -m benchmarks.pruning_overhead --quick    # 128 images, 2 rounds, seed CNN + LeNet-5

Writes a results JSON (``--out``; default ``benchmarks/results/pruning_overhead.json``) with
versions, machine, load, seed and settings, and in full mode the table into
``benchmarks/README.md`` between the ``pruning_overhead`` markers.
"""

import argparse
import math
import os
import statistics
import sys
import time
import warnings

import numpy as np

from benchmarks._common import (
    REPO,
    add_standard_options,
    elapsed,
    environment,
    log,
    output_paths,
    publish,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "pruning_overhead.json"
MARKERS = ("<!-- pruning_overhead:begin -->", "<!-- pruning_overhead:end -->")
TARGET = 1.10
TARGET_MODEL = "seed-cnn"
FITS = ("dense", "tfmot", "kprune")
FULL = {"n_train": 1280, "batch_size": 64, "rounds": 15, "epoch_rounds": 9,
        "models": ["seed-cnn", "lenet-5", "mobilenetv2-0.35"]}
QUICK = {"n_train": 128, "batch_size": 64, "rounds": 2, "epoch_rounds": 2,
         "models": ["seed-cnn", "lenet-5"]}
LOAD_CAVEAT = (
    "This 2-core machine is shared with other agents running tests and benchmarks while this "
    "one measures; the load averages before and after are recorded. Ratios within one round "
    "see the same load; read the per-round ranges."
)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pruning_overhead",
                                     description=__doc__.split("\n\n")[0])
    add_standard_options(parser, quick_help="128 training images, 2 rounds, seed CNN and "
                                            "LeNet-5 (a smoke test)", default_out=DEFAULT_OUT)
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="pruning_overhead", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    results = run(data_dir=args.data, seed=args.seed, quick=args.quick)
    return publish(results, out, readme, summary=markdown_summary(results), markers=MARKERS)


def build_model(name):
    """``(uncompiled tf_keras model, input side)`` for one of the benchmark's model names."""
    from kprune import models
    from kprune.engines.tfkeras import loader

    if name == "mobilenetv2-0.35":
        return loader.keras.applications.MobileNetV2(
            input_shape=(32, 32, 1), alpha=0.35, weights=None, classes=10,
            classifier_activation=None), 32
    return models.build(name), 28


def _timed_epoch(model, x, y, batch_size, callbacks, *, time_steps):
    """``(epoch seconds, [seconds of each step] or [])`` of one epoch of ``model.fit``."""
    from kprune.engines.tfkeras import loader

    steps = []

    class StepTimer(loader.keras.callbacks.Callback):  # first in the list: times the others
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            steps.append(time.perf_counter() - self.start)

    timer = [StepTimer()] if time_steps else []
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False,
              callbacks=[*timer, *callbacks])
    return time.perf_counter() - start, steps


def _interleaved(name, fits, x, y, *, batch_size, rounds, warm_up, time_steps):
    """``(epoch seconds, step seconds)`` per fit and round: one epoch of each fit per round,
    each round starting one fit later; a ``warm_up`` round first is not kept."""
    names = list(fits)
    epoch_times = {fit: [] for fit in names}
    step_times = {fit: [] for fit in names}
    for round_ in range(rounds + warm_up):
        shift = round_ % len(names)
        for fit in names[shift:] + names[:shift]:
            model, make_callbacks = fits[fit]
            seconds, step_seconds = _timed_epoch(model, x, y, batch_size, make_callbacks(),
                                                 time_steps=time_steps)
            if round_ >= warm_up:
                epoch_times[fit].append(seconds)
                step_times[fit].append(step_seconds)
        if round_ >= warm_up:
            if time_steps:
                log(f"{name} round {round_ + 1 - warm_up}: median step " + ", ".join(
                    f"{fit} {statistics.median(step_times[fit][-1]) * 1e3:.1f} ms"
                    for fit in names))
            else:
                log(f"{name} epoch round {round_ + 1 - warm_up}: " + ", ".join(
                    f"{fit} {epoch_times[fit][-1]:.2f} s" for fit in names))
    return epoch_times, step_times


def _empty_batch_hook():
    """An empty per-batch callback: what any callback overriding ``on_train_batch_end``
    (as kprune's ScheduleGuard once did) makes Keras do after every step."""
    from kprune.engines.tfkeras import loader

    class BatchHook(loader.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    return BatchHook()


def _ratio(times, over, under):
    """Fit ``over`` against fit ``under``: the median of the per-round ratios (of median steps
    when steps were timed, else of epochs) with their range, the ratio of the pooled median
    steps, of the fastest rounds, and the median of the per-round epoch ratios."""
    epoch_times, step_times = times
    epoch_ratios = [a / b for a, b in zip(epoch_times[over], epoch_times[under])]
    result = {"epoch_ratio": round(statistics.median(epoch_ratios), 3),
              "epoch_ratio_range": [round(min(epoch_ratios), 3), round(max(epoch_ratios), 3)],
              # the fastest epoch of each: the least disturbed by other jobs
              "fastest_epoch_ratio": round(min(epoch_times[over]) / min(epoch_times[under]), 3)}
    if not step_times[over][0]:
        return result
    medians = {fit: [statistics.median(rnd) for rnd in step_times[fit]] for fit in (over, under)}
    per_round = [a / b for a, b in zip(medians[over], medians[under])]
    pooled = {fit: statistics.median([s for rnd in step_times[fit] for s in rnd])
              for fit in (over, under)}
    return {"ratio": round(statistics.median(per_round), 3),
            "ratio_range": [round(min(per_round), 3), round(max(per_round), 3)],
            "pooled_ratio": round(pooled[over] / pooled[under], 3),
            "fastest_round_ratio": round(min(medians[over]) / min(medians[under]), 3),
            **result}


def measure_model(name, x, y, *, batch_size, rounds, epoch_rounds):
    """Interleaved dense / tfmot / kprune epochs of one model (timed per step), then dense,
    dense with an empty per-batch hook and kprune (timed per epoch, no step timer); its part
    of the results."""
    import kprune
    from kprune import models
    from kprune.engines.tfkeras import loader

    model, side = build_model(name)
    if side != x.shape[1]:
        before = (side - x.shape[1]) // 2
        after = side - x.shape[1] - before
        x = np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))
    steps = math.ceil(len(x) / batch_size)
    dense = models.compile_classifier(model)
    # One pruned model serves every pruning fit: its schedule spans all their epochs.
    pruned_fits = 2 * (rounds + 1) + epoch_rounds
    pruned = models.compile_classifier(kprune.apply(
        model, kprune.PruningPlan.default(), steps_per_epoch=steps, epochs=pruned_fits))
    update_step = loader.tfmot.sparsity.keras.UpdatePruningStep
    per_step = _interleaved(name, {"dense": (dense, list),
                                   "tfmot": (pruned, lambda: [update_step()]),
                                   "kprune": (pruned, kprune.callbacks)},
                            x, y, batch_size=batch_size, rounds=rounds, warm_up=1,
                            time_steps=True)
    per_epoch = _interleaved(name, {"dense": (dense, list),
                                    "dense+batch_hook": (dense, lambda: [_empty_batch_hook()]),
                                    "kprune": (pruned, kprune.callbacks)},
                             x, y, batch_size=batch_size, rounds=epoch_rounds, warm_up=0,
                             time_steps=False)
    hooks_ms = _callback_hooks_ms(pruned)
    report = kprune.sparsity_report(kprune.strip(pruned), strict=True)
    epoch_times, step_times = per_step
    return {
        "input_shape": list(x.shape[1:]),
        "params": int(dense.count_params()),
        "steps_per_epoch": steps,
        "pruned_layers": {row.name: row.method for row in report.rows},
        "ms_per_step": {fit: round(statistics.median([s for rnd in rounds_ for s in rnd]) * 1e3,
                                   2) for fit, rounds_ in step_times.items()},
        "ms_per_step_rounds": {fit: [round(statistics.median(rnd) * 1e3, 2) for rnd in rounds_]
                               for fit, rounds_ in step_times.items()},
        "epoch_seconds_rounds": {fit: [round(v, 3) for v in values]
                                 for fit, values in epoch_times.items()},
        "kprune_vs_dense": _ratio(per_step, "kprune", "dense"),
        "tfmot_vs_dense": _ratio(per_step, "tfmot", "dense"),
        "kprune_vs_tfmot": _ratio(per_step, "kprune", "tfmot"),
        "no_step_timer": {
            "epoch_seconds_rounds": {fit: [round(v, 3) for v in values]
                                     for fit, values in per_epoch[0].items()},
            "kprune_vs_dense": _ratio(per_epoch, "kprune", "dense"),
            "batch_hook_vs_dense": _ratio(per_epoch, "dense+batch_hook", "dense"),
        },
        "callback_hooks_ms": hooks_ms,
        "sparsity_ok": report.ok,
    }


def _callback_hooks_ms(pruned, *, repeats=10):
    """Median milliseconds of each per-fit and per-epoch hook of ``kprune.callbacks()`` on
    ``pruned`` (what kprune adds outside the training steps), called directly."""
    import kprune

    update_step, guard, logger = kprune.callbacks()
    for callback in (update_step, guard, logger):
        callback.set_model(pruned)
    hooks = {"UpdatePruningStep.on_train_begin": update_step.on_train_begin,
             "UpdatePruningStep.on_epoch_end": lambda: update_step.on_epoch_end(0),
             "ScheduleGuard.on_train_begin+on_train_end": lambda: (guard.on_train_begin(),
                                                                   guard.on_train_end()),
             "SparsityLogger.on_epoch_end": lambda: logger.on_epoch_end(0, {})}
    result = {}
    for name, hook in hooks.items():
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            hook()
            seconds.append(time.perf_counter() - start)
        result[name] = round(statistics.median(seconds) * 1e3, 2)
    return result


def run(*, data_dir, seed=0, quick=False, settings=None):
    """Measure every model in turn; return the results dict.

    ``settings`` replaces entries of the mode's settings (``FULL`` or ``QUICK``), e.g.
    ``{"models": ["seed-cnn"], "rounds": 1}`` (``benchmarks.records --quick`` does).
    """
    from kprune import data
    from kprune.engines.tfkeras import loader

    cfg = {**(QUICK if quick else FULL), **(settings or {})}
    unknown = set(cfg) - set(FULL)
    if unknown:
        raise ValueError(f"Argument `settings` takes the keys {sorted(FULL)}. Received: "
                         f"settings={settings!r}")
    (x_train, y_train), _ = data.load_mnist(data_dir, verbose=False)
    x, y = x_train[: cfg["n_train"]], y_train[: cfg["n_train"]]
    load_before = os.getloadavg()
    log(f"{len(x):,} images, batch {cfg['batch_size']}, {cfg['rounds']} timed rounds, "
        f"load average {load_before[0]:.2f}")
    warnings.filterwarnings("ignore", category=UserWarning, module="kprune")
    per_model = {}
    for name in cfg["models"]:
        loader.keras.utils.set_random_seed(seed)
        # Each fit is one epoch of the schedule: every fit but the last ends short of the
        # final sparsity on purpose (the strict report checks the end).
        with warnings.catch_warnings():
            from kprune.engines.callbacks import ScheduleWarning

            warnings.simplefilter("ignore", ScheduleWarning)
            per_model[name] = measure_model(name, x, y, batch_size=cfg["batch_size"],
                                            rounds=cfg["rounds"],
                                            epoch_rounds=cfg["epoch_rounds"])
    target_ratio = per_model[TARGET_MODEL]["kprune_vs_dense"]["ratio"]
    return {
        "benchmark": "pruning_overhead",
        "mode": "quick" if quick else "full",
        "seed": seed,
        "settings": dict(cfg, plan="default", fits=list(FITS)),
        "data": {"train": len(x), "source": str(data_dir)},
        "models": per_model,
        "target": {"model": TARGET_MODEL, "fit": "kprune", "max_ratio": TARGET,
                   "ratio": target_ratio, "met": target_ratio <= TARGET},
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
        "caveat": LOAD_CAVEAT,
        **environment(),
        "seconds": round(elapsed(), 1),
    }


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    settings, machine = results["settings"], results["machine"]
    versions = results["versions"]
    lines = [
        f"Measured in **{results['mode']}** mode: {settings['rounds']} interleaved rounds of "
        f"{results['data']['train']:,} MNIST images, batch {settings['batch_size']}, default "
        f"plan, seed {results['seed']}, {results['seconds']:.0f} s; TF {versions['tensorflow']}, "
        f"tf_keras {versions.get('tf_keras')}, tfmot {versions.get('tfmot')}; "
        f"{machine['cpus_usable']} CPUs usable, load average "
        f"{results['load_average']['before'][0]:.2f} before and "
        f"{results['load_average']['after'][0]:.2f} after. {results['caveat']}",
        "",
        "Ratios: median over rounds of the within-round ratio of median steps [range]; beside "
        "them, for kprune / dense, the ratio of pooled median steps and of the fastest rounds.",
        "",
        "| model | ms per step: dense | tfmot only | kprune.callbacks() | kprune / dense "
        "| pooled, fastest | tfmot / dense | kprune / tfmot |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["models"].items():
        ms = row["ms_per_step"]
        cells = [f"{row[key]['ratio']:.2f}x [{row[key]['ratio_range'][0]:.2f}, "
                 f"{row[key]['ratio_range'][1]:.2f}]"
                 for key in ("kprune_vs_dense", "tfmot_vs_dense", "kprune_vs_tfmot")]
        main = row["kprune_vs_dense"]
        cells.insert(1, f"{main['pooled_ratio']:.2f}x, {main['fastest_round_ratio']:.2f}x")
        lines.append(f"| {name} | {ms['dense']:.1f} | {ms['tfmot']:.1f} | {ms['kprune']:.1f} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Whole epochs without the step timer (so without any per-batch hook unless "
              f"named), {settings['epoch_rounds']} more interleaved rounds: median of the per-round "
              "epoch ratios [range], and ratio of the fastest epochs:", "",
              "| model | kprune.callbacks() / dense | fastest epochs | dense with an empty "
              "per-batch hook / dense | fastest epochs |",
              "|---|---:|---:|---:|---:|"]
    for name, row in results["models"].items():
        cells = [f"{r['epoch_ratio']:.2f}x [{r['epoch_ratio_range'][0]:.2f}, "
                 f"{r['epoch_ratio_range'][1]:.2f}] | {r['fastest_epoch_ratio']:.2f}x"
                 for r in (row["no_step_timer"]["kprune_vs_dense"],
                           row["no_step_timer"]["batch_hook_vs_dense"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "kprune's per-fit and per-epoch callback work, called directly (median ms): "
              + "; ".join(f"{name}: " + ", ".join(f"{hook} {ms:.1f}"
                                                   for hook, ms in row["callback_hooks_ms"].items())
                          for name, row in results["models"].items()) + "."]
    target = results["target"]
    lines += ["", f"Target: a pruning step at most {target['max_ratio']:.2f}x a dense one on the "
              f"{target['model']}: {target['ratio']:.2f}x, "
              f"**{'met' if target['met'] else 'missed'}**."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
