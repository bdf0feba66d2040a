"""kprune's records in one run: the three record recipes, block-sparse speed, pruning overhead.

Five rows, each measured on this machine and checked against its target:

- ``seed-cnn``: ``examples/seed_cnn_max_compression.yaml`` (structural removal, then fc1
  block-sparse) through :func:`kprune.experiments.runner.run_recipe`: the smallest pruned
  ``.tflite`` at least 40x smaller raw than ``dense-float.tflite`` (the dense control
  trained as many epochs), losing at most 0.2 pp test accuracy against it.
- ``lenet-300-100``, ``lenet-5``: ``examples/lenet_300_100_record.yaml`` and
  ``examples/lenet_5_record.yaml`` (read at run time; a missing file is reported and its row
  skipped): at least 50x / 150x fewer non-zero weights (kernels and biases, counted on
  ``pruned.keras`` against ``baseline.keras``), at most +0.1 pp test error over the dense
  model trained as long (the pruned float file against ``dense-float.tflite``), the recipe
  finishing in at most 20 minutes.
- ``speed``: the seed CNN without structural shrinking:
  ``examples/seed_cnn_block_sparse.yaml`` run the same way, then its
  ``pruned-sparse-int8.tflite`` (block-sparse storage) against its ``pruned-int8.tflite``
  (the same weights stored dense) in LiteRT, batch 1, one thread, interleaved rounds
  (:func:`kprune.tflite.measure.latency_rounds`): at least 1.3x faster (median of the
  within-round ratios), losing at most 0.2 pp against its dense control (``seed-cnn``'s bound).
- ``overhead``: :func:`benchmarks.pruning_overhead.run` (a pruning ``fit`` step with
  ``kprune.callbacks()`` against a dense one, interleaved rounds): at most 1.10x on the seed
  CNN, LeNet-5 and MobileNetV2 reported beside it.

    python -m benchmarks.records                   # every row, full MNIST
    python -m benchmarks.records --only seed-cnn   # one row; the JSON's other rows are kept
    python -m benchmarks.records --quick           # 1,000 images, one epoch per stage

Writes one results JSON (``--out``; default ``benchmarks/results/records.json``) whose rows
each carry their own timestamp, seed, seconds, versions and machine (``--only`` replaces that
row and keeps the others), the run folders (``--work``; default ``runs/records``), and in
full mode the headline table into the top-level ``README.md`` between the ``records``
markers, beside the published figures. The recipe rows use each recipe's own ``seed``;
``--seed`` seeds the overhead row.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import pruning_overhead
from benchmarks._common import REPO, add_standard_options, environment, log, output_paths, publish

DEFAULT_OUT = REPO / "benchmarks" / "results" / "records.json"
HEADLINE_README = REPO / "README.md"
MARKERS = ("<!-- records:begin -->", "<!-- records:end -->")
EXAMPLES = REPO / "examples"
ROWS = ("seed-cnn", "lenet-300-100", "lenet-5", "speed", "overhead")
RECIPES = {"seed-cnn": "seed_cnn_max_compression.yaml",
           "lenet-300-100": "lenet_300_100_record.yaml",
           "lenet-5": "lenet_5_record.yaml",
           "speed": "seed_cnn_block_sparse.yaml"}
#: What each row must reach.
TARGETS = {
    "seed-cnn": {"min_x_smaller_raw": 40.0, "max_loss_pp": 0.2},
    "lenet-300-100": {"min_x_fewer_nonzero": 50.0, "max_error_increase_pp": 0.1,
                      "max_seconds": 1200},
    "lenet-5": {"min_x_fewer_nonzero": 150.0, "max_error_increase_pp": 0.1,
                "max_seconds": 1200},
    "speed": {"min_x_faster": 1.3, "max_loss_pp": 0.2},
    "overhead": {"max_ratio": pruning_overhead.TARGET},
}
#: Published figures beside each row (MNIST; from the papers' tables).
PUBLISHED = {
    "seed-cnn": "Deep Compression 40x (LeNet-300-100) / 39x (LeNet-5) storage",
    "lenet-300-100": "Han 12x; DNS 56x; Sparse VD 68x",
    "lenet-5": "Han 12x; DNS 111x; Sparse VD 280x",
    "speed": "tfmot: 1.4x on a Pixel 4 (XNNPACK), none on x86",
    "overhead": "",
}
TITLES = {"seed-cnn": "Seed CNN, smallest `.tflite`", "lenet-300-100": "LeNet-300-100",
          "lenet-5": "LeNet-5", "speed": "Seed CNN, block-sparse int8 speed",
          "overhead": "Pruning `fit` overhead"}
SPEED_FILES = {"pruned/int8": "pruned-int8.tflite",
               "pruned/sparse-int8": "pruned-sparse-int8.tflite",
               "dense/float": "dense-float.tflite"}
FULL = {"subset": None, "speed_rounds": 15, "speed_repeats": 200, "overhead": None}
#: Quick: a few thousand images and one epoch per stage, few latency rounds, the overhead
#: of the seed CNN alone in one round (a smoke test of every row).
QUICK = {"subset": {"train": 1000, "test": 300}, "speed_rounds": 2, "speed_repeats": 5,
         "overhead": {"models": ["seed-cnn"], "n_train": 128, "rounds": 1, "epoch_rounds": 1}}
SHARED = ("This 2-core machine is shared with other agents running tests and benchmarks "
          "while this one measures: timings are slower and noisier than on an idle machine.")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.records",
                                     description=__doc__.split("\n\n")[0])
    add_standard_options(parser, quick_help="1,000 training images, one epoch per stage, few "
                                            "rounds (a smoke test)", default_out=DEFAULT_OUT)
    parser.add_argument("--only", choices=ROWS, action="append",
                        help="run only this row (repeatable); the JSON keeps the others")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "records",
                        help="folder for the run folders (default: runs/records)")
    parser.add_argument("--repeat-seeds", type=int, nargs="+", default=(), metavar="SEED",
                        help="also run the recipe rows with these seeds (a row is met only "
                             "if every seed's run is)")
    parser.add_argument("--from-runs", action="store_true",
                        help="read the recipe rows' figures again from their run folders "
                             "(no training; timings kept), e.g. after a new figure is added")
    return parser


def main(argv=None):
    """Run the rows; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="records", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    if readme is not None and args.readme is None:
        readme = HEADLINE_README  # the headline table goes into the top-level README
    previous = json.loads(Path(out).read_text()) if Path(out).is_file() else {}
    rows = run(data_dir=args.data, work=args.work, seed=args.seed, quick=args.quick,
               only=args.only, previous=previous.get("rows", {}),
               repeat_seeds=args.repeat_seeds, from_runs=args.from_runs)
    results = {"benchmark": "records", "updated": _now(), "rows": rows, "targets": TARGETS,
               "published": PUBLISHED}
    return publish(results, out, readme, summary=markdown_summary(results), markers=MARKERS)


