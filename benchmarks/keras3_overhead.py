"""What pruning costs per training step on Keras 3: a kprune-pruned fit against a dense fit.

Two models (``--model``). The seed CNN (``seed_cnn``, the default; Keras 3, built with
``kprune.models.seed_cnn(keras=keras)``) on MNIST, pruned with the default plan (first conv
unstructured on a cubic schedule, conv2 and fc1 2:4, head dense). A GPT-2 classifier
(``gpt2``): a ``keras_hub.models.GPT2Backbone`` with random weights (4 blocks, hidden 128,
feed-forward 512, 4 heads, sequences of 64 tokens, a vocabulary of 1,000; nothing
downloaded), mean pooling and a 3-class softmax head, trained on random token ids (the
class is the first token modulo 3); the default plan prunes the two feed-forward ``Dense``
of every block 2:4, through one wrapper per block (the layers inside a custom layer).

Each model is trained dense and, from the same weights, pruned through ``kprune.apply``
and ``kprune.callbacks()``. Epochs of the two alternate (dense, pruned, dense, ...) so
that both see the same machine load; the first epoch of each (tracing and compilation) is
not timed. Each training step is timed from the start of its first callback to the end of
its last (the pruning callbacks' work, mask updates included, is inside). Reported: the
median step time of each over all timed steps, their ratio pruned / dense, the range of the
per-round ratios of median step times, the ratio of median epoch times, and the load
average before and after. Medians of steps resist the bursts of load of a shared machine,
which whole epochs do not. Target: at most 1.10x (the tf_keras engine on tfmot once
measured 1.33x a dense epoch).

    python -m benchmarks.keras3_overhead                         # TensorFlow backend
    KERAS_BACKEND=jax python -m benchmarks.keras3_overhead       # JAX backend
    python -m benchmarks.keras3_overhead --model gpt2            # the GPT-2 classifier
    python -m benchmarks.keras3_overhead --quick                 # 256 images, 2 rounds
    python -m benchmarks.keras3_overhead --model gpt2 --quick    # a tiny GPT-2, 2 rounds

Writes a results JSON (``--out``; default ``benchmarks/results/keras3_overhead.json`` for
the seed CNN, ``keras3_overhead_gpt2.json`` for GPT-2, with ``_<backend>`` added on
backends other than TensorFlow) with versions, machine, load average, backend, seed and
settings, and in full mode the table into ``benchmarks/README.md`` between the markers of
the model and backend.
"""

import argparse
import math
import os
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
MODELS = ("seed_cnn", "gpt2")
FULL = {"n_train": 6000, "batch_size": 64, "rounds": 5}
QUICK = {"n_train": 256, "batch_size": 64, "rounds": 2}
# GPT-2: the backbone's sizes and the data's (random token ids). Short epochs (16 steps of
# ~0.3-0.5 s on 2 cores), many rounds: the load of a shared machine changes within a minute,
# and a first run with 5 rounds of 32 steps gave per-round ratios from 0.57x to 1.95x.
GPT2_FULL = {"n_train": 512, "batch_size": 32, "rounds": 10, "num_layers": 4, "num_heads": 4,
             "hidden_dim": 128, "intermediate_dim": 512, "sequence_length": 64,
             "vocabulary_size": 1000, "classes": 3}
GPT2_QUICK = {"n_train": 64, "batch_size": 16, "rounds": 2, "num_layers": 2, "num_heads": 2,
              "hidden_dim": 16, "intermediate_dim": 32, "sequence_length": 8,
              "vocabulary_size": 50, "classes": 3}


def _backend():
    from kprune.engines.keras3 import helpers

    return helpers.backend()


def _name(model):
    """``keras3_overhead`` for the seed CNN, ``keras3_overhead_<model>`` for another."""
    return "keras3_overhead" if model == "seed_cnn" else f"keras3_overhead_{model}"


def default_out(model="seed_cnn"):
    backend = _backend()
    suffix = "" if backend == "tensorflow" else f"_{backend}"
    return RESULTS / f"{_name(model)}{suffix}.json"


