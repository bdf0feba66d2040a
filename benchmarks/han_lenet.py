"""Han et al. 2015 on MNIST: LeNet-300-100 and LeNet-5 through every kprune workflow.

For each network: train a dense baseline, then prune it with each workflow
(one-shot, gradual with a uniform target, gradual with global magnitude allocation,
iterative, rewind to initialisation) and report non-zero weights kept, compression
ratio and test error against the dense baseline of the same run, next to Han et al.
2015 (Table 1: 12x fewer weights on both; LeNet-300-100 1.64% -> 1.59%, LeNet-5
0.80% -> 0.77%).

Target: at least 12x fewer non-zero weights at no more than +0.1 percentage points of
test error over our own dense baseline, for both networks.

    python -m benchmarks.han_lenet              # full MNIST (28.5 min measured on 2 idle cores)
    python -m benchmarks.han_lenet --quick      # 3,000 images, 1 epoch per stage (~1 min)

Writes a results JSON (``--out``; default ``benchmarks/results/han_lenet.json``) with
versions, machine, seed and settings, and in full mode the table into
``benchmarks/README.md`` between the ``han_lenet`` markers.
"""

import argparse
import sys
import time
from datetime import datetime, timezone

from benchmarks._common import (
    REPO,
    add_standard_options,
    elapsed,
    environment,
    log,
    output_paths,
    publish,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "han_lenet.json"
BEGIN = "<!-- han_lenet:begin -->"
END = "<!-- han_lenet:end -->"

BATCH_SIZE = 128
N_VALIDATION = 5000  # held out from the 60,000 training images for monitoring
TARGET_X = 12.0
TARGET_PP = 0.1
CONTROL = "dense, trained on"  # the row of the dense model trained on, for comparison

#: Han et al. 2015, Table 1 (and Tables 2-3 for the per-layer kept fractions).
HAN = {
    "lenet-300-100": dict(params=267_000, kept=22_000, ratio=12.0, dense_error=1.64,
                          pruned_error=1.59, kept_per_layer=[0.08, 0.09, 0.26]),
    "lenet-5": dict(params=431_000, kept=36_000, ratio=12.0, dense_error=0.80,
                    pruned_error=0.77, kept_per_layer=[0.66, 0.12, 0.08, 0.19]),
}

# Per network: epochs of each stage; Adam learning rates, multiplied by the decay every
# epoch within each fit (`lr`/`decay` for the dense baseline and for rewinding, which
# trains from scratch; `tune_lr`/`tune_decay` for pruning a trained model); the gradual
# schedules end `recover` epochs before the end; `global_target` is the sparsity over
# all kernels of the global allocation, `uniform` the per-layer target of the float
# plan (head dense): both give >= 12x fewer non-zero parameters, biases included.
# `ladder` is the iterative workflow's (kprune's default); rewinding retrains as many
# epochs as the dense baseline had. `repeats` seeds per network: LeNet-300-100 is cheap
# enough for three (its single-run deltas scatter by up to +-0.2 pp); LeNet-5 gets one.
FULL = {
    "lenet-300-100": dict(dense=12, lr=1e-3, decay=0.75, tune_lr=2e-3, tune_decay=0.8,
                          one_shot=8, gradual=16, recover=8, rounds=4, epochs_per_round=3,
                          ladder="cubic", rewind=12, global_target=0.92, uniform=0.925,
                          control=True, repeats=3),
    "lenet-5": dict(dense=6, lr=1e-3, decay=0.6, tune_lr=1e-3, tune_decay=0.75,
                    one_shot=4, gradual=6, recover=3, rounds=3, epochs_per_round=2,
                    ladder="cubic", rewind=6, global_target=0.92, uniform=0.93,
                    control=True, repeats=1),
}
QUICK = {
    name: dict(settings, dense=1, one_shot=1, gradual=2, recover=1, rounds=2,
               epochs_per_round=1, rewind=1, control=False, repeats=1)
    for name, settings in FULL.items()
}
QUICK_DATA = dict(n_train=3000, n_validation=1000, n_test=1000)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.han_lenet",
        description="LeNet-300-100 and LeNet-5 on MNIST through every kprune workflow, "
                    "against Han et al. 2015.",
    )
    add_standard_options(parser, quick_help="3,000 training images, 1 epoch per stage (a "
                                            "smoke test)", default_out=DEFAULT_OUT)
    parser.add_argument("--models", nargs="+", choices=sorted(FULL), default=sorted(FULL)[::-1],
                        help="networks to run (default: both)")
    parser.add_argument("--repeats", type=int,
                        help="training runs per network, each with its own seed and dense "
                             "baseline (default: 3 for lenet-300-100, 1 for lenet-5; "
                             "1 in quick mode); repeat i uses seed + i")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="han_lenet", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    if args.repeats is not None and args.repeats < 1:
        print(f"error: --repeats must be at least 1 (got {args.repeats}).", file=sys.stderr)
        return 2
    results = run(args.models, data_dir=args.data, seed=args.seed, quick=args.quick,
                  repeats=args.repeats)
    return publish(results, out, readme, summary=markdown_summary(results),
                   markers=(BEGIN, END))


