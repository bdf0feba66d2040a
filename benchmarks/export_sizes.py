"""How much smaller does pruning make a .tflite, raw and gzipped, at what accuracy?

The seed CNN on MNIST (``../shared/data/mnist``): a dense baseline, then the default plan
(2:4), the default plan at 1:4 and a high-compression plan (fc1 95 % unstructured),
each fine-tuned from the baseline, stripped, and exported as float, sparse, int8 and
sparse + int8; all measured by ``kprune.report.compare`` against the dense float
``.tflite`` (accuracy, bytes raw and gzipped). Latency (batch 1, one thread) is measured
by ``kprune.measure.latency_rounds`` in interleaved rounds (every file once per round,
the order rotated): the speed-up is the median of the within-round ratios to the dense
float file, quoted with its range. tfmot's own ``pruning_with_keras`` tutorial pipeline
runs in the same process as the reference, its files timed against its own dense file.

Usage:
    python -m benchmarks.export_sizes            # full MNIST, ~20-30 min on 2 cores
    python -m benchmarks.export_sizes --quick    # 2,000 images, 1 epoch, ~1-2 min

Writes the results JSON (``--out``, default ``benchmarks/results/export_sizes.json``),
the report, plots and .tflite files (``--work``, default ``runs/export_sizes``), and in
full mode the tables into ``benchmarks/README.md`` between the markers.
"""

from __future__ import annotations