def markers(model="seed_cnn"):
    key = f"{_name(model)}_{_backend()}"
    return (f"<!-- {key}:begin -->", f"<!-- {key}:end -->")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keras3_overhead",
                                     description=__doc__.split("\n\n")[0])
    add_standard_options(parser, quick_help="256 training images (gpt2: 64 sequences of a tiny "
                                            "GPT-2), 2 rounds (a smoke test)",
                         default_out=default_out())
    parser.add_argument("--model", choices=MODELS, default="seed_cnn",
                        help="seed_cnn (MNIST, the default) or gpt2 (a GPT-2 classifier from "
                             "keras_hub, random weights and token ids; --data unused)")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing for the seed CNN)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name=_name(args.model), default_out=default_out(args.model),
                         needs_data=args.model == "seed_cnn")
    if paths is None:
        return 2
    out, readme = paths
    results = run(data_dir=args.data, seed=args.seed, quick=args.quick, model=args.model)
    return publish(results, out, readme, summary=markdown_summary(results),
                   markers=markers(args.model))


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


def gpt2_classifier(keras, cfg):
    """A functional classifier around a ``keras_hub.models.GPT2Backbone`` of ``cfg``'s sizes
    (random weights): token ids and padding mask in, the backbone, mean pooling, a softmax
    ``head`` (as ``tests/keras3_hub.py`` builds it, larger)."""
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=cfg["vocabulary_size"], num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"], hidden_dim=cfg["hidden_dim"],
        intermediate_dim=cfg["intermediate_dim"], max_sequence_length=cfg["sequence_length"])
    inputs = {name: keras.Input((cfg["sequence_length"],), dtype="int32", name=name)
              for name in backbone.input}
    sequence = backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(sequence)
    outputs = keras.layers.Dense(cfg["classes"], activation="softmax", name="head")(pooled)
    return keras.Model(inputs, outputs, name="gpt2_classifier")


