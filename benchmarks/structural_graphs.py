"""Structural pruning of functional graphs: ResNet50, MobileNetV2, the seed CNN, a residual CNN.

``kprune.structural.prune(model, fraction)`` removes ``fraction`` of the channels of a
Sequential or functional model (residual ``Add``s, depthwise convolutions and batch norms
kept consistent) and returns a smaller dense model. One run measures what that buys on
this CPU:

- ResNet50 at 64x64x3 and MobileNetV2 at 96x96x3 (``tf_keras.applications``,
  ``weights=None``, 10 classes; random weights, seeded), and the seed CNN and a small
  residual CNN trained on MNIST: parameters, MACs (``kprune.measure.count_macs``) and
  LiteRT float latency at batch 1 with one thread and with every usable thread, with 0,
  25, 50 and 75 % of the channels removed globally (``scope="global"``: each group's
  scores divided by its mean, one threshold), 50 % of the channels' MAC-weighted total
  removed globally (``cost="macs"``: a filter weighs the multiply-accumulates it takes
  part in, so the budget goes where the compute is) and 50 % removed from every group
  alike (``scope="layer"``);
- the seed CNN and the residual CNN (three residual blocks with ``Add``, batch norm and
  projection shortcuts where the shape changes): the dense model trained ``dense``
  epochs is pruned and fine-tuned ``tune`` epochs; the dense baseline trains ``tune``
  more epochs too, so that every model has trained as long. Test accuracy in LiteRT.

Latency comes from ``kprune.measure.latency_rounds``: every file of one model timed once
per round, the order rotated, so that a noisy spell on this shared machine hits all
files alike; a speed-up is the median over rounds of the within-round ratio to the dense
file of the same model, with its range.

Targets: with 50 % of the channels removed globally, ResNet50 and MobileNetV2 keep at
most 40 % of their parameters and run at least 2x faster; the seed CNN runs at least 3x
faster and loses at most 0.3 percentage points of test accuracy.

    python -m benchmarks.structural_graphs            # full MNIST (15.5 min on 2 shared cores)
    python -m benchmarks.structural_graphs --quick    # 2,000 images, small models (~1 min)

Writes the results JSON (``--out``; default ``benchmarks/results/structural_graphs.json``),
the .tflite files (``--work``; default ``runs/structural_graphs``), and in full mode the
tables into ``benchmarks/README.md`` between the ``structural_graphs`` markers.
"""

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks._common import (
    REPO,
    add_standard_options,
    elapsed,
    environment,
    log,
    output_paths,
    publish,
    speedup,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "structural_graphs.json"
BEGIN = "<!-- structural_graphs:begin -->"
END = "<!-- structural_graphs:end -->"

BATCH_SIZE = 128
#: (row name, fraction removed, scope, cost), the dense row first. cost None counts
#: channels; "macs" weighs each channel by the multiply-accumulates it takes part in.
ROWS = [("dense", 0.0, None, None), ("global-25", 0.25, "global", None),
        ("global-50", 0.5, "global", None), ("global-75", 0.75, "global", None),
        ("global-50-macs", 0.5, "global", "macs"), ("layer-50", 0.5, "layer", None)]
QUICK_ROWS = ["dense", "global-50", "global-50-macs", "layer-50"]
#: --quick: the application model's rows. Each of its .tflite conversions takes ~25 s (its
#: ~150 layers), so the quick run converts the dense and the 50 % global one only; the other
#: scopes' graphs are the same kinds of layers, and the trained models run every quick row.
QUICK_APPLICATION_ROWS = ["dense", "global-50"]
#: Models from tf_keras.applications, random weights: (builder, input shape, options).
APPLICATIONS = {"resnet50": ("ResNet50", (64, 64, 3), {}),
                "mobilenetv2": ("MobileNetV2", (96, 96, 3), {})}
#: --quick: one small application model, so that the run stays near a minute.
QUICK_APPLICATIONS = {"mobilenetv2-0.35": ("MobileNetV2", (32, 32, 3), {"alpha": 0.35})}
TRAINED = ("seed-cnn", "residual-cnn")  # trained on MNIST, accuracy measured
TARGETS = {
    "resnet50": {"row": "global-50", "params_kept_max": 0.40, "x_faster_min": 2.0},
    "mobilenetv2": {"row": "global-50", "params_kept_max": 0.40, "x_faster_min": 2.0},
    "seed-cnn": {"row": "global-50", "x_faster_min": 3.0, "delta_pp_min": -0.3},
}
#: Epochs per trained model: (dense, tune); in the full run an epoch took ~20 s for the
#: seed CNN, ~8 s for the residual CNN (2 cores).
FULL = dict(n_train=None, n_test=None, epochs={"seed-cnn": (2, 1), "residual-cnn": (5, 2)},
            rounds=9, repeats=100, warmup=10)
QUICK = dict(n_train=2000, n_test=500, epochs={"seed-cnn": (1, 1), "residual-cnn": (1, 1)},
             rounds=2, repeats=5, warmup=2)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.structural_graphs",
        description="Structural pruning of ResNet50, MobileNetV2, the seed CNN and a "
                    "residual CNN: parameters, MACs, LiteRT latency and accuracy.",
    )
    add_standard_options(parser, quick_help="2,000 training images, one small MobileNetV2, "
                         "dense / 50 %% rows only (the MobileNetV2: dense and 50 %% global); "
                         "a smoke test", default_out=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "structural_graphs",
                        help="folder for the .tflite files")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="structural_graphs", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    results = run(data_dir=args.data, work=args.work, seed=args.seed, quick=args.quick)
    return publish(results, out, readme, summary=markdown_summary(results),
                   markers=(BEGIN, END))