def run(*, data_dir, work, seed=0, quick=False, only=None, previous=None, repeat_seeds=(),
        from_runs=False):
    """Run the ``only`` rows (all by default) and return every row, the others from
    ``previous`` (a results JSON's ``rows``); recipe rows also with ``repeat_seeds``.
    ``from_runs``: the recipe rows of ``previous`` read again from their run folders
    (:func:`reread_row`) instead of run."""
    rows = {name: row for name, row in (previous or {}).items() if name in ROWS}
    cfg = QUICK if quick else FULL
    work = Path(work)
    for name in only or ROWS:
        if from_runs:
            row = rows.get(name, {})
            if name not in RECIPES or row.get("status") != "measured":
                continue
            missing = [run["run_dir"] for run in [row, *row.get("repeats", ())]
                       if not (_run_folder(run) / "report.json").is_file()]
            if missing:
                log(f"row {name}: kept as it was, its run folders are not here: {missing}")
                continue
            log(f"row {name}: figures read again from its run folders")
            rows[name] = reread_row(name, row, data_dir=data_dir, cfg=cfg)
            continue
        log(f"row {name}")
        started = time.perf_counter()
        if name in RECIPES:
            row = recipe_row(name, work, data_dir=data_dir, cfg=cfg, repeat_seeds=repeat_seeds)
        else:
            row = overhead_row(data_dir=data_dir, seed=seed, quick=quick, cfg=cfg)
        row.update({"mode": "quick" if quick else "full", "created": _now(),
                    "seconds": round(time.perf_counter() - started, 1),
                    "shared_machine": SHARED, **environment()})
        rows[name] = row
        log(f"row {name}: {row['status']}" + (f", target {'met' if row['met'] else 'missed'}"
                                              if row["status"] == "measured" else
                                              f" ({row['reason']})"))
    return {name: rows[name] for name in ROWS if name in rows}


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _skipped(reason):
    log(f"skipped: {reason}")
    return {"status": "skipped", "reason": reason, "met": None}


