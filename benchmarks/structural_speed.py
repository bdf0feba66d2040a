"""Structural pruning against 2:4 sparsity: which one makes the seed CNN faster on this CPU?

XNNPACK has no sparse fast path on x86 with AVX, so a 2:4 model runs no faster than the
dense one. Removing whole filters and neurons (``kprune.structural``) gives smaller dense layers
instead. One run, side by side: the seed CNN trained dense, then

- ``dense``: the dense model trained ``tune`` more epochs (the baseline, so that every
  model has trained as long);
- ``2:4``: kprune's default plan (gradual, ``tune`` epochs);
- ``structural-50`` and ``structural-75``: 50 % / 75 % of the filters of conv1 and conv2
  and of the neurons of fc1 removed by L1 norm, then fine-tuned ``tune`` epochs;

each exported to TFLite (float, and int8 for some) and measured in LiteRT: accuracy and
bytes raw and gzipped by ``kprune.report.compare``; latency at batch 1, one thread, in
interleaved rounds by ``kprune.measure.latency_rounds`` (every file once per round, the
order rotated), so that a noisy spell on this shared machine hits all files alike: the
speed-up is the median over rounds of the within-round ratio to the dense file, with its
range.

    python -m benchmarks.structural_speed            # full MNIST (8.4 min measured on 2 cores)
    python -m benchmarks.structural_speed --quick    # 2,000 images (~1 min)

Writes the results JSON (``--out``; default ``benchmarks/results/structural_speed.json``),
the report and .tflite files (``--work``; default ``runs/structural_speed``), and in full
mode the table into ``benchmarks/README.md`` between the ``structural_speed`` markers.
"""

import argparse
import sys
from pathlib import Path

from benchmarks._common import (
    REPO,
    add_standard_options,
    elapsed,
    litert_measurements,
    log,
    output_paths,
    publish,
    speedup,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "structural_speed.json"
BEGIN = "<!-- structural_speed:begin -->"
END = "<!-- structural_speed:end -->"

LAYERS = ("conv1", "conv2", "fc1")  # every layer but the head
REMOVED = {"structural-50": 0.5, "structural-75": 0.75}  # fraction of units removed
#: (model, TFLite variant) pairs exported and measured, the baseline first.
EXPORTS = [("dense", "float"), ("dense", "int8"), ("2:4", "float"), ("2:4", "sparse"),
           ("structural-50", "float"), ("structural-75", "float"), ("structural-75", "int8")]
FULL = dict(n_train=None, n_test=None, dense_epochs=2, tune_epochs=1, rounds=9, repeats=100)
QUICK = dict(n_train=2000, n_test=500, dense_epochs=1, tune_epochs=1, rounds=2, repeats=10)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.structural_speed",
        description="Structural pruning against 2:4 sparsity on the seed CNN: size, "
                    "accuracy and latency in LiteRT.",
    )
    add_standard_options(parser, quick_help="2,000 training images (a smoke test)", default_out=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "structural_speed",
                        help="folder for the .tflite files and the report")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="structural_speed", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    results = run(data_dir=args.data, work=args.work, seed=args.seed, quick=args.quick)
    return publish(results, out, readme, summary=markdown_summary(results),
                   markers=(BEGIN, END))


def run(*, data_dir, work, seed=0, quick=False):
    """Train, prune both ways, export, measure; return the results dict."""
    from kprune import data, export, models, report, structural, workflows
    from kprune.core.plan import PruningPlan
    from kprune.engines.tfkeras import loader
    from kprune.engines.wrap import copy_model

    cfg = QUICK if quick else FULL
    (x_train, y_train), (x_test, y_test) = data.load_mnist(data_dir, verbose=False)
    x_train, y_train = x_train[: cfg["n_train"]], y_train[: cfg["n_train"]]
    x_test, y_test = x_test[: cfg["n_test"]], y_test[: cfg["n_test"]]
    log(f"MNIST: {len(x_train):,} train / {len(x_test):,} test")
    loader.keras.utils.set_random_seed(seed)
    trainer = workflows.Trainer(x_train, y_train, batch_size=128)
    log(f"dense seed CNN, {cfg['dense_epochs']} epoch(s)")
    trained = models.seed_cnn()
    trainer.fit(trained, cfg["dense_epochs"])
    tune = cfg["tune_epochs"]
    log(f"each model below trains {tune} more epoch(s)")
    built = {"dense": copy_model(trained)}
    trainer.fit(built["dense"], tune)
    built["2:4"] = workflows.gradual(trained, PruningPlan.default(), trainer=trainer,
                                     epochs=tune).model
    tables = {}
    for name, fraction in REMOVED.items():
        keep = structural.select_units(trained, dict.fromkeys(LAYERS, fraction))
        built[name] = structural.remove_units(trained, keep)
        trainer.fit(built[name], tune)
        tables[name] = structural.summary(trained, built[name])
        log(f"{name}:\n{tables[name]}")
    work = Path(work)
    variants = []
    for name, variant in EXPORTS:
        path = work / f"{name.replace(':', 'by')}-{variant}.tflite"
        calibration = x_train[:200] if "int8" in variant else None
        result = export.to_tflite(built[name], path, **export.VARIANTS[variant],
                                  representative_data=calibration, variant=variant)
        variants.append(report.Variant.from_export(result, model=built[name], group=name))
    measured, latency = litert_measurements(
        variants, x_test=x_test, y_test=y_test, work=work, title="structural pruning against 2:4",
        rounds=cfg["rounds"], repeats=cfg["repeats"], plots=True)
    return {
        "benchmark": "structural_speed",
        "mode": "quick" if quick else "full",
        "seed": seed,
        "repeats": 1,
        "settings": dict(cfg, layers=list(LAYERS), removed=REMOVED),
        "data": {"train": len(x_train), "test": len(x_test), "source": str(data_dir)},
        "structural": tables,
        "report": measured.data,
        "latency": latency,
        "seconds": round(elapsed(), 1),
    }


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    from kprune.tflite.report import markdown_table

    rep, lat = results["report"], results["latency"]
    env, mach = rep["versions"], rep["machine"]
    lines = [
        f"Measured {rep['created']} in **{results['mode']}** mode: {results['data']['train']:,} "
        f"training / {results['data']['test']:,} test images, seed {results['seed']}, one "
        f"training run, {results['seconds'] / 60:.1f} min, {rep['runtime']}. "
        f"TF {env['tensorflow']}, tfmot {env['tfmot']}; {mach['platform']}, "
        f"{mach['cpu_count']} usable CPU(s).",
        "",
        markdown_table(rep),
        "",
        f"Latency at batch {lat['batch']}, {lat['threads']} thread: {lat['rounds']} "
        f"interleaved rounds of {lat['repeats']} runs per file (after {lat['warmup']} "
        "warm-up runs); median of the round medians, and the median and range of the "
        "within-round speed-up over `dense/float`:",
        "",
        "| variant | latency ms | x faster [range] | kernels |",
        "|---|---:|---:|---|",
    ]
    for name, row in lat["files"].items():
        lines.append(f"| `{name}` | {row['median_ms']:.3f} | {speedup(row)} | "
                     f"{row['kernels']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