import argparse
import gzip
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks._common import (
    REPO,
    add_standard_options,
    log,
    output_paths,
    publish,
    speedup,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "export_sizes.json"
BEGIN = "<!-- export_sizes:begin -->"
END = "<!-- export_sizes:end -->"

# tfmot_frequency None: derived so that the short quick run prunes at all (tfmot's default
# of 100 steps never fires in 15 steps: tfmot prunes only when (step - begin_step) %
# frequency == 0); the full run keeps the tutorial's 100.
# Quick: a smoke test of every step (its test checks structure, sizes and sparsity, no
# accuracy). 1,024 training images still give the tfmot reference 8 steps, the last
# pruning step 7 of 8: 0.8 - 0.3 * (1/8)**3 = 0.7994 of its kernels, within 0.005 of 0.8.
QUICK = dict(n_train=1024, n_test=300, baseline_epochs=1, pruning_epochs=1,
             plans=("default", "high"), tfmot_epochs=1, tfmot_pruning_epochs=1,
             tfmot_frequency=None, calibration=32, latency_rounds=2, latency_repeats=5,
             pqat_epochs=1)
FULL = dict(n_train=None, n_test=None, baseline_epochs=2, pruning_epochs=2,
            plans=("default", "default-1:4", "high"), tfmot_epochs=4, tfmot_pruning_epochs=2,
            tfmot_frequency=100, calibration=200, latency_rounds=9, latency_repeats=100,
            pqat_epochs=1)
LATENCY_WARMUP = 10  # untimed invokes before each file's timed ones, every round
BATCH_SIZE = 128
FINE_TUNE_LR = 2e-4
EXPORTS = ("float", "sparse", "int8", "sparse-int8")
# (plan, variant, at least x smaller raw than the dense float .tflite)
TARGETS = (("default", "sparse-int8", 5.0), ("default-1:4", "sparse-int8", 5.0),
           ("high", "sparse-int8", 15.0))
ACCURACY_TOLERANCE_PP = 0.3
# tfmot pruning_with_keras tutorial: gzipped size against the gzipped baseline Keras file.
TFMOT_CLAIMS = {"pruned_tflite_gzip_vs_keras_gzip": 3.0, "pruned_dynamic_gzip_vs_keras_gzip": 10.0}


def plans():
    """The pruning plans compared (dense is the baseline, not a plan)."""
    from kprune import LayerRule, PruningPlan

    default = PruningPlan.default()
    return {
        "default": default,
        "default-1:4": PruningPlan.default(n=1, m=4),
        "high": default.with_rule(
            LayerRule("fc1", target=0.95, note="high compression: the 3.2M-weight layer")
        ),
    }


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.export_sizes", description=__doc__.split("\n\n")[0]
    )
    add_standard_options(parser, quick_help="1,024 train / 300 test images and 1 epoch (CI)", default_out=DEFAULT_OUT)
    parser.add_argument("--work", type=Path,
                        help="folder for .tflite files and reports (default: runs/export_sizes"
                        " or, with --out, <out>_files next to it)")
    parser.add_argument("--pqat", action="store_true",
                        help="also fine-tune the default plan with pruning-preserving QAT")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (or 2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="export_sizes", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    config = dict(QUICK if args.quick else FULL)
    work = args.work or (
        out.parent / f"{out.stem}_files" if args.out else REPO / "runs" / out.stem
    )
    results = run(config, work=work, data_dir=args.data, seed=args.seed, pqat=args.pqat,
                  quick=args.quick)
    print(f"report:  {results['report']['markdown']}")
    return publish(results, out, readme, summary=markdown_summary(results), markers=(BEGIN, END))


def run(config, *, work, data_dir, seed=0, pqat=False, quick=False):
    """Train, prune, export and measure; return the results dict (see README)."""
    import kprune
    from kprune import data, export, models, report
    from kprune.engines.tfkeras import loader
    from kprune.engines.wrap import copy_model

    keras = loader.keras
    work = Path(work)
    timings = {}
    (x_train, y_train), (x_test, y_test) = data.load_mnist(data_dir, verbose=False)
    if config["n_train"]:
        (x_train, y_train), (x_test, y_test) = data.subset(
            ((x_train, y_train), (x_test, y_test)), config["n_train"], config["n_test"],
            seed=seed,
        )
    calibration = x_train[: config["calibration"]]
    steps = math.ceil(len(x_train) / BATCH_SIZE)
    log(f"MNIST {len(x_train):,} train / {len(x_test):,} test; work folder {work}")

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    dense = models.compile_classifier(models.seed_cnn())
    dense.fit(x_train, y_train, epochs=config["baseline_epochs"], batch_size=BATCH_SIZE,
              verbose=0)
    timings["dense_fit_s"] = time.perf_counter() - start
    keras_accuracy = {"dense": _keras_accuracy(dense, x_test, y_test)}
    log(f"dense baseline: Keras accuracy {keras_accuracy['dense']:.4f}")

    # Control: the dense model fine-tuned exactly like the pruned ones (same epochs and
    # learning rate), so extra training is not mistaken for a pruning gain.
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    dense_ft = models.compile_classifier(copy_model(dense), learning_rate=FINE_TUNE_LR)
    dense_ft.fit(x_train, y_train, epochs=config["pruning_epochs"], batch_size=BATCH_SIZE,
                 verbose=0)
    timings["dense-ft_fit_s"] = time.perf_counter() - start
    keras_accuracy["dense-ft"] = _keras_accuracy(dense_ft, x_test, y_test)
    log(f"dense fine-tuned control: Keras accuracy {keras_accuracy['dense-ft']:.4f}")

    finals, sparsity = {"dense": dense, "dense-ft": dense_ft}, {}
    chosen = {name: plan for name, plan in plans().items() if name in config["plans"]}
    for name, plan in chosen.items():
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        pruned = kprune.apply(dense, plan, steps_per_epoch=steps,
                              epochs=config["pruning_epochs"])
        models.compile_classifier(pruned, learning_rate=FINE_TUNE_LR)
        pruned.fit(x_train, y_train, epochs=config["pruning_epochs"], batch_size=BATCH_SIZE,
                   verbose=0, callbacks=kprune.callbacks())
        final = kprune.strip(pruned)
        timings[f"{name}_fit_s"] = time.perf_counter() - start
        finals[name] = final
        sparsity[name] = kprune.sparsity_report(final, plan)
        keras_accuracy[name] = _keras_accuracy(
            models.compile_classifier(final), x_test, y_test
        )
        log(f"plan {name}: Keras accuracy {keras_accuracy[name]:.4f}, kernel sparsity "
             f"{sparsity[name].sparsity:.3f}, plan ok: {sparsity[name].ok}")

    start = time.perf_counter()
    variants = []
    for group, model in finals.items():
        names = {"dense": ("float", "int8"), "dense-ft": ("float",)}.get(group, EXPORTS)
        runs = export.export_variants(model, work / "tflite", names,
                                      representative_data=calibration, prefix=f"{group}-")
        for result in runs.values():
            variants.append(report.Variant.from_export(
                result, model=model, group=group, sparsity=sparsity.get(group)))
    if pqat:
        qat = export.pqat_int8(finals["default"], x_train, y_train,
                               epochs=config["pqat_epochs"], batch_size=BATCH_SIZE)
        keras_accuracy["default-pqat"] = _keras_accuracy(qat, x_test, y_test)
        for variant, sparse in (("pqat-int8", False), ("pqat-sparse-int8", True)):
            result = export.to_tflite(qat, work / "tflite" / f"default-{variant}.tflite",
                                      quantize="int8", sparse=sparse,
                                      representative_data=calibration, variant=variant)
            variants.append(report.Variant.from_export(
                result, model=qat, group="default-pqat", sparsity=sparsity["default"]))
    timings["export_s"] = time.perf_counter() - start
    log(f"exported {len(variants)} .tflite files")

    start = time.perf_counter()
    main_report = report.compare(
        variants, baseline="dense/float", x_test=x_test, y_test=y_test,
        out_dir=work / "report", latency_repeats=0,
        title="export_sizes: seed CNN on MNIST (latency: see the benchmark JSON)",
    )
    timings["measure_s"] = time.perf_counter() - start
    log("measured accuracy and sizes of the seed CNN variants")
    start = time.perf_counter()
    log(f"latency: {config['latency_rounds']} interleaved rounds of "
        f"{config['latency_repeats']} runs per file")
    latency = interleaved(variants, "dense/float", config)
    timings["latency_s"] = time.perf_counter() - start

    start = time.perf_counter()
    reference = tfmot_reference(config, work=work / "tfmot", x_train=x_train,
                                y_train=y_train, x_test=x_test, y_test=y_test, seed=seed)
    timings["tfmot_reference_s"] = time.perf_counter() - start
    log("tfmot tutorial reference done")

    env = report.environment()
    rows = [_with_latency(_slim(row), latency) for row in main_report.variants]
    return {
        "benchmark": "export_sizes",
        "created": main_report.data["created"],
        "mode": "quick" if quick else "full",
        "seed": seed,
        "config": {**config, "plans": list(config["plans"]), "batch_size": BATCH_SIZE, "fine_tune_lr": FINE_TUNE_LR,
                   "n_train": len(x_train), "n_test": len(x_test), "exports": list(EXPORTS),
                   "pqat": pqat},
        "repeats": {"latency": config["latency_repeats"],
                    "latency_rounds": config["latency_rounds"],
                    "latency_warmup": LATENCY_WARMUP, "threads": 1, "training_runs": 1},
        "latency": {"method": LATENCY_METHOD, **latency},
        **env,
        "runtime": main_report.data["runtime"],
        "plans": {name: plan.to_dict() for name, plan in chosen.items()},
        "keras_accuracy": keras_accuracy,
        "sparsity": {name: rep.to_dict() for name, rep in sparsity.items()},
        "baseline": "dense/float",
        "variants": rows,
        "control": "dense-ft/float",
        "targets": check_targets(rows),
        "tfmot_reference": reference,
        "timings_s": timings,
        "report": {"json": str(main_report.json_path),
                   "markdown": str(main_report.markdown_path),
                   "plots": [str(p) for p in main_report.plots]},
    }


LATENCY_METHOD = (
    "kprune.measure.latency_rounds: interleaved rounds, every file once per round in an "
    "order rotated by one file each round; per round and file the median of `repeats` "
    "invokes at batch 1 after `warmup`; median_ms is the median of the round medians, "
    "x_faster the median of the within-round ratios baseline / file, x_faster_range "
    "their [min, max]"
)


def interleaved(variants, baseline, config):
    """``measure.latency_rounds`` over the variants' files (see ``LATENCY_METHOD``)."""
    from kprune import measure

    return measure.latency_rounds(
        {v.name: v.path for v in variants}, baseline=baseline,
        rounds=config["latency_rounds"], repeats=config["latency_repeats"],
        warmup=LATENCY_WARMUP, threads=1,
    )


def _with_latency(row, latency):
    """``row`` with the interleaved latency of its file (the report measured none)."""
    timing = latency["files"][row["name"]]
    row = {key: value for key, value in row.items()
           if key not in ("latency_ms_p10", "latency_ms_p90")}
    row.update(latency_ms_median=timing["median_ms"], x_faster=timing["x_faster"],
               x_faster_range=timing["x_faster_range"], latency_kernels=timing["kernels"])
    return row


def kprune_sparsity(model):
    """Overall and per-layer kernel sparsity of a stripped model."""
    from kprune import sparsity_report

    rep = sparsity_report(model)
    return {"overall": rep.sparsity, **{row.name: row.achieved for row in rep.rows}}


def _keras_accuracy(model, x, y):
    return float(model.evaluate(x, y, verbose=0, batch_size=512)[1])


def _slim(row):
    """A report row without the per-tensor list (kept in the report.json)."""
    return {key: value for key, value in row.items() if key != "tensors"}


def check_targets(rows):
    by_name = {row["name"]: row for row in rows}
    control = by_name.get("dense-ft/float")
    checks = []
    for plan, variant, factor in TARGETS:
        row = by_name.get(f"{plan}/{variant}")
        if row is None:
            continue
        best = max(
            (r for r in rows if r["group"] == plan and r["quantize"] == "int8"),
            key=lambda r: r["x_smaller_raw"],
        )
        checks.append({
            "plan": plan,
            "variant": row["name"],
            "x_smaller_raw": row["x_smaller_raw"],
            "target_x_smaller_raw": factor,
            "accuracy_delta_pp": row["accuracy_delta_pp"],
            "accuracy_delta_vs_control_pp": None if control is None
            else (row["accuracy"] - control["accuracy"]) * 100.0,
            "size_met": row["x_smaller_raw"] >= factor,
            "accuracy_met": row["accuracy_delta_pp"] >= -ACCURACY_TOLERANCE_PP,
            "best_int8_variant": best["name"],
            "best_int8_x_smaller_raw": best["x_smaller_raw"],
        })
    return checks


def tfmot_reference(config, *, work, x_train, y_train, x_test, y_test, seed):
    """tfmot's pruning_with_keras tutorial, as published, measured the same way."""
    from kprune import export, models, report
    from kprune.engines.tfkeras import loader
    from kprune.engines.wrap import copy_model

    keras, tfmot = loader.keras, loader.tfmot
    work = Path(work)
    keras.utils.set_random_seed(seed)
    base = models.compile_classifier(models.tfmot_tutorial_cnn())
    base.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=config["tfmot_epochs"],
             validation_split=0.1, verbose=0)
    epochs = config["tfmot_pruning_epochs"]
    end_step = math.ceil(len(x_train) * 0.9 / BATCH_SIZE) * epochs
    frequency = config["tfmot_frequency"] or max(1, end_step // 5)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step,
        frequency=frequency,
    )
    # The tutorial wraps `base` itself, and prune_low_magnitude wraps the same layer objects,
    # so training prunes `base` in place: wrap a copy.
    pruned = tfmot.sparsity.keras.prune_low_magnitude(copy_model(base),
                                                      pruning_schedule=schedule)
    models.compile_classifier(pruned)
    pruned.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, validation_split=0.1,
               verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    final = tfmot.sparsity.keras.strip_pruning(pruned)
    achieved = kprune_sparsity(final)
    keras_gzip = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are saving your model as an HDF5")
        for name, model in (("baseline", base), ("pruned", final)):
            path = Path(tmp) / f"{name}.h5"
            keras.models.save_model(model, str(path), include_optimizer=False)
            keras_gzip[name] = len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
    runs = {"dense/float": export.to_tflite(base, work / "dense-float.tflite")}
    for variant in ("float", "sparse", "dynamic"):
        runs[f"pruned/{variant}"] = export.to_tflite(
            final, work / f"pruned-{variant}.tflite", variant=variant, **export.VARIANTS[variant]
        )
    variants = [
        report.Variant.from_export(result, model=base if name == "dense/float" else final,
                                   group=name.split("/")[0], name=f"tfmot/{name}")
        for name, result in runs.items()
    ]
    rep = report.compare(variants, baseline="tfmot/dense/float", x_test=x_test,
                         y_test=y_test, out_dir=work / "report", latency_repeats=0,
                         title="tfmot pruning_with_keras tutorial (reference)")
    latency = interleaved(variants, "tfmot/dense/float", config)
    rows = {row["name"]: _with_latency(_slim(row), latency) for row in rep.variants}
    pruned_float = rows["tfmot/pruned/float"]
    pruned_dynamic = rows["tfmot/pruned/dynamic"]
    return {
        "model": "tfmot_tutorial_cnn",
        "schedule": {"initial_sparsity": 0.5, "final_sparsity": 0.8, "begin_step": 0,
                     "end_step": end_step, "frequency": frequency, "epochs": epochs},
        "kernel_sparsity": achieved,
        "claims": TFMOT_CLAIMS,
        "keras_h5_gzip_bytes": keras_gzip,
        "tutorial_method": {
            "pruned_tflite_gzip_vs_keras_gzip": keras_gzip["baseline"]
            / pruned_float["gzip_bytes"],
            "pruned_dynamic_gzip_vs_keras_gzip": keras_gzip["baseline"]
            / pruned_dynamic["gzip_bytes"],
            "pruned_keras_gzip_vs_keras_gzip": keras_gzip["baseline"] / keras_gzip["pruned"],
        },
        "variants": list(rows.values()),
        "latency": {"method": LATENCY_METHOD, **latency},
        "report": str(rep.markdown_path),
    }