def load_recipe(name, data_dir, *, subset=None, seed=None):
    """The row's recipe from ``examples/`` (None if the file is missing), its data the
    ``data_dir`` files, with ``seed`` if given; with ``subset`` a quick version: those
    images, one epoch per stage, two latency repeats, at most 32 int8 calibration images."""
    from kprune.experiments.recipe import Recipe

    path = EXAMPLES / RECIPES[name]
    if not path.is_file():
        return None
    recipe = Recipe.load(path, overrides={"data.source": ("--data", str(data_dir))})
    spec = recipe.to_dict()
    if seed is not None:
        spec["seed"] = seed
    if subset is None:
        return Recipe.from_dict(spec, base_dir=recipe.base_dir)
    spec["subset"] = dict(subset)
    spec["baseline"]["epochs"] = min(spec["baseline"]["epochs"], 1)
    spec["workflow"]["epochs"] = 1
    spec["structural"]["fine_tune_epochs"] = min(spec["structural"]["fine_tune_epochs"], 1)
    spec["export"]["latency_repeats"] = 2
    spec["export"]["calibration_samples"] = min(spec["export"]["calibration_samples"], 32)
    return Recipe.from_dict(spec, base_dir=recipe.base_dir)


def recipe_row(name, work, *, data_dir, cfg, repeat_seeds=()):
    """Run one record recipe through ``run_recipe``; its figures read from the run folder.

    With ``repeat_seeds`` the recipe runs again with each (into ``NAME-seedS``): their
    figures go under ``repeats`` and the row is met only if every run is.
    """
    from kprune.experiments.recipe import RecipeError
    from kprune.experiments.runner import run_recipe

    try:
        recipe = load_recipe(name, data_dir, subset=cfg["subset"])
    except RecipeError as err:
        return _skipped(f"examples/{RECIPES[name]} does not load: {err}")
    if recipe is None:
        return _skipped(f"examples/{RECIPES[name]} does not exist (yet)")
    started = time.perf_counter()
    run_recipe(recipe, work / name, force=True, log=log)
    seconds = time.perf_counter() - started
    row = {"status": "measured", "recipe": f"examples/{RECIPES[name]}",
           "command": f"kprune run examples/{RECIPES[name]} --data ../shared/data/mnist "
                      f"--out runs/{name}",
           "seed": recipe.seed, "run_dir": str(work / name), "recipe_seconds": round(seconds, 1),
           **run_figures(work / name, test=test_split(recipe))}
    if name == "speed":
        row.update(speed_figures(work / name, cfg=cfg))
    row["met"] = _met(name, row, seconds)
    repeats = []
    for seed in repeat_seeds:
        if seed == recipe.seed:
            continue
        log(f"row {name}, seed {seed}")
        folder = work / f"{name}-seed{seed}"
        started = time.perf_counter()
        again_recipe = load_recipe(name, data_dir, subset=cfg["subset"], seed=seed)
        run_recipe(again_recipe, folder, force=True, log=log)
        again = {"seed": seed, "run_dir": str(folder),
                 "recipe_seconds": round(time.perf_counter() - started, 1),
                 **run_figures(folder, test=test_split(again_recipe))}
        if name == "speed":
            again.update(speed_figures(folder, cfg=cfg))
        again["met"] = _met(name, again, again["recipe_seconds"])
        repeats.append(again)
    if repeats:
        row["repeats"] = repeats
        row["met"] = bool(row["met"] and all(again["met"] for again in repeats))
    return row


