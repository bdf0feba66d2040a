"""What pruning costs per training step on Keras 3: a kprune-pruned fit against a dense fit.

The seed CNN (Keras 3, built with ``kprune.models.seed_cnn(keras=keras)``) is trained
dense and, from the same weights, pruned with the default plan (first conv unstructured
on a cubic schedule, conv2 and fc1 2:4, head dense) through ``kprune.apply`` and
``kprune.callbacks()``. Epochs of the two alternate (dense, pruned, dense, ...) so
that both see the same machine load; the first epoch of each (tracing and compilation) is
not timed. Each training step is timed from the start of its first callback to the end of
its last (the pruning callbacks' work, mask updates included, is inside). Reported: the
median step time of each over all timed steps, their ratio pruned / dense, the range of the
per-round ratios of median step times, and the ratio of median epoch times. Medians of
steps resist the bursts of load of a shared machine, which whole epochs do not. Target: at
most 1.10x (the tf_keras engine on tfmot once measured 1.33x a dense epoch).

    python -m benchmarks.keras3_overhead                         # TensorFlow backend
    KERAS_BACKEND=jax python -m benchmarks.keras3_overhead       # JAX backend
    python -m benchmarks.keras3_overhead --quick                 # 256 images, 2 rounds

Writes a results JSON (``--out``; default ``benchmarks/results/keras3_overhead.json``,
``keras3_overhead_<backend>.json`` on other backends) with versions, machine, backend,
seed and settings, and in full mode the table into ``benchmarks/README.md`` between
the ``keras3_overhead`` markers of the backend.
"""

import argparse
import math
import statistics
import sys
import time
import warnings

from benchmarks._common import (
    REPO,
    add_standard_options,
    elapsed,
    environment,
    log,
    output_paths,
    publish,
)

RESULTS = REPO / "benchmarks" / "results"
TARGET = 1.10
FULL = {"n_train": 6000, "batch_size": 64, "rounds": 5}
QUICK = {"n_train": 256, "batch_size": 64, "rounds": 2}


def _backend():
    from kprune import _keras3

    return _keras3.backend()


def default_out():
    backend = _backend()
    suffix = "" if backend == "tensorflow" else f"_{backend}"
    return RESULTS / f"keras3_overhead{suffix}.json"


def markers():
    backend = _backend()
    return (f"<!-- keras3_overhead_{backend}:begin -->", f"<!-- keras3_overhead_{backend}:end -->")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keras3_overhead",
                                     description=__doc__.split("\n\n")[0])
    add_standard_options(parser, quick_help="256 training images, 2 rounds (a smoke test)",
                         default_out=default_out())
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="keras3_overhead", default_out=default_out())
    if paths is None:
        return 2
    out, readme = paths
    results = run(data_dir=args.data, seed=args.seed, quick=args.quick)
    return publish(results, out, readme, summary=markdown_summary(results), markers=markers())


def _timed_epoch(keras, model, x, y, batch_size, callbacks):
    """``(epoch seconds, [seconds of each step])`` of one epoch of ``model.fit``."""
    steps = []

    class StepTimer(keras.callbacks.Callback):  # first in the list: times the others too
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            steps.append(time.perf_counter() - self.start)

    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False,
              callbacks=[StepTimer(), *callbacks])
    return time.perf_counter() - start, steps