def load_data(data_dir, *, quick, seed):
    """Train / validation / test splits; validation is held out of the training images."""
    from kprune import data
    from kprune.methods.trainer import split_validation

    (x_train, y_train), (x_test, y_test) = data.load_mnist(data_dir, verbose=False)
    (x_train, y_train), (x_val, y_val) = split_validation(x_train, y_train, N_VALIDATION,
                                                          seed=seed)
    if quick:
        x_train, y_train = x_train[: QUICK_DATA["n_train"]], y_train[: QUICK_DATA["n_train"]]
        x_val, y_val = x_val[: QUICK_DATA["n_validation"]], y_val[: QUICK_DATA["n_validation"]]
        x_test, y_test = x_test[: QUICK_DATA["n_test"]], y_test[: QUICK_DATA["n_test"]]
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def trainer_for(train, validation, *, lr, decay):
    """A Trainer: Adam at ``lr``, multiplied by ``decay`` every epoch of each fit."""
    from kprune import models
    from kprune.engines.tfkeras import loader
    from kprune.methods.workflows import Trainer

    schedule = loader.keras.callbacks.LearningRateScheduler(lambda epoch: lr * decay**epoch)
    return Trainer(*train, validation_data=validation, batch_size=BATCH_SIZE,
                   compile=lambda model: models.compile_classifier(model, learning_rate=lr),
                   callbacks=[schedule])


def run(names, *, data_dir, seed=0, quick=False, repeats=None):
    """Train, prune with each workflow, measure; return the results dict.

    Each network runs ``repeats`` times (default: its ``repeats`` setting), seeds
    ``seed``, ``seed + 1``, ...; every repeat trains its own dense baseline.
    """
    from kprune.engines.tfkeras import loader

    train, validation, test = load_data(data_dir, quick=quick, seed=seed)
    log(f"MNIST: {len(train[0]):,} train / {len(validation[0]):,} validation / "
         f"{len(test[0]):,} test")
    settings = {name: dict((QUICK if quick else FULL)[name]) for name in names}
    networks = {}
    for name in names:
        cfg = settings[name]
        cfg["repeats"] = repeats or cfg["repeats"]
        runs = []
        for index in range(cfg["repeats"]):
            log(f"{name}: repeat {index + 1} of {cfg['repeats']}, seed {seed + index}")
            loader.keras.utils.set_random_seed(seed + index)
            runs.append(run_network(name, cfg, train, validation, test))
        networks[name] = combine_repeats(runs, seeds=list(range(seed, seed + cfg["repeats"])))
    return {
        "benchmark": "han_lenet",
        "mode": "quick" if quick else "full",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "repeats": {name: settings[name]["repeats"] for name in names},
        **environment(),
        "data": {"train": len(train[0]), "validation": len(validation[0]),
                 "test": len(test[0]), "source": str(data_dir)},
        "batch_size": BATCH_SIZE,
        "settings": settings,
        "targets": {"x_fewer": TARGET_X, "error_pp": TARGET_PP},
        "han2015": {name: HAN[name] for name in names},
        "networks": networks,
        "seconds": round(elapsed(), 1),
    }