def reread_row(name, row, *, data_dir, cfg):
    """``row`` (from a previous results JSON) with its figures read again from its run
    folders, every seed's: no training, its timings and latencies kept."""
    runs = [row, *row.get("repeats", ())]
    for run in runs:
        test = test_split(load_recipe(name, data_dir, subset=cfg["subset"], seed=run["seed"]))
        run.update(run_figures(_run_folder(run), test=test))
        run["met"] = _met(name, run, run["recipe_seconds"])
    row["met"] = all(run["met"] for run in runs)
    row["figures_read_again"] = _now()
    return row


def _run_folder(run):
    folder = Path(run["run_dir"])
    return folder if folder.is_absolute() else REPO / folder


def _met(name, row, seconds):
    """Whether a measured recipe row reached its target (always against the dense model
    trained as long)."""
    target = TARGETS[name]
    if not row["trained_as_long"]:
        return False
    if name in ("seed-cnn", "speed"):
        best = row["smallest"]
        ok = best["accuracy_delta_pp"] >= -target["max_loss_pp"]
        if name == "seed-cnn":
            return bool(ok and best["x_smaller_raw"] >= target["min_x_smaller_raw"])
        return bool(ok and row["x_faster"] >= target["min_x_faster"])
    return bool(row["x_fewer_nonzero"] >= target["min_x_fewer_nonzero"]
                and row["error_increase_pp"] <= target["max_error_increase_pp"]
                and seconds <= target["max_seconds"])