def gpt2_data(cfg, seed):
    """``(x, y)``: random token ids with full padding masks; the class is the first token
    modulo ``classes`` (a rule the model can learn)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (cfg["n_train"], cfg["sequence_length"])
    tokens = rng.integers(0, cfg["vocabulary_size"], shape).astype("int32")
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    return x, (tokens[:, 0] % cfg["classes"]).astype("int32")


def _loadavg():
    """The 1, 5 and 15-minute load averages, rounded (None where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run(*, data_dir, seed=0, quick=False, model="seed_cnn"):
    """Train the two models in interleaved epochs; return the results dict."""
    import kprune
    from kprune import data, models
    from kprune.engines.callbacks import ScheduleWarning
    from kprune.engines.keras3 import helpers

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}. Received: model={model!r}")
    keras = helpers.keras
    load_before = _loadavg()
    if model == "gpt2":
        cfg = GPT2_QUICK if quick else GPT2_FULL
        x, y = gpt2_data(cfg, seed)
        n_train, what, source = len(y), "sequences", "random token ids"
    else:
        cfg = QUICK if quick else FULL
        (x_train, y_train), _ = data.load_mnist(data_dir, verbose=False)
        x, y = x_train[: cfg["n_train"]], y_train[: cfg["n_train"]]
        n_train, what, source = len(x), "images", str(data_dir)
    steps = math.ceil(n_train / cfg["batch_size"])
    epochs = cfg["rounds"] + 1  # one untimed warm-up epoch each
    log(f"Keras {keras.__version__} on {_backend()}, {model}: {n_train:,} {what}, "
        f"{steps} steps/epoch, {cfg['rounds']} timed rounds; load average {load_before}")
    keras.utils.set_random_seed(seed)

    logits = model == "seed_cnn"  # the seed CNN ends in logits, the GPT-2 head in softmax

    def compiled(net):
        net.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
                    metrics=["accuracy"])
        return net

    built = gpt2_classifier(keras, cfg) if model == "gpt2" else models.seed_cnn(keras=keras)
    dense = compiled(built)
    pruned = compiled(kprune.apply(dense, kprune.PruningPlan.default(),
                                   steps_per_epoch=steps, epochs=epochs))
    pruned_rows = [row.name for row in pruned._kprune_plan.pruned]
    callbacks = kprune.callbacks(pruned)
    epoch_times = {"dense": [], "pruned": []}
    step_times = {"dense": [], "pruned": []}  # per round: each step's seconds
    round_loads = []
    # Each fit is one epoch of the schedule's `epochs`: every fit but the last ends short
    # of the final sparsity on purpose (the strict report below checks the end).
    warnings.filterwarnings("ignore", category=ScheduleWarning)
    for epoch in range(epochs):
        for name, net, extra in (("dense", dense, []), ("pruned", pruned, callbacks)):
            seconds, step_seconds = _timed_epoch(keras, net, x, y, cfg["batch_size"], extra)
            if epoch:
                epoch_times[name].append(seconds)
                step_times[name].append(step_seconds)
        if epoch:
            round_loads.append((_loadavg() or [None])[0])
            log("round {}: median step dense {:.1f} ms, pruned {:.1f} ms (load {})".format(
                epoch, *(statistics.median(step_times[n][-1]) * 1e3 for n in step_times),
                round_loads[-1]))
    report = kprune.sparsity_report(kprune.strip(pruned), strict=True)
    per_step = {name: statistics.median([s for rnd in rounds for s in rnd]) * 1e3
                for name, rounds in step_times.items()}
    ratio = per_step["pruned"] / per_step["dense"]
    ratios = [statistics.median(p) / statistics.median(d)
              for p, d in zip(step_times["pruned"], step_times["dense"])]
    settings = dict(cfg, steps_per_epoch=steps, model=model, plan="default")
    if model == "gpt2":
        settings["params"] = int(dense.count_params())
    return {
        "benchmark": _name(model),
        "mode": "quick" if quick else "full",
        "seed": seed,
        "backend": _backend(),
        "settings": settings,
        "data": {"train": n_train, "source": source},
        "pruned_layers": pruned_rows,
        "ms_per_step": {name: round(value, 2) for name, value in per_step.items()},
        "ms_per_step_rounds": {name: [round(statistics.median(rnd) * 1e3, 2) for rnd in rounds]
                               for name, rounds in step_times.items()},
        "epoch_seconds_rounds": {name: [round(v, 3) for v in values]
                                 for name, values in epoch_times.items()},
        "ratio": round(ratio, 3),
        "ratio_rounds": [round(r, 3) for r in ratios],
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "epoch_ratio": round(statistics.median(epoch_times["pruned"])
                             / statistics.median(epoch_times["dense"]), 3),
        "target": TARGET,
        "met": ratio <= TARGET,
        "sparsity_ok": report.ok,
        "load_average": {"before": load_before, "rounds_1min": round_loads,
                         "after": _loadavg()},
        **_environment(keras),
        "seconds": round(elapsed(), 1),
    }


def _environment(keras):
    """kprune's versions and machine, with Keras 3 (and JAX, if installed) added."""
    from importlib import metadata

    env = environment()
    env["versions"]["keras"] = keras.__version__
    for package in ("jax", "keras-hub"):
        try:
            env["versions"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env["versions"][package] = None
    return env


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    dense, pruned = results["ms_per_step"]["dense"], results["ms_per_step"]["pruned"]
    low, high = results["ratio_range"]
    machine, settings = results["machine"], results["settings"]
    if settings["model"] == "gpt2":
        model = (f"GPT-2 classifier (keras_hub GPT2Backbone, random weights: "
                 f"{settings['num_layers']} blocks, hidden {settings['hidden_dim']}, "
                 f"feed-forward {settings['intermediate_dim']}; 2:4 on the "
                 f"{len(results['pruned_layers'])} feed-forward Dense)")
        data = f"{results['data']['train']:,} random sequences of {settings['sequence_length']}"
    else:
        model, data = "seed CNN", f"{results['data']['train']:,} images"
    load = results.get("load_average") or {}
    loads = ""
    if load.get("before") and load.get("after"):
        loads = f", load average {load['before'][0]:.1f} before, {load['after'][0]:.1f} after"
    return "\n".join([
        f"Keras 3 pruning overhead, {model}, {results['backend']} backend "
        f"({settings['rounds']} interleaved rounds of {data}, "
        f"batch {settings['batch_size']}, {machine['cpus_usable']} CPUs usable{loads}):",
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