def residual_cnn(input_shape=(28, 28, 1), num_classes=10):
    """A small ResNet for MNIST: a stride-2 stem, three residual blocks, a Dense head.

    Block 1 (16 channels) adds its input back unchanged, so its convolutions share their
    output channels with the stem; blocks 2 and 3 (32, 64 channels, stride 2) add a 1x1
    projection of their input. Every convolution is followed by batch norm.
    """
    from kprune.engines.tfkeras import loader

    layers = loader.keras.layers

    def conv_bn(x, filters, kernel, stride, name):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
        return layers.BatchNormalization(name=f"{name}_bn")(x)

    inputs = loader.keras.Input(input_shape)
    x = layers.ReLU(name="stem_relu")(conv_bn(inputs, 16, 3, 2, "stem"))
    for index, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        name = f"block{index}"
        y = layers.ReLU(name=f"{name}_relu1")(conv_bn(x, filters, 3, stride, f"{name}_1"))
        y = conv_bn(y, filters, 3, 1, f"{name}_2")
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = conv_bn(x, filters, 1, stride, f"{name}_proj")
        x = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="head")(x)
    return loader.keras.Model(inputs, outputs, name="residual_cnn")


def run(*, data_dir, work, seed=0, quick=False):
    """Build, train, prune, export, measure; return the results dict."""
    from kprune import copy_model, data, measure, models, structural
    from kprune.engines.tfkeras import loader
    from kprune.methods.trainer import compile_classifier

    cfg = QUICK if quick else FULL
    rows = [row for row in ROWS if not quick or row[0] in QUICK_ROWS]
    applications = QUICK_APPLICATIONS if quick else APPLICATIONS
    rows_of = dict.fromkeys(TRAINED, rows)  # model name -> its rows
    rows_of.update(dict.fromkeys(applications, [
        row for row in rows if not quick or row[0] in QUICK_APPLICATION_ROWS]))
    keras = loader.keras
    threads_all = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    (x_train, y_train), (x_test, y_test) = data.load_mnist(data_dir, verbose=False)
    x_train, y_train = x_train[: cfg["n_train"]], y_train[: cfg["n_train"]]
    x_test, y_test = x_test[: cfg["n_test"]], y_test[: cfg["n_test"]]
    log(f"MNIST: {len(x_train):,} train / {len(x_test):,} test")

    def fit(model, epochs):
        compile_classifier(model)
        model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
        return model

    built = {}  # model name -> {row name: keras model}
    notes = {}
    for name in TRAINED:
        keras.utils.set_random_seed(seed)
        trained = models.build("seed-cnn") if name == "seed-cnn" else residual_cnn()
        dense_epochs, tune_epochs = cfg["epochs"][name]
        log(f"{name}: dense, {dense_epochs} epoch(s)")
        fit(trained, dense_epochs)
        built[name] = {}
        for row, fraction, scope, cost in rows_of[name]:
            log(f"{name}/{row}: {tune_epochs} more epoch(s)")
            model = (copy_model(trained) if scope is None
                     else structural.prune(trained, fraction, scope=scope, cost=cost))
            built[name][row] = fit(model, tune_epochs)
        notes[name] = (f"trained on MNIST: dense {dense_epochs} epoch(s), then each row "
                       f"(the dense one too) {tune_epochs} more")
    for name, (builder, shape, options) in applications.items():
        keras.utils.set_random_seed(seed)
        dense = getattr(keras.applications, builder)(weights=None, input_shape=shape,
                                                     classes=10, **options)
        log(f"{name}: {dense.count_params():,} parameters, pruning")
        built[name] = {row: dense if scope is None else structural.prune(
                           dense, fraction, scope=scope, cost=cost)
                       for row, fraction, scope, cost in rows_of[name]}
        notes[name] = f"tf_keras.applications.{builder}(weights=None), random weights"

    work = Path(work)
    results_models = {}
    for name, variants in built.items():
        dense = variants["dense"]
        files, table = {}, []
        for row, fraction, scope, cost in rows_of[name]:
            model = variants[row]
            path = work / name / f"{row}.tflite"
            log(f"{name}/{row}: export")
            export_float(model, path)
            files[row] = path
            params, macs = model.count_params(), measure.count_macs(model)
            entry = {"row": row, "fraction": fraction, "scope": scope, "cost": cost,
                     "params": params,
                     "params_kept": params / dense.count_params(), "macs": macs,
                     "macs_kept": macs / measure.count_macs(dense),
                     "bytes": path.stat().st_size,
                     "channels": _channels(model)}
            if name in TRAINED:
                entry["accuracy"] = measure.evaluate_tflite(path, x_test, y_test)
            table.append(entry)
        if name in TRAINED:
            base = table[0]["accuracy"]
            for entry in table:
                entry["delta_pp"] = 100 * (entry["accuracy"] - base)
        latency = {}
        for threads in sorted({1, threads_all}):
            log(f"{name}: latency, {threads} thread(s), {cfg['rounds']} rounds of "
                f"{cfg['repeats']} runs per file")
            latency[str(threads)] = measure.latency_rounds(
                files, baseline="dense", rounds=cfg["rounds"], repeats=cfg["repeats"],
                warmup=cfg["warmup"], threads=threads, seed=seed)
        for entry in table:
            entry["latency"] = {
                key: {k: timing["files"][entry["row"]][k]
                      for k in ("median_ms", "x_faster", "x_faster_range", "kernels")}
                for key, timing in latency.items()}
        results_models[name] = {"weights": notes[name],
                                "input_shape": list(dense.input_shape[1:]),
                                "rows": table, "latency": latency}
    return {
        "benchmark": "structural_graphs",
        "mode": "quick" if quick else "full",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "repeats": 1,
        **environment(),
        "runtime": measure.runtime_name(),
        "data": {"train": len(x_train), "test": len(x_test), "source": str(data_dir)},
        "settings": dict(cfg, batch_size=BATCH_SIZE, criterion="l1",
                         rows=[{"row": r, "fraction": f, "scope": s, "cost": c}
                               for r, f, s, c in rows],
                         threads=sorted({1, threads_all})),
        "models": results_models,
        "targets": check_targets(results_models, threads_all),
        "seconds": round(elapsed(), 1),
    }