def run_figures(run_dir, *, test=None):
    """What a finished run folder shows: bytes and block-sparse tensors read from the
    ``.tflite`` files; accuracies (LiteRT, test split) and weights (non-zeros counted on
    the dense control and the pruned Keras models) from ``report.json``; with ``test``
    (the run's test images and labels) the error gap's standard error (:func:`paired_gap`)."""
    from kprune.tflite import flatbuffer, measure

    run_dir = Path(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    rows = {row["name"]: row for row in report["variants"]}
    dense = rows["dense/float"]
    dense_bytes = measure.file_sizes(run_dir / "dense-float.tflite")
    files = {}
    for row in report["variants"]:
        if row["group"] != "pruned":
            continue
        path = run_dir / Path(row["path"]).name
        sizes = measure.file_sizes(path)
        info = flatbuffer.tflite_tensors(path)
        files[row["name"]] = {
            "file": path.name, **sizes, "accuracy": row["accuracy"],
            "accuracy_delta_pp": (row["accuracy"] - dense["accuracy"]) * 100,
            "x_smaller_raw": dense_bytes["bytes"] / sizes["bytes"],
            "x_smaller_gzip": dense_bytes["gzip_bytes"] / sizes["gzip_bytes"],
            "block_sparse": [{"shape": list(t.shape), "block_size": list(t.block_size)}
                             for t in info.block_sparse]}
    smallest = min(files, key=lambda name: files[name]["bytes"])
    pruned = rows[smallest]
    counts = {"baseline": {key: dense[key] for key in ("params", "nonzero_params")},
              "pruned": {key: pruned[key] for key in ("params", "nonzero_params")}}
    reference = files.get("pruned/float") or files[smallest]
    epochs = report["extra"].get("epochs", {})
    paired = {}
    if test is not None:
        paired = {"paired": paired_gap(run_dir, reference["file"], test)}
        if abs(paired["paired"]["error_increase_pp"] + reference["accuracy_delta_pp"]) > 1e-6:
            raise RuntimeError(f"{run_dir}: the test split read again does not give the "
                               "report's accuracies; the gap's standard error would be wrong")
    return {**paired,
        "dense": {"file": "dense-float.tflite", **dense_bytes, "accuracy": dense["accuracy"]},
        "files": files,
        "smallest": {"name": smallest, **files[smallest]},
        "params": counts,
        "x_fewer_nonzero": counts["baseline"]["params"] / counts["pruned"]["nonzero_params"],
        "error_increase_pp": -reference["accuracy_delta_pp"],
        "epochs": epochs,
        "trained_as_long": epochs.get("dense_after_baseline", -1)
        >= epochs.get("pruned_after_baseline", 0),
        "test_samples": report["test_samples"],
    }


def test_split(recipe):
    """The test images and labels of ``recipe``'s run, loaded as ``kprune run`` loads them."""
    from kprune.experiments.sources import load_data

    data = load_data(recipe.data_source(), scale=recipe.data.scale,
                     image_size=recipe.data.image_size, test_split=recipe.data.test_split,
                     seed=recipe.seed, verbose=False)
    data = data.subset(recipe.subset.train, recipe.subset.test, seed=recipe.seed)
    return data.x_test, data.y_test


def paired_gap(run_dir, reference, test):
    """How far the error gap between ``dense-float.tflite`` and the ``reference`` file of a
    run folder can be trusted: both files run on ``test``; the gap is the mean of the
    per-image differences (wrong in one, right in the other), its standard error theirs.

    Example:
        >>> paired_gap("runs/records/lenet-5", "pruned-float.tflite", (x_test, y_test))
        {'error_increase_pp': 0.28, 'standard_error_pp': 0.09, 'only_dense_wrong': 31, ...}
    """
    from kprune.tflite import measure

    x, y = test
    wrong = {}
    for file in ("dense-float.tflite", reference):
        path = Path(run_dir) / file
        shape = measure.load_interpreter(path).get_input_details()[0]["shape"][1:]
        scores = measure.predict_tflite(path, x.reshape((len(x), *shape)))
        wrong[file] = scores.argmax(axis=1) != y
    return paired_difference(wrong[reference], wrong["dense-float.tflite"])


def paired_difference(wrong_a, wrong_b):
    """The error of ``a`` minus that of ``b`` (in pp) on the same images, with its standard
    error from the images where exactly one of them is wrong.

    Example:
        >>> paired_difference(np.array([1, 0, 0, 0]), np.array([0, 0, 0, 0]))["error_increase_pp"]
        25.0
    """
    import numpy as np

    wrong_a, wrong_b = np.asarray(wrong_a, bool), np.asarray(wrong_b, bool)
    n = len(wrong_a)
    only_a, only_b = int(np.sum(wrong_a & ~wrong_b)), int(np.sum(wrong_b & ~wrong_a))
    mean = (only_a - only_b) / n
    variance = (only_a + only_b) / n - mean**2  # of the per-image differences in {-1, 0, 1}
    return {"error_increase_pp": 100 * mean,
            "standard_error_pp": 100 * float(np.sqrt(variance / n)),
            "only_pruned_wrong": only_a, "only_dense_wrong": only_b, "images": n}


def speed_figures(run_dir, *, cfg):
    """Block-sparse int8 against the same weights stored dense (and the dense float file),
    from a finished run folder, in interleaved rounds."""
    from kprune.tflite import measure

    latency = measure.latency_rounds({name: Path(run_dir) / file
                                      for name, file in SPEED_FILES.items()},
                                     baseline="pruned/int8", rounds=cfg["speed_rounds"],
                                     repeats=cfg["speed_repeats"])
    block = latency["files"]["pruned/sparse-int8"]
    return {"latency": latency, "x_faster": block["x_faster"],
            "x_faster_range": block["x_faster_range"]}


def overhead_row(*, data_dir, seed, quick, cfg):
    """``benchmarks.pruning_overhead`` as it runs on its own (quick: the seed CNN, 1 round)."""
    results = pruning_overhead.run(data_dir=data_dir, seed=seed, quick=quick,
                                   settings=cfg["overhead"])
    for key in ("versions", "machine", "seconds"):  # the row carries its own
        results.pop(key, None)
    target = results["target"]
    return {"status": "measured", "seed": seed, "ratio": target["ratio"],
            "ratio_range": results["models"][target["model"]]["kprune_vs_dense"]["ratio_range"],
            "met": target["met"], "pruning_overhead": results}


def _cell(row, name):
    """The measured column of a row."""
    if row is None:
        return "not run yet"
    if row["status"] != "measured":
        return f"not run: {row['reason']}"
    return _main_cell(row, name) + "".join(
        f"; seed {again['seed']}: " + _main_cell(again, name) for again in row.get("repeats", ()))


def _main_cell(row, name):
    if name == "speed":
        low, high = row["x_faster_range"]
        ms = row["latency"]["files"]
        best = row["smallest"]
        return (f"{row['x_faster']:.2f}x [{low:.2f}, {high:.2f}] faster than int8 stored dense "
                f"({ms['pruned/sparse-int8']['median_ms']:.3f} vs "
                f"{ms['pruned/int8']['median_ms']:.3f} ms); {best['accuracy'] * 100:.2f} % vs "
                f"{row['dense']['accuracy'] * 100:.2f} % dense ({best['accuracy_delta_pp']:+.2f} pp)")
    if name == "seed-cnn":
        best = row["smallest"]
        return (f"{best['x_smaller_raw']:.1f}x raw, {best['x_smaller_gzip']:.1f}x gzip "
                f"(`{best['file']}`, {best['bytes']:,} bytes); {best['accuracy'] * 100:.2f} % vs "
                f"{row['dense']['accuracy'] * 100:.2f} % dense ({best['accuracy_delta_pp']:+.2f} pp)")
    if name in RECIPES:
        paired = row.get("paired")
        spread = "" if paired is None else f" ± {paired['standard_error_pp']:.2f}"
        return (f"{row['x_fewer_nonzero']:.1f}x fewer non-zeros; error "
                f"{row['error_increase_pp']:+.2f}{spread} pp; "
                f"{row['recipe_seconds'] / 60:.1f} min")
    models = row["pruning_overhead"]["models"]
    others = ", ".join(f"{model} {models[model]['kprune_vs_dense']['ratio']:.2f}x"
                       for model in models if model != "seed-cnn")
    low, high = row["ratio_range"]
    return f"{row['ratio']:.2f}x [{low:.2f}, {high:.2f}] a dense step" + (
        f" ({others})" if others else "")


def _target_text(name):
    target = TARGETS[name]
    if name == "seed-cnn":
        return (f">= {target['min_x_smaller_raw']:.0f}x smaller raw, <= "
                f"{target['max_loss_pp']} pp loss")
    if name == "speed":
        return (f">= {target['min_x_faster']}x faster than int8 stored dense, <= "
                f"{target['max_loss_pp']} pp loss")
    if name in RECIPES:
        return (f">= {target['min_x_fewer_nonzero']:.0f}x fewer non-zeros, <= "
                f"+{target['max_error_increase_pp']} pp error, <= "
                f"{target['max_seconds'] // 60} min")
    return f"<= {target['max_ratio']:.2f}x a dense step"


def markdown_summary(results):
    """The headline table (and how each row was measured) for the top-level README."""
    rows = results["rows"]
    lines = ["| record | target | measured here | published | |",
             "|---|---|---|---|---|"]
    for name in ROWS:
        row = rows.get(name)
        verdict = ("" if row is None or row["status"] != "measured"
                   else "**met**" if row["met"] else "**missed**")
        lines.append(f"| {TITLES[name]} | {_target_text(name)} | {_cell(row, name)} | "
                     f"{PUBLISHED[name]} | {verdict} |")
    lines.append("")
    for name in ROWS:
        row = rows.get(name)
        if row is None or row["status"] != "measured":
            continue
        seeds = ", ".join(str(run["seed"]) for run in [row, *row.get("repeats", ())])
        how = (f"`{row['command']}` (seed{'s' if row.get('repeats') else ''} {seeds}, "
               f"{row['test_samples']:,} test images)"
               + (f", then LiteRT at batch 1, one thread, {row['latency']['rounds']} "
                  f"interleaved rounds of {row['latency']['repeats']} runs"
                  if name == "speed" else "")
               if name in RECIPES else
               "`python -m benchmarks.pruning_overhead`'s measurement, "
               f"{row['pruning_overhead']['settings']['rounds']} interleaved rounds, load "
               f"average {row['pruning_overhead']['load_average']['before'][0]:.2f} before and "
               f"{row['pruning_overhead']['load_average']['after'][0]:.2f} after")
        lines.append(f"- {TITLES[name]}: {how}; {row['mode']} mode, {row['created']}, "
                     f"{row['seconds'] / 60:.1f} min, {row['machine']['cpus_usable']} CPUs "
                     "shared with other jobs.")
    if any("paired" in (rows.get(name) or {}) for name in RECIPES):
        lines += ["", "± is the standard error of an error gap, from the test images that "
                  "exactly one of the two models (pruned/float, dense/float) gets wrong: "
                  "a gap within about two of them of the target is not told apart from it "
                  "by one run."]
    lines += ["", "`python -m benchmarks.records` (`--only ROW` for one row; "
              "`benchmarks/results/records.json`)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