# ------------------------------------------------------------------ markdown


def markdown_summary(results):
    """The tables that go into benchmarks/README.md."""
    from kprune.tflite.report import markdown_table

    env = results["versions"]
    machine = results["machine"]
    config = results["config"]
    lines = [
        f"Measured {results['created']} in **{results['mode']}** mode: seed CNN, "
        f"{config['n_train']:,} train / {config['n_test']:,} test images, baseline "
        f"{config['baseline_epochs']} epoch(s), pruning fine-tune {config['pruning_epochs']} "
        f"epoch(s) at lr {config['fine_tune_lr']}, seed {results['seed']}, one training run. "
        f"Latency: batch 1, 1 thread, {results['latency']['rounds']} interleaved rounds of "
        f"{results['latency']['repeats']} runs per file after {results['latency']['warmup']} "
        "warm-up runs; latency ms is the median of the round medians, x faster the median of "
        "the within-round ratios to `dense/float` (ranges below). "
        f"TF {env['tensorflow']}, tf_keras {env['tf_keras']}, tfmot {env['tfmot']}, "
        f"LiteRT {env['litert']}, Python {env['python']}; {machine['platform']}, "
        f"{machine['cpus_usable']} usable CPU(s).",
        "",
        markdown_table(results),
        "",
        *latency_lines(results["variants"]),
        "",
        "Targets (x smaller raw than the dense float .tflite, within "
        f"{ACCURACY_TOLERANCE_PP} pp of its accuracy):",
        "",
        "| plan | variant | x smaller raw | target | Δ pp | met | Δ pp vs dense-ft | "
        "best int8 variant |",
        "|---|---|---:|---:|---:|:---:|---:|---|",
    ]
    for t in results["targets"]:
        met = "yes" if t["size_met"] and t["accuracy_met"] else "**no**"
        lines.append(
            f"| {t['plan']} | `{t['variant']}` | {t['x_smaller_raw']:.2f} | "
            f"{t['target_x_smaller_raw']:.0f} | {t['accuracy_delta_pp']:+.2f} | {met} | "
            f"{_fmt_pp(t['accuracy_delta_vs_control_pp'])} | "
            f"`{t['best_int8_variant']}` {t['best_int8_x_smaller_raw']:.2f}x |"
        )
    lines += [
        "",
        "`dense-ft/float` is the control: the dense baseline fine-tuned for the same epochs "
        "at the same learning rate as the pruned models; Δ pp vs dense-ft separates the "
        "effect of pruning from that of the extra training.",
    ]
    ref = results["tfmot_reference"]
    method = ref["tutorial_method"]
    lines += [
        "",
        "tfmot `pruning_with_keras` reference (tutorial CNN, whole model 50 % -> 80 %, "
        f"frequency {ref['schedule']['frequency']}, end step {ref['schedule']['end_step']}: "
        f"kernel sparsity reached {ref['kernel_sparsity']['overall']:.3f}; sizes relative to "
        "its own dense float .tflite):",
        "",
        markdown_table({"variants": ref["variants"], "baseline": "tfmot/dense/float"}),
        "",
        *latency_lines(ref["variants"]),
        "",
        "The tutorial's own method (gzipped .tflite against the gzipped baseline Keras .h5): "
        f"pruned {method['pruned_tflite_gzip_vs_keras_gzip']:.2f}x (claim 3x), pruned + "
        f"dynamic quantization {method['pruned_dynamic_gzip_vs_keras_gzip']:.2f}x (claim 10x).",
    ]
    return "\n".join(lines)


def latency_lines(rows):
    """A table of each file's latency and within-round speed-up with its range."""
    lines = ["| variant | latency ms | x faster [min, max over rounds] | kernels |",
             "|---|---:|---:|---|"]
    for row in rows:
        lines.append(f"| `{row['name']}` | {row['latency_ms_median']:.3f} | {speedup(row)} | "
                     f"{row['latency_kernels']} |")
    return lines


def _fmt_pp(value):
    return "–" if value is None else f"{value:+.2f}"


if __name__ == "__main__":
    sys.exit(main())