def export_float(model, path):
    """The float .tflite of ``model`` at ``path``."""
    from kprune import export

    return export.to_tflite(model, path)


def _channels(model):
    """``{layer: output channels}`` of the convolutions and dense layers of ``model``."""
    out = {}
    for layer in model.layers:
        units = getattr(layer, "filters", None) or getattr(layer, "units", None)
        if units is None and hasattr(layer, "depth_multiplier") and layer.built:
            units = int(layer.output_shape[-1])
        if units is not None:
            out[layer.name] = int(units)
    return out


def check_targets(models, threads_all):
    """One dict per target row: what was asked, what was measured, whether it was met."""
    checks = []
    for name, target in TARGETS.items():
        if name not in models:
            continue
        for entry in models[name]["rows"]:
            if entry["fraction"] != 0.5:
                continue  # the target's row, and the rows of the same fraction beside it
            got = {"params_kept": entry["params_kept"],
                   **{f"x_faster_{key}t": timing["x_faster"]
                      for key, timing in entry["latency"].items()}}
            met = all(timing["x_faster"] >= target["x_faster_min"]
                      for timing in entry["latency"].values())
            if "params_kept_max" in target:
                met = met and entry["params_kept"] <= target["params_kept_max"]
            if "delta_pp_min" in target:
                got["delta_pp"] = entry["delta_pp"]
                met = met and entry["delta_pp"] >= target["delta_pp_min"] - 1e-9
            checks.append({"model": name, "row": entry["row"],
                           "target_row": entry["row"] == target["row"],
                           "target": {k: v for k, v in target.items() if k != "row"},
                           "measured": got, "met": bool(met)})
    return checks