def run_network(name, cfg, train, validation, test):
    """The dense baseline and every workflow on one network."""
    from kprune import models, workflows
    from kprune.core.schedules import Schedule
    from kprune.engines.wrap import copy_model
    from kprune.methods.allocation import global_plan

    base = trainer_for(train, validation, lr=cfg["lr"], decay=cfg["decay"])
    tune = trainer_for(train, validation, lr=cfg["tune_lr"], decay=cfg["tune_decay"])
    init = models.build(name)
    init_copy = copy_model(init)
    log(f"{name}: dense baseline, {cfg['dense']} epoch(s)")
    started = time.perf_counter()
    dense = copy_model(init)
    base.fit(dense, cfg["dense"])
    rows = [measure("dense", "-", dense, test, started, epochs=cfg["dense"],
                    note="baseline, same run")]
    dense_error = rows[0]["error_pct"]
    log(f"{name}: dense test error {dense_error:.2f}%")

    def plan(schedule=None):
        return global_plan(dense, cfg["global_target"], schedule=schedule)

    gplan = plan(Schedule(end=cfg["gradual"] - cfg["recover"]))
    gplan_constant = plan(Schedule(kind="constant"))
    gplan_rewind = plan(Schedule(end=cfg["rewind"] // 2) if cfg["rewind"] > 1 else None)
    allocation = gplan.allocation
    log(f"{name}: global allocation\n{allocation}")

    runs = [
        ("one-shot", "global", lambda: workflows.one_shot(
            dense, gplan_constant, trainer=tune, finetune_epochs=cfg["one_shot"]),
         cfg["one_shot"]),
        ("gradual", f"uniform {cfg['uniform']:g}, head dense", lambda: workflows.gradual(
            dense, cfg["uniform"], trainer=tune, epochs=cfg["gradual"],
            recover_epochs=cfg["recover"]), cfg["gradual"]),
        ("gradual", "global", lambda: workflows.gradual(
            dense, gplan, trainer=tune, epochs=cfg["gradual"]), cfg["gradual"]),
        ("iterative", "global", lambda: workflows.iterative(
            dense, gplan_constant, trainer=tune, rounds=cfg["rounds"],
            epochs_per_round=cfg["epochs_per_round"], ladder=cfg["ladder"]),
         cfg["rounds"] * cfg["epochs_per_round"]),
        ("rewind to init", "global", lambda: workflows.rewind(
            init_copy, gplan_rewind, trainer=base, epochs=cfg["rewind"], to="init"),
         2 * cfg["rewind"]),
    ]
    if cfg.get("control"):
        log(f"{name}: control: the dense model trained {cfg['gradual']} more epoch(s)")
        started = time.perf_counter()
        control = copy_model(dense)
        tune.fit(control, cfg["gradual"])
        row = measure(CONTROL, "-", control, test, started, epochs=cfg["gradual"],
                      note="control: dense, as many more epochs as gradual, same learning "
                           "rate", dense_error=dense_error)
        rows.append(dict(row, met=None))
        log(f"{name}: control error {row['error_pct']:.2f}% ({row['delta_pp']:+.2f} pp)")
    for workflow, plan_name, call, epochs in runs:
        log(f"{name}: {workflow} ({plan_name}), {epochs} epoch(s)")
        started = time.perf_counter()
        result = call()
        row = measure(workflow, plan_name, result.model, test, started, epochs=epochs,
                      note=result.note, dense_error=dense_error)
        row["history"] = [_slim(record) for record in result.history]
        rows.append(row)
        log(f"{name}: {workflow} ({plan_name}): {row['nonzero']:,} non-zero, "
             f"{row['x_fewer']:.1f}x, error {row['error_pct']:.2f}% "
             f"({row['delta_pp']:+.2f} pp) in {row['seconds']:.0f}s")
    add_control_deltas(rows)
    return {"params": rows[0]["params"], "dense_error_pct": dense_error,
            "allocation": allocation.to_dict(), "rows": rows}


def combine_repeats(runs, *, seeds):
    """One network's repeats as one table: medians, and the range of the error deltas.

    ``runs`` are :func:`run_network` results over the same workflows; the per-run rows
    (with their histories) stay under ``"runs"``. A row meets the target when its median
    compression is >= 12x and its median delta against the dense baseline <= +0.1 pp.
    """
    import statistics

    rows = []
    for repeats in zip(*(run["rows"] for run in runs)):
        first = repeats[0]

        def median(key, repeats=repeats):
            values = [r[key] for r in repeats]
            return None if None in values else statistics.median(values)

        deltas = [r["delta_pp"] for r in repeats]
        row = {key: first[key] for key in ("workflow", "plan", "epochs", "params", "note")}
        row.update(
            nonzero=round(median("nonzero")), x_fewer=median("x_fewer"),
            error_pct=median("error_pct"), delta_pp=median("delta_pp"),
            delta_pp_range=[min(deltas), max(deltas)],
            delta_control_pp=median("delta_control_pp"),
            kept_per_layer={layer: statistics.median(r["kept_per_layer"][layer] for r in repeats)
                            for layer in first["kept_per_layer"]},
            seconds=median("seconds"),
        )
        row["met"] = None if first["met"] is None else bool(
            row["x_fewer"] >= TARGET_X and row["delta_pp"] <= TARGET_PP + 1e-9)
        rows.append(row)
    return {"params": runs[0]["params"], "seeds": seeds,
            "dense_error_pct": statistics.median(run["dense_error_pct"] for run in runs),
            "allocation": runs[0]["allocation"], "rows": rows,
            "runs": [dict(run, seed=seed) for run, seed in zip(runs, seeds)]}


def add_control_deltas(rows):
    """Set each row's ``delta_control_pp``: its test error minus the control's (None without one).

    The control is the dense model trained as many more epochs as the gradual workflow, so
    this delta separates the effect of pruning from that of the extra training.
    """
    control = next((r["error_pct"] for r in rows if r["workflow"] == CONTROL), None)
    for row in rows:
        row["delta_control_pp"] = None if control is None else row["error_pct"] - control
    return rows


def measure(workflow, plan_name, model, test, started, *, epochs, note="", dense_error=None):
    """Non-zero parameters (biases included), compression and test error of ``model``."""
    import numpy as np

    from kprune.engines.verify import sparsity_report
    from kprune.methods.workflows import accuracy

    weights = model.get_weights()
    params = int(sum(w.size for w in weights))
    nonzero = int(sum(np.count_nonzero(w) for w in weights))
    report = sparsity_report(model)
    error = 100.0 * (1.0 - accuracy(model, *test, batch_size=1000))
    return {
        "workflow": workflow,
        "plan": plan_name,
        "epochs": epochs,
        "params": params,
        "nonzero": nonzero,
        "x_fewer": params / nonzero,
        "error_pct": error,
        "delta_pp": 0.0 if dense_error is None else error - dense_error,
        "kept_per_layer": {row.name: row.nonzero / row.weights for row in report.rows},
        "met": None if dense_error is None else bool(
            params / nonzero >= TARGET_X and error - dense_error <= TARGET_PP + 1e-9),
        "seconds": round(time.perf_counter() - started, 1),
        "note": note,
    }


def _slim(record):
    return {"stage": record.stage, "round": record.round, "epoch": record.epoch,
            "overall": round(record.overall, 4),
            "val_accuracy": None if record.val_accuracy is None
            else round(record.val_accuracy, 4)}


# -- report -----------------------------------------------------------------------


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    env, mach, data = results["versions"], results["machine"], results["data"]
    runs = ", ".join(f"{name}: {n} run{'s' if n > 1 else ''}"
                     for name, n in results["repeats"].items())
    lines = [
        f"Measured {results['date']} in **{results['mode']}** mode: "
        f"{data['train']:,} train / {data['validation']:,} validation (held out of the "
        f"training set) / {data['test']:,} test images, batch {results['batch_size']}, "
        f"seeds from {results['seed']} ({runs}), {results['seconds'] / 60:.1f} min in all. "
        f"TF {env['tensorflow']}, tf_keras {env['tf_keras']}, tfmot {env['tfmot']}, "
        f"Python {env['python']}; {mach['platform']}, {mach['cpu_count']} usable CPU(s).",
        "",
        "| network | workflow | plan | epochs | non-zero / params | x fewer | test error % "
        "| Δ pp vs dense [range] | Δ pp vs control | kept per layer % | target met |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|:---:|",
    ]
    for name, net in results["networks"].items():
        han = HAN[name]
        for row in net["rows"]:
            kept = ", ".join(f"{100 * v:.0f}" for v in row["kept_per_layer"].values())
            met = "–" if row["met"] is None else ("**yes**" if row["met"] else "no")
            vs_control = ("–" if row.get("delta_control_pp") is None
                          else f"{row['delta_control_pp']:+.2f}")
            low, high = row["delta_pp_range"]
            spread = f" [{low:+.2f}, {high:+.2f}]" if len(net["seeds"]) > 1 and low != high else ""
            lines.append(
                f"| {name} | {row['workflow']} | {row['plan']} | {row['epochs']} | "
                f"{row['nonzero']:,} / {row['params']:,} | {row['x_fewer']:.1f} | "
                f"{row['error_pct']:.2f} | {row['delta_pp']:+.2f}{spread} | {vs_control} | "
                f"{kept} | {met} |"
            )
        han_kept = ", ".join(f"{100 * v:.0f}" for v in han["kept_per_layer"])
        lines.append(
            f"| {name} | *Han et al. 2015* | *per-layer, iterative* | | "
            f"*{han['kept']:,} / {han['params']:,}* | *{han['ratio']:.0f}* | "
            f"*{han['dense_error']:.2f} -> {han['pruned_error']:.2f}* | "
            f"*{han['pruned_error'] - han['dense_error']:+.2f}* | | *{han_kept}* | |"
        )
    lines += ["", "With several runs, each figure is the median over the runs and [range] the "
                  "lowest and highest delta, each run against its own dense baseline.", "",
              "Global allocation (one magnitude threshold over all kernels, on the trained "
              "dense model of the first run):", ""]
    for name, net in results["networks"].items():
        alloc = net["allocation"]
        parts = ", ".join(f"{row['name']} {100 * row['kept'] / row['weights']:.1f}%"
                          for row in alloc["layers"])
        lines.append(f"- {name}: kept {parts} (global sparsity {alloc['sparsity']:.3f}; "
                     f"Han: {', '.join(f'{100 * v:.0f}%' for v in HAN[name]['kept_per_layer'])})")
    met = {name: [r for r in net["rows"] if r["met"]] for name, net in results["networks"].items()}
    lines += ["", "Target (>= 12x fewer non-zero parameters, <= +0.1 pp test error vs the dense "
                  "baseline of the same run; medians over the runs): "
              + "; ".join(f"{name}: " + (", ".join(f"{r['workflow']} ({r['plan']})" for r in rows)
                                         if rows else "not met")
                          for name, rows in met.items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