def run(*, data_dir, seed=0, quick=False):
    """Train the two models in interleaved epochs; return the results dict."""
    import kprune
    from kprune import _keras3, data, models
    from kprune.engines.callbacks import ScheduleWarning

    keras = _keras3.keras
    cfg = QUICK if quick else FULL
    (x_train, y_train), _ = data.load_mnist(data_dir, verbose=False)
    x, y = x_train[: cfg["n_train"]], y_train[: cfg["n_train"]]
    steps = math.ceil(len(x) / cfg["batch_size"])
    epochs = cfg["rounds"] + 1  # one untimed warm-up epoch each
    log(f"Keras {keras.__version__} on {_backend()}: {len(x):,} images, {steps} steps/epoch, "
        f"{cfg['rounds']} timed rounds")
    keras.utils.set_random_seed(seed)

    def compiled(model):
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    dense = compiled(models.seed_cnn(keras=keras))
    pruned = compiled(kprune.apply(dense, kprune.PruningPlan.default(),
                                   steps_per_epoch=steps, epochs=epochs))
    callbacks = kprune.callbacks(pruned)
    epoch_times = {"dense": [], "pruned": []}
    step_times = {"dense": [], "pruned": []}  # per round: each step's seconds
    # Each fit is one epoch of the schedule's `epochs`: every fit but the last ends short
    # of the final sparsity on purpose (the strict report below checks the end).
    warnings.filterwarnings("ignore", category=ScheduleWarning)
    for epoch in range(epochs):
        for name, model, extra in (("dense", dense, []), ("pruned", pruned, callbacks)):
            seconds, step_seconds = _timed_epoch(keras, model, x, y, cfg["batch_size"], extra)
            if epoch:
                epoch_times[name].append(seconds)
                step_times[name].append(step_seconds)
        if epoch:
            log("round {}: median step dense {:.1f} ms, pruned {:.1f} ms".format(
                epoch, *(statistics.median(step_times[n][-1]) * 1e3 for n in step_times)))
    report = kprune.sparsity_report(kprune.strip(pruned), strict=True)
    per_step = {name: statistics.median([s for rnd in rounds for s in rnd]) * 1e3
                for name, rounds in step_times.items()}
    ratio = per_step["pruned"] / per_step["dense"]
    ratios = [statistics.median(p) / statistics.median(d)
              for p, d in zip(step_times["pruned"], step_times["dense"])]
    return {
        "benchmark": "keras3_overhead",
        "mode": "quick" if quick else "full",
        "seed": seed,
        "backend": _backend(),
        "settings": dict(cfg, steps_per_epoch=steps, model="seed_cnn", plan="default"),
        "data": {"train": len(x), "source": str(data_dir)},
        "ms_per_step": {name: round(value, 2) for name, value in per_step.items()},
        "ms_per_step_rounds": {name: [round(statistics.median(rnd) * 1e3, 2) for rnd in rounds]
                               for name, rounds in step_times.items()},
        "epoch_seconds_rounds": {name: [round(v, 3) for v in values]
                                 for name, values in epoch_times.items()},
        "ratio": round(ratio, 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "epoch_ratio": round(statistics.median(epoch_times["pruned"])
                             / statistics.median(epoch_times["dense"]), 3),
        "target": TARGET,
        "met": ratio <= TARGET,
        "sparsity_ok": report.ok,
        **_environment(keras),
        "seconds": round(elapsed(), 1),
    }


def _environment(keras):
    """kprune's versions and machine, with Keras 3 (and JAX, if installed) added."""
    from importlib import metadata

    env = environment()
    env["versions"]["keras"] = keras.__version__
    try:
        env["versions"]["jax"] = metadata.version("jax")
    except metadata.PackageNotFoundError:
        env["versions"]["jax"] = None
    return env


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    dense, pruned = results["ms_per_step"]["dense"], results["ms_per_step"]["pruned"]
    low, high = results["ratio_range"]
    machine = results["machine"]
    return "\n".join([
        f"Keras 3 pruning overhead, seed CNN, {results['backend']} backend "
        f"({results['settings']['rounds']} interleaved rounds of {results['data']['train']:,} "
        f"images, batch {results['settings']['batch_size']}, "
        f"{machine['cpus_usable']} CPUs usable):",
        "",
        "| fit | ms per step (median) |",
        "|---|---|",
        f"| dense | {dense:.1f} |",
        f"| kprune Keras 3 engine, default plan | {pruned:.1f} |",
        "",
        f"Pruned / dense, median step: **{results['ratio']:.2f}x** (per-round range "
        f"{low:.2f}-{high:.2f}x; target <= {results['target']:.2f}x: "
        f"{'met' if results['met'] else 'missed'}); median epoch: "
        f"{results['epoch_ratio']:.2f}x.",
    ])


if __name__ == "__main__":
    sys.exit(main())
