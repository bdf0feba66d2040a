"""Block sparsity in LiteRT: how much smaller and faster is a block-sparse int8 ``.tflite``?

LiteRT's converter stores an int8 ``FULLY_CONNECTED`` weight block-sparse (``block_map``
[1], block size 16) when its zeros come in runs of 16 consecutive inputs of one output
unit, and its builtin int8 kernel then runs block-sparse. kprune asks for that with
``LayerRule(..., method="block", block=16)``. Two parts, in one run:

- ``layer``: the seed CNN's fc1 shape alone (a 3136x1024 ``Dense``, random weights, no
  training), its kernel masked to 95 % zero in four ways: ``dense`` (no mask),
  ``block-16x1`` (95 % of the blocks of 16 inputs of one output unit, what LiteRT stores
  block-sparse), ``unstructured`` (95 % of single weights), ``block-1x16`` (95 % of the
  blocks of 16 outputs of one input, the orientation the converter does not recognise);
  each exported int8 (sparse storage for the masked ones) and read back from the file.
- ``model``: the seed CNN trained dense, then ``dense`` trained ``tune`` more epochs (the
  baseline, trained as long) against ``block-95``: fc1 pruned to 95 % of its 16-input blocks
  by ``kprune.workflows.gradual`` with a block plan over the same ``tune`` epochs (the last
  epoch at 95 %), stripped and checked (whole blocks). Exported float and int8, and
  ``block-95`` int8 with sparse storage; accuracy and bytes raw and gzipped by
  ``kprune.report.compare``.

Latency at batch 1, one thread, in interleaved rounds (``kprune.measure.latency_rounds``:
every file once per round, the order rotated; the speed-up is the median of the
within-round ratios to the dense int8 file, with its range). The machine is shared with
other agents running tests while it measures, so latency ratios are noisy: quote the
range, not just the median.

    python -m benchmarks.block_sparse            # full MNIST (measured time in the JSON)
    python -m benchmarks.block_sparse --quick    # 2,048 images, few rounds (a smoke test)

Writes the results JSON (``--out``; default ``benchmarks/results/block_sparse.json``), the
.tflite files and report (``--work``; default ``runs/block_sparse``), and in full mode the
tables into ``benchmarks/README.md`` between the ``block_sparse`` markers.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

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

DEFAULT_OUT = REPO / "benchmarks" / "results" / "block_sparse.json"
BEGIN = "<!-- block_sparse:begin -->"
END = "<!-- block_sparse:end -->"

SPARSITY = 0.95
FC1 = (3136, 1024)  # the seed CNN's fc1: [inputs, outputs]
#: The fc1-alone kernels: name -> (tfmot/kprune block (inputs, outputs), sparse storage).
LAYER_MASKS = {"dense": (None, False), "block-16x1": ((16, 1), True),
               "unstructured": ((1, 1), True), "block-1x16": ((1, 16), True)}
#: (model, TFLite variant) pairs of the seed CNN part, the dense float baseline first.
EXPORTS = [("dense", "float"), ("dense", "int8"), ("block-95", "int8"),
           ("block-95", "sparse-int8")]
FULL = dict(n_train=None, n_test=None, dense_epochs=2, tune_epochs=2, layer_rounds=15,
            layer_repeats=200, rounds=9, repeats=100, exports=EXPORTS)
#: Quick: fewer images, rounds and conversions (no block-95/int8), to stay a smoke test.
QUICK = dict(n_train=2048, n_test=500, dense_epochs=1, tune_epochs=1, layer_rounds=2,
             layer_repeats=10, rounds=2, repeats=5,
             exports=[pair for pair in EXPORTS if pair != ("block-95", "int8")])
NOISE = ("The machine is shared with other agents running tests while this benchmark "
         "measures: latency ratios are noisy; the range over rounds says how much.")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.block_sparse",
        description="Block-sparse int8 .tflite (blocks of 16 inputs) against dense int8: "
                    "bytes raw and gzipped, accuracy and LiteRT latency.",
    )
    add_standard_options(parser, quick_help="2,048 training images, few rounds (a smoke test)",
                         default_out=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "block_sparse",
                        help="folder for the .tflite files and the report")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="block_sparse", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    results = run(data_dir=args.data, work=args.work, seed=args.seed, quick=args.quick)
    return publish(results, out, readme, summary=markdown_summary(results),
                   markers=(BEGIN, END))


def run(*, data_dir, work, seed=0, quick=False):
    """Both parts; return the results dict."""
    cfg = QUICK if quick else FULL
    work = Path(work)
    layer = layer_part(work / "layer", cfg, seed=seed)
    model = model_part(work / "model", cfg, data_dir=data_dir, seed=seed)
    return {
        "benchmark": "block_sparse",
        "mode": "quick" if quick else "full",
        "seed": seed,
        "repeats": 1,
        "settings": dict(cfg, sparsity=SPARSITY, fc1=list(FC1)),
        "noise": NOISE,
        "layer": layer,
        "model": model,
        "seconds": round(elapsed(), 1),
    }


def file_facts(path):
    """Bytes raw and gzipped, and how the file stores its weights (read from the file)."""
    from kprune.tflite import flatbuffer, measure

    info = flatbuffer.tflite_tensors(path)
    return {
        **measure.file_sizes(path),
        "storage": {t.name: t.storage for t in info.weights},
        "block_sparse": [{"tensor": t.name, "shape": list(t.shape), "block_map": list(
            t.block_map), "block_size": list(t.block_size)} for t in info.block_sparse],
        "densify_ops": info.densify_ops,
    }


def layer_part(work, cfg, *, seed):
    """fc1 alone, masked four ways, int8: sizes and latency against the dense int8 file."""
    from kprune.core import masks
    from kprune.engines.tfkeras import loader
    from kprune.tflite import export, measure

    keras = loader.keras
    rng = np.random.default_rng(seed)
    weights = (rng.normal(size=FC1) * 0.02).astype(np.float32)
    calibration = rng.random((100, FC1[0]), dtype=np.float32)
    layer_model = keras.Sequential([keras.Input((FC1[0],)), keras.layers.Dense(FC1[1],
                                                                               name="fc1")])
    files, paths = {}, {}
    for name, (block, sparse) in LAYER_MASKS.items():
        keep = np.ones(FC1, bool) if block is None else masks.block(weights, block, SPARSITY)
        layer_model.get_layer("fc1").set_weights([np.where(keep, weights, 0),
                                                  np.zeros(FC1[1], np.float32)])
        paths[name] = export.to_tflite(layer_model, work / f"fc1-{name}-int8.tflite",
                                       quantize="int8", sparse=sparse,
                                       representative_data=calibration).path
        files[name] = {"block": None if block is None else list(block), "sparse": sparse,
                       "sparsity": float(1 - keep.mean()), **file_facts(paths[name])}
        log(f"fc1 {name}: {files[name]['bytes']:,} bytes, {files[name]['storage']}")
    dense = files["dense"]
    for row in files.values():
        row["x_smaller_raw"] = dense["bytes"] / row["bytes"]
        row["x_smaller_gzip"] = dense["gzip_bytes"] / row["gzip_bytes"]
    log(f"fc1 latency: {cfg['layer_rounds']} rounds of {cfg['layer_repeats']} runs per file")
    latency = measure.latency_rounds(paths, baseline="dense", rounds=cfg["layer_rounds"],
                                     repeats=cfg["layer_repeats"])
    return {"shape": list(FC1), "sparsity": SPARSITY, "files": files, "latency": latency}


def model_part(work, cfg, *, data_dir, seed):
    """The seed CNN, dense against fc1 95 % block-sparse: accuracy, bytes, latency."""
    from kprune import data, export, models, report, workflows
    from kprune.core.plan import LayerRule, PruningPlan
    from kprune.core.schedules import Schedule
    from kprune.engines.tfkeras import loader
    from kprune.engines.verify import sparsity_report
    from kprune.engines.wrap import copy_model

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
    log(f"dense and block-95 each train {tune} more epoch(s)")
    built = {"dense": copy_model(trained)}
    trainer.fit(built["dense"], tune)
    # Prune over all but the last epoch (if there are two or more), then hold 95 %.
    schedule = Schedule(end=tune - 1 if tune > 1 else None)
    plan = PruningPlan([LayerRule("fc1", method="block", block=16, target=SPARSITY,
                                  schedule=schedule, note="blocks of 16 inputs")])
    built["block-95"] = workflows.gradual(trained, plan, trainer=trainer, epochs=tune).model
    check = sparsity_report(built["block-95"], plan=plan, strict=True)
    log(f"block-95 weights:\n{check}")
    variants = []
    for name, variant in cfg["exports"]:
        calibration = x_train[:200] if "int8" in variant else None
        result = export.to_tflite(built[name], work / f"{name}-{variant}.tflite",
                                  **export.VARIANTS[variant], representative_data=calibration,
                                  variant=variant)
        variants.append(report.Variant.from_export(result, model=built[name], group=name))
    measured, latency = litert_measurements(
        variants, x_test=x_test, y_test=y_test, work=work, title="seed CNN: fc1 95 % block-sparse",
        rounds=cfg["rounds"], repeats=cfg["repeats"], latency_baseline="dense/int8")
    return {
        "data": {"train": len(x_train), "test": len(x_test), "source": str(data_dir)},
        "plan": plan.to_dict(),
        "fc1_check": check["fc1"].to_dict(),
        "files": {v.name: file_facts(v.path) for v in variants},
        "report": measured.data,
        "latency": latency,
    }


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    from kprune.tflite.report import markdown_table

    layer, model = results["layer"], results["model"]
    rep = model["report"]
    env, mach = rep["versions"], rep["machine"]
    lat = layer["latency"]
    lines = [
        f"Measured {rep['created']} in **{results['mode']}** mode, seed {results['seed']}, "
        f"one training run, {results['seconds'] / 60:.1f} min, {rep['runtime']}. "
        f"TF {env['tensorflow']}, tfmot {env['tfmot']}; {mach['platform']}, "
        f"{mach['cpu_count']} usable CPU(s). {results['noise']}",
        "",
        f"fc1 alone ({layer['shape'][0]}x{layer['shape'][1]} Dense, random weights, "
        f"{layer['sparsity']:.0%} zero, int8): bytes, storage read back from the file, and "
        f"latency at batch 1, one thread, {lat['rounds']} interleaved rounds of "
        f"{lat['repeats']} runs; speed-up over the dense int8 file, median [range]:",
        "",
        "| zeros | bytes | gzip bytes | x smaller raw | x smaller gzip | storage | "
        "latency ms | x faster [range] | kernels |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for name, row in layer["files"].items():
        timing = lat["files"][name]
        lines.append(
            f"| `{name}` | {row['bytes']:,} | {row['gzip_bytes']:,} | "
            f"{row['x_smaller_raw']:.1f} | {row['x_smaller_gzip']:.1f} | "
            f"{', '.join(row['storage'].values())} | {timing['median_ms']:.3f} | "
            f"{speedup(timing)} | {timing['kernels']} |")
    mlat = model["latency"]
    lines += [
        "",
        f"Seed CNN on {model['data']['train']:,} training / {model['data']['test']:,} test "
        "images, fc1 95 % of its 16-input blocks zero (`block-95`) against the dense model "
        "trained as long; bytes and accuracy against the dense float file:",
        "",
        markdown_table(rep),
        "",
        f"Latency at batch 1, one thread, {mlat['rounds']} interleaved rounds of "
        f"{mlat['repeats']} runs; speed-up over `dense/int8`, median [range]:",
        "",
        "| variant | latency ms | x faster [range] | kernels |",
        "|---|---:|---:|---|",
    ]
    for name, row in mlat["files"].items():
        lines.append(f"| `{name}` | {row['median_ms']:.3f} | {speedup(row)} | "
                     f"{row['kernels']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