# -- report -----------------------------------------------------------------------


def _speed(timing):
    return f"{timing['median_ms']:.3f} | {speedup(timing)}"


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    env, mach, data = results["versions"], results["machine"], results["data"]
    cfg = results["settings"]
    threads = cfg["threads"]
    lines = [
        f"Measured {results['date']} in **{results['mode']}** mode: {data['train']:,} train / "
        f"{data['test']:,} test MNIST images, seed {results['seed']}, one run, "
        f"{results['seconds'] / 60:.1f} min in all, {results['runtime']}. Latency: batch 1, "
        f"float, {cfg['rounds']} interleaved rounds of {cfg['repeats']} runs per file "
        f"(after {cfg['warmup']} warm-up runs); ms is the median of the round medians, x "
        "faster the median [min, max] of the within-round ratios to the model's dense file. "
        f"TF {env['tensorflow']}, tf_keras {env['tf_keras']}, LiteRT {env.get('litert')}, "
        f"Python {env['python']}; {mach['platform']}, {mach.get('cpu_model', '?')}, "
        f"{mach['cpus_usable']} usable CPU(s).",
        "",
        "| model | channels removed | params | kept | MACs | kept | "
        + " | ".join(f"{t} thread{'s' if t > 1 else ''}: ms | x faster" for t in threads)
        + " | LiteRT acc. % | Δ pp |",
        "|---|---|---:|---:|---:|---:|" + "---:|---:|" * len(threads) + "---:|---:|",
    ]
    for name, model in results["models"].items():
        for entry in model["rows"]:
            removed = ("none (dense)" if entry["scope"] is None else
                       f"{100 * entry['fraction']:.0f} % {entry['scope']}"
                       + (f", weighted by {entry['cost']}" if entry.get("cost") else ""))
            acc = ("–", "–") if "accuracy" not in entry else (
                f"{100 * entry['accuracy']:.2f}", f"{entry['delta_pp']:+.2f}")
            lines.append(
                f"| {name} | {removed} | {entry['params']:,} | {entry['params_kept']:.3f} | "
                f"{entry['macs']:,} | {entry['macs_kept']:.3f} | "
                + " | ".join(_speed(entry["latency"][str(t)]) for t in threads)
                + f" | {acc[0]} | {acc[1]} |")
    lines += ["", "Models: " + "; ".join(
        f"{name} {tuple(m['input_shape'])}: {m['weights']}"
        for name, m in results["models"].items()) + ".", "",
        "| target | row | asked | measured | met |", "|---|---|---|---|:---:|"]
    for check in results["targets"]:
        asked = ", ".join(_asked(k, v) for k, v in check["target"].items())
        got = ", ".join(_measured(k, v) for k, v in check["measured"].items())
        row = check["row"] + ("" if check["target_row"] else " (beside it)")
        lines.append(f"| {check['model']} | {row} | {asked} | {got} | "
                     f"{'**yes**' if check['met'] else 'no'} |")
    return "\n".join(lines)


def _asked(key, value):
    return {"params_kept_max": f"params kept <= {value:.2f}",
            "x_faster_min": f">= {value:.0f}x faster (every thread count)",
            "delta_pp_min": f"Δ acc. >= {value:+.1f} pp"}[key]


def _measured(key, value):
    if key == "params_kept":
        return f"params kept {value:.3f}"
    if key == "delta_pp":
        return f"Δ acc. {value:+.2f} pp"
    threads = key[len("x_faster_"):-1]
    return f"{value:.2f}x ({threads} thread{'s' if threads != '1' else ''})"


if __name__ == "__main__":
    sys.exit(main())
