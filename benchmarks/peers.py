"""Side by side with the peers: tfmot, Torch-Pruning and llm-compressor on the same models,
data and budgets.

Part 1, **tfmot on its own ground** (tf_keras, the seed CNN, MNIST). One dense baseline is
trained, then fine-tuned from it with the same data order, epochs, rate and batch by:

- ``tfmot``: tfmot's documented recipe called directly (``prune_low_magnitude`` on the
  whole model, ``PolynomialDecay`` 50 % -> 80 %, ``UpdatePruningStep``, ``strip_pruning``;
  converted with ``tf.lite.TFLiteConverter`` directly);
- ``kprune-default``: ``PruningPlan.default()`` (conv1 50 %, conv2 and fc1 2:4, head dense);
- ``kprune-80``: ``PruningPlan.uniform(0.8)`` (every layer but the head at 80 %);
- ``kprune-best``: kprune's recipe for the smallest file,
  ``examples/seed_cnn_max_compression.yaml``, step by step through the Python API in the
  same budget (:func:`best_recipe`): half the channels by a global MAC-weighted budget
  (``round_to`` 16), a fine-tune on the first third of the steps, then fc1 at 95 % in blocks
  of 16 inputs over the other two thirds (the recipe's 1 + 2 epochs after its baseline);
- ``dense-ft``: the dense control, fine-tuned as long.

Each is exported float, post-training int8 and int8 with sparse storage; accuracy in LiteRT
on the test images, ``.tflite`` bytes raw and gzipped, and the training step time (median
wall time between consecutive batches of the fine-tune, every callback included).

Part 2, **Torch-Pruning, structural pruning of a residual CNN** (``benchmarks/_peer_models``:
projection shortcuts, batch norm, a depthwise stage, written in tf_keras and PyTorch). It is
trained once in Keras and copied into the PyTorch twin (largest output difference recorded,
at most 1e-4). Each tool removes channels with its global magnitude criterion until the
MACs drop by 50 % and 70 %: Torch-Pruning's ``MetaPruner`` with
``GroupMagnitudeImportance(p=2)``, ``global_pruning=True``; kprune's
``structural.prune(scope="global", criterion="l2", cost="macs")``. Neither tool's ratio
argument is a MAC budget, so each is bisected on its own ratio to the largest model within
the budget; MACs and parameters are counted by one counter for both
(``kprune.measure.count_macs`` and ``count_params`` on the tf_keras twin of each pruned
shape). Pruning wall time is that of the final call (graph analysis included, the bisection
not). Then **both pruned models are fine-tuned in tf_keras** (Torch-Pruning's weights copied
back into a Keras twin of its shape), and the dense control beside them, with the same
epochs, Adam rate, batch and data order, once per ``--seeds``: LiteRT accuracy, mean and
standard deviation over seeds. Before fine-tuning, accuracy with the batch norms as pruned
and recalibrated on 1,024 training images (``recalibrate_batch_norm``; Keras evaluation).
Latency at batch 1 on one thread in interleaved rounds: LiteRT (``latency_rounds``) for the
fine-tuned files of the first seed, and PyTorch eager for the PyTorch twins.

Part 3, **llm-compressor, post-training pruning of a language model**. The byte-level GPT of
``benchmarks.post_training`` (GPT-2's architecture) is trained once in Keras 3 and copied into
a ``transformers.GPT2LMHeadModel`` built from its config (``benchmarks/_peer_lm``; logits
equal to 1e-4, checked). The same calibration sequences go to kprune's
``prune_post_training`` and to llm-compressor's ``oneshot`` (``SparseGPTModifier`` /
``WandaPruningModifier``, every ``Linear`` but ``lm_head``: the attention projections and the
FFN, as kprune prunes every ``Dense`` but the head), SparseGPT and Wanda at 50 % and 2:4.
Held-out perplexity of both results by one evaluator (llm-compressor's weights copied back
into Keras) and the wall time of each tool's call on this CPU. Nothing is downloaded: the
twin is built from a config, the calibration data go in tokenized, and oneshot's processor
is a byte tokenizer built here. ``--only llm-compressor`` runs this part alone, without
MNIST, into ``benchmarks/results/peers_llm.json`` and its own README block; ``--only tfmot``
runs part 1 alone into ``benchmarks/results/peers_tfmot.json`` and its own README block.

    python -m benchmarks.peers                 # full MNIST, 3 seeds, and the LM part
    python -m benchmarks.peers --quick         # 2,000 images, 1 seed, a tiny LM (~3 min)
    python -m benchmarks.peers --only torch-pruning --seeds 2
    python -m benchmarks.peers --only llm-compressor   # part 3 alone (~25 min on 2 cores)
    python -m benchmarks.peers --only tfmot --cnn-epochs 1 1   # part 1 alone

A peer that cannot be imported (``pip install -e ".[peers]"`` installs them) is reported as
such in the JSON and the README table, and the rest runs.
"""

import argparse
import copy
import gzip
import math
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks._common import (
    README,
    REPO,
    add_standard_options,
    elapsed,
    environment,
    log,
    output_paths,
    publish,
    replace_between_markers,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "peers.json"
BEGIN = "<!-- peers:begin -->"
END = "<!-- peers:end -->"
PARTS = ("tfmot", "torch-pruning", "llm-compressor")
MNIST_PARTS = ("tfmot", "torch-pruning")
LLM_OUT = REPO / "benchmarks" / "results" / "peers_llm.json"
LLM_BEGIN = "<!-- peers_llm:begin -->"
LLM_END = "<!-- peers_llm:end -->"
TFMOT_OUT = REPO / "benchmarks" / "results" / "peers_tfmot.json"
TFMOT_BEGIN = "<!-- peers_tfmot:begin -->"
TFMOT_END = "<!-- peers_tfmot:end -->"
BATCH_SIZE = 128
FINE_TUNE_LR = 2e-4   # part 1, as in export_sizes
STRUCT_LR = 1e-3      # part 2 fine-tune
BUDGETS = (0.5, 0.7)  # fraction of the dense MACs removed
TRANSFER_TOLERANCE = 1e-4
LATENCY_TOLERANCE = 0.02  # kprune's LiteRT latency "as low" within 2 % (shared machine)
ACCURACY_TOLERANCE = 0.001  # part 1: "the same accuracy" as tfmot, within 0.1 pp
NOT_DONE = {}
BEST_TARGET = "kprune's best recipe"
#: the front README's "Compared with other tools" table, rewritten by a full run of all parts
FRONT_README = REPO / "README.md"
COMPARED_BEGIN = "<!-- peers_compared:begin -->"
COMPARED_END = "<!-- peers_compared:end -->"
#: part 1's kprune-best row: kprune's recipe for the smallest seed-CNN file
BEST_RECIPE = REPO / "examples" / "seed_cnn_max_compression.yaml"

FULL = dict(n_train=None, n_test=None, cnn="seed-cnn", cnn_epochs=2, cnn_tune_epochs=2,
            res_epochs=4, budgets=BUDGETS,
            res_tune_epochs=2, calibration=200, bisect_steps=14, rounds=9, repeats=100,
            warmup=10, torch_repeats=100, exports=("float", "int8", "sparse-int8"),
            lm=None)  # part 3: post_training's full LM (filled in below)
#: --quick: the 50 % budget only; part 1 on LeNet-5 (431 k parameters), the smallest built-in
#: model with the layers kprune-best's seed-CNN recipe names (conv1, conv2, fc1, head)
QUICK = dict(n_train=2000, n_test=500, cnn="lenet-5", cnn_epochs=1, cnn_tune_epochs=1,
             res_epochs=1, budgets=(0.5,),
             res_tune_epochs=1, calibration=50, bisect_steps=6, rounds=2, repeats=5,
             warmup=2, torch_repeats=5, exports=("int8",),
             lm=None)  # part 3: post_training's quick LM


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="kprune beside tfmot, Torch-Pruning and llm-compressor on the same "
                    "models, data and budgets.")
    add_standard_options(parser, quick_help="2,000 training images, 1 epoch each, int8 "
                         "only, short latency (a smoke test)", default_out=DEFAULT_OUT)
    parser.add_argument("--seeds", type=int, help="fine-tune seeds for part 2 "
                        "(default: 3; 1 with --quick)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                        help="which parts to run (default: all); tfmot alone writes "
                             "results/peers_tfmot.json, llm-compressor alone peers_llm.json")
    parser.add_argument("--cnn-epochs", type=int, nargs=2, metavar=("DENSE", "TUNE"),
                        help="part 1: epochs of the dense baseline and of every fine-tune "
                             "(default: 2 2; 1 1 with --quick)")
    parser.add_argument("--res-epochs", type=int, nargs=2, metavar=("DENSE", "TUNE"),
                        help="part 2: epochs of the dense residual CNN and of every "
                             "fine-tune (default: 4 2; 1 1 with --quick)")
    parser.add_argument("--lm-steps", type=int,
                        help="part 3: training steps of the byte LM (default: post_training's, "
                             "3,000; 60 with --quick)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "peers",
                        help="folder for the .tflite files")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if seeds < 1:
        print(f"error: --seeds must be at least 1. Received: --seeds {seeds}", file=sys.stderr)
        return 2
    paths = outputs(args)
    if paths is None:
        return 2
    out, readme, markers = paths
    if args.lm_steps is not None and args.lm_steps < 1:
        print(f"error: --lm-steps must be at least 1. Received: {args.lm_steps}",
              file=sys.stderr)
        return 2
    for option in (args.cnn_epochs, args.res_epochs):
        if option is not None and min(option) < 1:
            print(f"error: epochs must be at least 1. Received: {option}", file=sys.stderr)
            return 2
    epochs = {}
    if args.cnn_epochs:
        epochs.update(cnn_epochs=args.cnn_epochs[0], cnn_tune_epochs=args.cnn_epochs[1])
    if args.res_epochs:
        epochs.update(res_epochs=args.res_epochs[0], res_tune_epochs=args.res_epochs[1])
    if args.lm_steps:
        epochs.update(lm_steps=args.lm_steps)
    results = run(data_dir=args.data, work=args.work, seed=args.seed, seeds=seeds,
                  quick=args.quick, parts=args.only, overrides=epochs)
    code = publish(results, out, readme, summary=markdown_summary(results), markers=markers)
    if readme is not None and not args.readme and set(args.only) == set(PARTS):
        replace_between_markers(FRONT_README, COMPARED_BEGIN, COMPARED_END,
                                compared_table(results))
        print(f"comparison table written into {FRONT_README}")
    return code


def compared_table(results):
    """The front README's one table, from a run of all three parts: kprune and each peer on
    the same work, whether kprune met the target, and the command of each row.

    Example:
        >>> results = json.loads(Path("benchmarks/results/peers.json").read_text())
        >>> print(compared_table(results))  # a markdown table
    """
    versions, cfg = results["versions"], results["settings"]
    tfmot = {(r["row"], r["variant"]): r for r in results["tfmot"]["rows"]}
    residual = {r["row"]: r for r in results["torch_pruning"]["rows"]}

    def met(*prefixes):
        found = [t["met"] for t in results["targets"] for p in prefixes
                 if t["target"].startswith(p)]
        return " / ".join("**yes**" if m else "no" for m in found)

    def size(row):
        return f"{100 * row['accuracy']:.2f} %, {row['gzip_bytes']:,} B"

    def fine_tuned(row):
        return (f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f} %, "
                f"{row['litert']['median_ms']:.4f} ms")

    run_all = "`python -m benchmarks.peers`"
    lines = [
        f"| same work for both tools | measured | kprune {versions.get('kprune')} | peer | "
        "kprune met the target | part alone |",
        "|---|---|---|---|:---:|---|",
        f"| seed CNN, 80 % of the weights, int8 | LiteRT accuracy, gzipped file | "
        f"{size(tfmot['kprune-80', 'int8'])} (`uniform(0.8)`) | tfmot {versions.get('tfmot')}: "
        f"{size(tfmot['tfmot', 'int8'])} | {met('kprune at 80 %')} (as accurate) | "
        "`--only tfmot` |",
        f"| seed CNN, smallest file | LiteRT accuracy, gzipped file | "
        f"{size(tfmot['kprune-best', 'sparse-int8'])} (best recipe, sparse-int8) | tfmot: "
        f"{size(tfmot['tfmot', 'int8'])} (int8) | {met(BEST_TARGET)} "
        "(smaller, as accurate) | `--only tfmot` |",
    ]
    for budget in cfg["budgets"]:
        pct = round(100 * budget)
        lines.append(
            f"| residual CNN, {pct} % fewer MACs, fine-tuned | accuracy over "
            f"{results['seeds']} seeds, LiteRT latency | {fine_tuned(residual[f'kprune-{pct}'])} "
            f"| Torch-Pruning {versions.get('torch_pruning')}: "
            f"{fine_tuned(residual[f'torch-pruning-{pct}'])} | "
            f"{met(f'{pct} % fewer MACs: kprune accuracy', f'{pct} % fewer MACs: kprune LiteRT')}"
            " (accuracy / latency) | `--only torch-pruning` |")
    for row in results["llm_compressor"]["rows"]:
        ours, peer = row["kprune"], row["llm_compressor"]
        work = f"{row['plan']} {row['method']}"
        lines.append(
            f"| byte-level GPT, {work} | held-out perplexity, pruning time | "
            f"{ours['perplexity']:.3f}, {ours['seconds']:.1f} s | llm-compressor "
            f"{versions.get('llmcompressor')}: {peer['perplexity']:.3f}, "
            f"{peer['seconds']:.1f} s | {met(f'LM, {work}:')} (perplexity / time) | "
            "`--only llm-compressor` |")
    return "\n".join([
        f"Measured {results['date'][:10]} in one run of all three parts ({run_all}, "
        f"{results['seconds'] / 60:.0f} min on {results['machine']['cpus_usable']} shared "
        "CPUs; `benchmarks/results/peers.json`):", "", *lines])


def outputs(args):
    """``(results JSON, README or None, README markers)`` for parsed arguments; None when
    MNIST is missing. Part 1 alone (``--only tfmot``) and part 3 alone have their own JSON
    and README block, so that a run of one part keeps the figures of the others."""
    if set(args.only) == {"tfmot"}:
        paths = output_paths(args, name="peers_tfmot", default_out=TFMOT_OUT)
        return None if paths is None else (*paths, (TFMOT_BEGIN, TFMOT_END))
    if any(part in MNIST_PARTS for part in args.only):
        paths = output_paths(args, name="peers", default_out=DEFAULT_OUT)
        return None if paths is None else (*paths, (BEGIN, END))
    out = args.out or (REPO / "runs" / "peers_llm_quick.json" if args.quick else LLM_OUT)
    readme = None if args.no_readme else (args.readme or (None if args.quick else README))
    return out, readme, (LLM_BEGIN, LLM_END)


def peer_status():
    """``{peer: {"available", "version", "why"}}``: which peers import here."""
    found = {}
    for name, module, package in (("tfmot", "tensorflow_model_optimization",
                                   "tensorflow-model-optimization"),
                                  ("torch", "torch", "torch"),
                                  ("torch_pruning", "torch_pruning", "torch-pruning"),
                                  ("transformers", "transformers", "transformers"),
                                  ("llmcompressor", "llmcompressor", "llmcompressor")):
        try:
            __import__(module)
        except Exception as err:  # ImportError, or a broken install
            found[name] = {"available": False, "version": None,
                           "why": f"{type(err).__name__}: {err} (pip install -e '.[peers]')"}
            continue
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = None
        found[name] = {"available": True, "version": version, "why": ""}
    return found


def run(*, data_dir, work, seed=0, seeds=3, quick=False, parts=PARTS, overrides=None):
    """Load MNIST, run the parts whose peers import; return the results dict.
    ``overrides`` replaces settings of the mode (epochs)."""
    from benchmarks import post_training
    from kprune import data, measure

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
    overrides = dict(overrides or {})
    cfg = dict(QUICK if quick else FULL)
    cfg["lm"] = dict(post_training.QUICK["lm"] if quick else post_training.FULL["lm"])
    if "lm_steps" in overrides:
        cfg["lm"]["steps"] = overrides.pop("lm_steps")
    cfg.update(overrides)
    status = peer_status()
    mnist, shown = None, {}
    if any(part in MNIST_PARTS for part in parts):
        (x_train, y_train), (x_test, y_test) = data.load_mnist(data_dir, verbose=False)
        if cfg["n_train"]:
            (x_train, y_train), (x_test, y_test) = data.subset(
                ((x_train, y_train), (x_test, y_test)), cfg["n_train"], cfg["n_test"],
                seed=seed)
        log(f"MNIST {len(x_train):,} train / {len(x_test):,} test")
        mnist = (x_train, y_train, x_test, y_test)
        shown = {"train": len(x_train), "test": len(x_test), "source": str(data_dir)}
    work = Path(work)
    results = {
        "benchmark": "peers",
        "mode": "quick" if quick else "full",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "seeds": seeds,
        **environment(),
        "peers": status,
        "runtime": measure.runtime_name(),
        "data": shown,
        "settings": dict(cfg, batch_size=BATCH_SIZE, fine_tune_lr=FINE_TUNE_LR,
                         struct_lr=STRUCT_LR, parts=list(parts)),
        "not_done": dict(NOT_DONE),
    }
    results["versions"].update({name: s["version"] for name, s in status.items()})
    for name, package in (("keras", "keras"), ("compressed_tensors", "compressed-tensors")):
        try:
            results["versions"][name] = metadata.version(package)
        except metadata.PackageNotFoundError:
            results["versions"][name] = None
    if "tfmot" in parts:
        if status["tfmot"]["available"]:
            results["tfmot"] = run_tfmot(cfg, mnist, work=work / "tfmot", seed=seed)
        else:
            results["tfmot"] = {"skipped": status["tfmot"]["why"]}
    if "torch-pruning" in parts:
        missing = [s["why"] for name, s in status.items()
                   if name in ("torch", "torch_pruning") and not s["available"]]
        if missing:
            log(f"Torch-Pruning part skipped: {'; '.join(missing)}")
            results["torch_pruning"] = {"skipped": "; ".join(missing)}
        else:
            results["torch_pruning"] = run_torch_pruning(cfg, mnist, work=work / "structural",
                                                         seed=seed, seeds=seeds)
    if "llm-compressor" in parts:
        missing = [status.get(name, {}).get("why") or f"{name} was not checked"
                   for name in ("torch", "transformers", "llmcompressor")
                   if not status.get(name, {}).get("available")]
        if missing:
            log(f"llm-compressor part skipped: {'; '.join(missing)}")
            results["llm_compressor"] = {"skipped": "; ".join(missing)}
        else:
            results["llm_compressor"] = run_llm_compressor(cfg, work=work / "llm", seed=seed)
    results["targets"] = check_targets(results)
    results["seconds"] = round(elapsed(), 1)
    return results


# -- shared --------------------------------------------------------------------------


def ordered(x, y, epochs, seed):
    """``epochs`` shuffled passes over ``(x, y)`` in one array: the same data order for
    every model given the same seed (fit it for one epoch with ``shuffle=False``)."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)])
    return x[order], y[order]


def step_timer():
    """A Keras callback that records the wall time between consecutive training batches."""
    from kprune.engines.tfkeras import loader

    class StepTimer(loader.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.starts = []

        def on_train_batch_begin(self, batch, logs=None):
            self.starts.append(time.perf_counter())

        def on_train_end(self, logs=None):
            self.starts.append(time.perf_counter())

        def step_ms(self):
            gaps = np.diff(self.starts[1:]) * 1e3  # the first step traces the graph
            return float(np.median(gaps)) if len(gaps) else float("nan")

    return StepTimer()


def _fit(model, x, y, callbacks=()):
    timer = step_timer()
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0,
              callbacks=[timer, *callbacks])
    return {"fit_s": time.perf_counter() - start, "step_ms": timer.step_ms(),
            "steps": math.ceil(len(x) / BATCH_SIZE)}


def _gzip_bytes(path):
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


# -- part 1: tfmot ---------------------------------------------------------------------


def tfmot_convert(model, path, variant, calibration):
    """``.tflite`` of a tfmot-stripped model with ``tf.lite.TFLiteConverter`` called directly:
    ``float``; ``int8`` (full integer, int8 input and output, ``calibration`` as the
    representative dataset); ``sparse-int8`` (the same, plus ``EXPERIMENTAL_SPARSITY``)."""
    from kprune.engines.tfkeras import loader

    tf = loader.tf
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT] + (
            [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if variant == "sparse-int8" else [])

        def representative():
            for sample in calibration:
                yield [sample[None].astype(np.float32)]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(converter.convert())
    return path


def _kernel_sparsity(model, dense_size=None):
    """Overall and per-layer kernel sparsity (zeros / size) of a stripped model. With
    ``dense_size`` (the dense model's kernel weights) the overall figure is
    1 - non-zeros / ``dense_size``: what a structural step removed counts as pruned."""
    per_layer, zeros, total = {}, 0, 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        values = np.asarray(kernel.numpy())
        per_layer[layer.name] = float((values == 0).mean())
        zeros += int((values == 0).sum())
        total += values.size
    overall = (zeros / max(total, 1) if dense_size is None
               else 1 - (total - zeros) / max(dense_size, 1))
    return {"overall": overall, **per_layer}


def _kernel_size(model):
    return sum(np.size(layer.kernel) for layer in model.layers
               if getattr(layer, "kernel", None) is not None)


def best_recipe(dense, xs, ys, recipe_path=BEST_RECIPE):
    """kprune's recipe for the smallest file (``examples/seed_cnn_max_compression.yaml``)
    applied step by step through kprune's Python API to ``dense`` (not modified), within the
    budget of one fine-tune over ``(xs, ys)`` (one pass, in that order).

    After its baseline the recipe trains ``structural.fine_tune_epochs`` + ``workflow.epochs``
    epochs (1 + 2): the budget's steps are shared in that ratio, in order: the channels go
    (``structural.prune`` with the recipe's fraction, scope, cost, criterion and round_to),
    the smaller model is fine-tuned on the first share, then ``kprune.apply`` prunes it with
    the recipe's plan on the rest, its schedules in those shares as epochs. Returns
    ``(stripped model, fit figures, notes)``.

    Example:
        >>> model, fit, notes = best_recipe(dense, xs, ys)
        >>> notes["split"]["prune_steps"]
    """
    import kprune
    from kprune import structural
    from kprune.experiments.recipe import Recipe
    from kprune.methods.trainer import compile_classifier

    recipe = Recipe.load(recipe_path)
    cut, workflow = recipe.structural, recipe.workflow
    if workflow.name != "gradual" or not cut.active or cut.when != "before":
        raise ValueError(f"benchmarks.peers applies a gradual recipe with a structural step "
                         f"before it. Received: {recipe_path} with workflow {workflow.name!r}, "
                         f"structural.when {cut.when!r}")
    steps = math.ceil(len(xs) / BATCH_SIZE)
    share = steps // (cut.fine_tune_epochs + workflow.epochs)  # steps of one recipe epoch
    tune = (steps - workflow.epochs * share) * BATCH_SIZE  # examples of the structural fine-tune
    smaller = structural.prune(dense, cut.fraction, criterion=cut.criterion, scope=cut.scope,
                               cost=cut.cost, round_to=cut.round_to, exclude=cut.exclude)
    compile_classifier(smaller, learning_rate=FINE_TUNE_LR)
    log(f"tfmot part: kprune-best: {dense.count_params():,} -> {smaller.count_params():,} "
        f"parameters ({cut.fraction:g} of the channels, {cut.scope}, {cut.cost}, round_to "
        f"{cut.round_to}), fine-tuned {math.ceil(tune / BATCH_SIZE)} steps")
    structural_fit = _fit(smaller, xs[:tune], ys[:tune])
    plan = recipe.pruning_plan()
    pruned = kprune.apply(smaller, plan, steps_per_epoch=share, epochs=workflow.epochs)
    compile_classifier(pruned, learning_rate=FINE_TUNE_LR)
    log(f"tfmot part: kprune-best: the recipe's plan over {workflow.epochs * share} steps "
        f"({workflow.epochs} x {share})")
    prune_fit = _fit(pruned, xs[tune:], ys[tune:], kprune.callbacks())
    fit = {"fit_s": structural_fit["fit_s"] + prune_fit["fit_s"],
           "step_ms": prune_fit["step_ms"], "steps": structural_fit["steps"] + prune_fit["steps"]}
    path = Path(recipe_path).resolve()
    notes = {"recipe": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
             "structural": {"fraction": cut.fraction, "scope": cut.scope, "cost": cut.cost,
                            "criterion": cut.criterion, "round_to": cut.round_to},
             "plan": plan.to_dict(), "params": smaller.count_params(),
             "split": {"structural_fine_tune_steps": structural_fit["steps"],
                       "prune_steps": prune_fit["steps"], "steps_per_recipe_epoch": share,
                       "recipe_epochs": [cut.fine_tune_epochs, workflow.epochs]},
             "structural_fine_tune_step_ms": structural_fit["step_ms"],
             "learning_rate": FINE_TUNE_LR, "recipe_learning_rate": recipe.baseline.learning_rate}
    return kprune.strip(pruned), fit, notes


def run_tfmot(cfg, mnist, *, work, seed):
    """Part 1: tfmot's recipe called directly against kprune's plans on one baseline."""
    import kprune
    from kprune import export, measure, models
    from kprune.engines.tfkeras import loader
    from kprune.engines.wrap import copy_model
    from kprune.methods.trainer import compile_classifier

    keras, tfmot = loader.keras, loader.tfmot
    x_train, y_train, x_test, y_test = mnist
    calibration = x_train[: cfg["calibration"]]
    keras.utils.set_random_seed(seed)
    dense = compile_classifier(models.build(cfg["cnn"]))
    xs, ys = ordered(x_train, y_train, cfg["cnn_epochs"], seed)
    log(f"tfmot part: {cfg['cnn']} dense baseline, {cfg['cnn_epochs']} epoch(s)")
    baseline_fit = _fit(dense, xs, ys)
    xs, ys = ordered(x_train, y_train, cfg["cnn_tune_epochs"], seed + 1)
    steps = math.ceil(len(xs) / BATCH_SIZE)
    finals, fits, notes = {"dense": dense}, {"dense": baseline_fit}, {}

    # the dense control
    keras.utils.set_random_seed(seed)
    control = compile_classifier(copy_model(dense), learning_rate=FINE_TUNE_LR)
    log("tfmot part: dense control fine-tune")
    fits["dense-ft"] = _fit(control, xs, ys)
    finals["dense-ft"] = control

    # tfmot, called directly, as its guide documents it
    frequency = 100 if steps >= 500 else max(1, steps // 5)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=steps,
        frequency=frequency)
    keras.utils.set_random_seed(seed)
    # tfmot's pruning guide wraps the trained model itself, which prunes it in place:
    # wrap a copy so that every row starts from the same weights
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(copy_model(dense),
                                                       pruning_schedule=schedule)
    compile_classifier(wrapped, learning_rate=FINE_TUNE_LR)
    log(f"tfmot part: tfmot prune_low_magnitude, PolynomialDecay 0.5 -> 0.8 over {steps} "
        f"steps, frequency {frequency}")
    fits["tfmot"] = _fit(wrapped, xs, ys, [tfmot.sparsity.keras.UpdatePruningStep()])
    finals["tfmot"] = tfmot.sparsity.keras.strip_pruning(wrapped)
    notes["tfmot"] = {"schedule": {"initial_sparsity": 0.5, "final_sparsity": 0.8,
                                   "begin_step": 0, "end_step": steps, "frequency": frequency},
                      "wrapped": "whole model (the head too), as in tfmot's guide"}

    plans = {"kprune-default": kprune.PruningPlan.default(),
             "kprune-80": kprune.PruningPlan.uniform(0.8)}
    for name, plan in plans.items():
        keras.utils.set_random_seed(seed)
        pruned = kprune.apply(dense, plan, steps_per_epoch=steps, epochs=1)
        compile_classifier(pruned, learning_rate=FINE_TUNE_LR)
        log(f"tfmot part: {name}")
        fits[name] = _fit(pruned, xs, ys, kprune.callbacks())
        finals[name] = kprune.strip(pruned)
        notes[name] = {"plan": plan.to_dict()}

    keras.utils.set_random_seed(seed)
    finals["kprune-best"], fits["kprune-best"], notes["kprune-best"] = best_recipe(dense, xs, ys)

    rows = []
    dense_size = _kernel_size(dense)
    sparsity = {name: _kernel_sparsity(model, dense_size) for name, model in finals.items()}
    for name, model in finals.items():
        variants = ("float", "int8") if name == "dense" else cfg["exports"]
        if name == "dense-ft":
            variants = ("int8",)
        for variant in variants:
            path = work / f"{name}-{variant}.tflite"
            if name == "tfmot":
                tfmot_convert(model, path, variant, calibration)
            else:
                options = {"float": {}, "int8": dict(quantize="int8"),
                           "sparse-int8": dict(quantize="int8", sparse=True)}[variant]
                export.to_tflite(model, path, representative_data=calibration,
                                 num_calibration=len(calibration), **options)
            accuracy = measure.evaluate_tflite(path, x_test, y_test)
            rows.append({"row": name, "variant": variant, "accuracy": accuracy,
                         "bytes": path.stat().st_size, "gzip_bytes": _gzip_bytes(path),
                         "kernel_sparsity": sparsity[name]["overall"],
                         "step_ms": fits[name]["step_ms"], "fit_s": fits[name]["fit_s"]})
            log(f"tfmot part: {name}/{variant}: LiteRT accuracy {accuracy:.4f}, "
                f"{rows[-1]['bytes']:,} bytes")
    dense_float = next(r for r in rows if r["row"] == "dense" and r["variant"] == "float")
    for row in rows:
        row["delta_pp"] = 100 * (row["accuracy"] - dense_float["accuracy"])
        row["x_smaller_raw"] = dense_float["bytes"] / row["bytes"]
        row["x_smaller_gzip"] = dense_float["gzip_bytes"] / row["gzip_bytes"]
    return {"model": cfg["cnn"], "params": dense.count_params(),
            "baseline_epochs": cfg["cnn_epochs"], "tune_epochs": cfg["cnn_tune_epochs"],
            "steps": steps, "fine_tune_lr": FINE_TUNE_LR,
            "sparsity": sparsity,
            "notes": notes, "rows": rows, "reference": f"dense/{dense_float['variant']}"}


# -- part 2: Torch-Pruning --------------------------------------------------------------


def bisect(macs_of, target, steps, high=0.95):
    """The ratio in [0, high] whose model has the most MACs <= ``target`` (``steps``
    halvings); ``macs_of(ratio)`` -> (MACs, model)."""
    low_ratio, best = 0.0, None
    high_ratio = high
    for _ in range(steps):
        middle = (low_ratio + high_ratio) / 2
        macs, model = macs_of(middle)
        if macs <= target:
            high_ratio, best = middle, (middle, macs, model)
        else:
            low_ratio = middle
    if best is None:
        macs, model = macs_of(high)
        best = (high, macs, model)
    return best


def tp_prune(net, ratio):
    """Torch-Pruning's global group-L2 magnitude pruning of a copy of ``net``."""
    import torch
    import torch_pruning as tp

    net = copy.deepcopy(net)
    pruner = tp.pruner.MetaPruner(
        net, torch.zeros(1, 1, 28, 28), importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=True, pruning_ratio=ratio, max_pruning_ratio=0.9,
        ignored_layers=[net.head])
    pruner.step()
    return net


def torch_latency_rounds(nets, *, baseline, rounds, repeats, warmup):
    """PyTorch eager latency at batch 1, one thread, in interleaved rounds (as
    ``kprune.measure.latency_rounds`` does for LiteRT)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    names = list(nets)
    per_round = {name: [] for name in names}
    x = torch.rand(1, 1, 28, 28)
    try:
        with torch.inference_mode():
            for index in range(rounds):
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    net = nets[name].eval()
                    for _ in range(warmup):
                        net(x)
                    times = []
                    for _ in range(repeats):
                        start = time.perf_counter()
                        net(x)
                        times.append((time.perf_counter() - start) * 1e3)
                    per_round[name].append(statistics.median(times))
    finally:
        torch.set_num_threads(threads)
    files = {}
    for name in names:
        ratios = [b / t for b, t in zip(per_round[baseline], per_round[name])]
        files[name] = {"median_ms": float(statistics.median(per_round[name])),
                       "x_faster": 1.0 if name == baseline else float(statistics.median(ratios)),
                       "x_faster_range": [float(min(ratios)), float(max(ratios))],
                       "round_medians_ms": per_round[name]}
    return {"rounds": rounds, "repeats": repeats, "warmup": warmup, "threads": 1, "batch": 1,
            "baseline": baseline, "runtime": "PyTorch eager", "files": files}


def run_torch_pruning(cfg, mnist, *, work, seed, seeds):
    """Part 2: structural pruning by kprune and Torch-Pruning to the same MAC budgets."""
    from benchmarks import _peer_models as twins
    from kprune import export, measure, structural
    from kprune.core.calibration import calibration_batches
    from kprune.engines.tfkeras import loader
    from kprune.engines.wrap import copy_model
    from kprune.methods.post_training import recalibrate_batch_norm
    from kprune.methods.trainer import compile_classifier

    keras = loader.keras
    x_train, y_train, x_test, y_test = mnist
    keras.utils.set_random_seed(seed)
    dense = compile_classifier(twins.keras_model())
    xs, ys = ordered(x_train, y_train, cfg["res_epochs"], seed)
    log(f"Torch-Pruning part: residual CNN dense, {cfg['res_epochs']} epoch(s)")
    _fit(dense, xs, ys)
    net = twins.keras_to_torch(dense)
    transfer = twins.max_difference(dense, net, x_test[:256])
    log(f"Torch-Pruning part: Keras -> PyTorch twin, largest output difference {transfer:.2e}")
    if transfer > TRANSFER_TOLERANCE:
        raise RuntimeError(f"The PyTorch twin's outputs differ from the Keras model's by "
                           f"{transfer:.2e} > {TRANSFER_TOLERANCE}: the weight transfer is wrong")
    dense_macs, dense_params = measure.count_macs(dense), dense.count_params()

    def counted(model):
        return {"macs": measure.count_macs(model), "params": model.count_params(),
                "widths": twins.keras_widths(model)}

    pruned, prune_rows = {"dense": dense}, []
    tp_nets = {"dense": net}
    for budget in cfg["budgets"]:
        target = (1 - budget) * dense_macs
        tag = f"{round(100 * budget)}"

        def kprune_macs(fraction):
            model = structural.prune(dense, fraction, scope="global", criterion="l2",
                                     cost="macs")
            return measure.count_macs(model), fraction

        def tp_macs(ratio):
            widths = twins.torch_widths(tp_prune(net, ratio))
            return measure.count_macs(twins.keras_model(widths)), ratio

        for tool, search in (("kprune", kprune_macs), ("torch-pruning", tp_macs)):
            start = time.perf_counter()
            ratio, _, _ = bisect(search, target, cfg["bisect_steps"])
            search_s = time.perf_counter() - start
            start = time.perf_counter()
            if tool == "kprune":
                model = structural.prune(dense, ratio, scope="global", criterion="l2",
                                         cost="macs")
                prune_s = time.perf_counter() - start
                extra = {}
            else:
                small = tp_prune(net, ratio)
                prune_s = time.perf_counter() - start
                model = twins.torch_to_keras(small)
                extra = {"torch_to_keras_max_difference":
                         twins.max_difference(model, small, x_test[:256])}
                tp_nets[f"{tool}-{tag}"] = small
            compile_classifier(model)
            name = f"{tool}-{tag}"
            pruned[name] = model
            row = {"row": name, "tool": tool, "budget": budget, "ratio": ratio,
                   **counted(model), "prune_s": prune_s, "search_s": search_s, **extra}
            row["macs_kept"] = row["macs"] / dense_macs
            row["params_kept"] = row["params"] / dense_params
            row["accuracy_no_ft"] = _keras_accuracy(model, x_test, y_test)
            recal = copy_model(model)
            recalibrate_batch_norm(recal, calibration_batches(recal, x_train[:1024],
                                                              batch_size=128))
            row["accuracy_no_ft_recal"] = _keras_accuracy(compile_classifier(recal),
                                                          x_test, y_test)
            prune_rows.append(row)
            log(f"Torch-Pruning part: {name}: ratio {ratio:.3f}, MACs kept "
                f"{row['macs_kept']:.3f}, params kept {row['params_kept']:.3f}, pruned in "
                f"{prune_s:.2f} s; no fine-tune {row['accuracy_no_ft']:.4f}, batch norm "
                f"recalibrated {row['accuracy_no_ft_recal']:.4f}")

    # fine-tune every model in tf_keras: same epochs, optimizer, rate, batch, data order
    accuracy = {name: [] for name in pruned}
    files = {}
    for index in range(seeds):
        tune_seed = seed + 1 + index
        xs, ys = ordered(x_train, y_train, cfg["res_tune_epochs"], tune_seed)
        for name, model in pruned.items():
            keras.utils.set_random_seed(tune_seed)
            tuned = compile_classifier(copy_model(model), learning_rate=STRUCT_LR)
            _fit(tuned, xs, ys)
            path = work / f"seed{tune_seed}" / f"{name}.tflite"
            export.to_tflite(tuned, path)
            accuracy[name].append(measure.evaluate_tflite(path, x_test, y_test))
            if index == 0:
                files[name] = path
            log(f"Torch-Pruning part: seed {tune_seed}: {name} fine-tuned, LiteRT accuracy "
                f"{accuracy[name][-1]:.4f}")

    log("Torch-Pruning part: LiteRT latency")
    litert = measure.latency_rounds(files, baseline="dense", rounds=cfg["rounds"],
                                    repeats=cfg["repeats"], warmup=cfg["warmup"], threads=1,
                                    seed=seed)
    for name, model in pruned.items():
        if name.startswith("kprune"):
            tp_nets[name] = twins.keras_to_torch(model)
    log("Torch-Pruning part: PyTorch eager latency")
    eager = torch_latency_rounds(tp_nets, baseline="dense", rounds=cfg["rounds"],
                                 repeats=cfg["torch_repeats"], warmup=cfg["warmup"])

    def summary(values):
        mean = float(np.mean(values))
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return {"accuracy": values, "mean": mean, "std": std,
                "sem": std / math.sqrt(len(values))}

    dense_row = {"row": "dense", "tool": "dense control", "budget": 0.0, "ratio": 0.0,
                 **counted(dense), "prune_s": 0.0, "macs_kept": 1.0, "params_kept": 1.0,
                 "accuracy_no_ft": _keras_accuracy(dense, x_test, y_test)}
    rows = []
    for row in [dense_row] + prune_rows:
        name = row["row"]
        row.update(summary(accuracy[name]))
        row["litert"] = {k: litert["files"][name][k]
                         for k in ("median_ms", "x_faster", "x_faster_range", "kernels")}
        row["eager"] = {k: eager["files"][name][k]
                        for k in ("median_ms", "x_faster", "x_faster_range")}
        rows.append(row)
    return {"model": "benchmarks/_peer_models.py (tf_keras + PyTorch twins)",
            "budgets": list(cfg["budgets"]), "dense_epochs": cfg["res_epochs"], "tune_epochs": cfg["res_tune_epochs"],
            "tune_lr": STRUCT_LR, "tune_seeds": [seed + 1 + i for i in range(seeds)],
            "transfer_max_difference": transfer, "dense_macs": dense_macs,
            "dense_params": dense_params, "rows": rows,
            "latency_litert": litert, "latency_eager": eager,
            "kprune_call": "structural.prune(model, ratio, scope='global', criterion='l2', "
                           "cost='macs')",
            "torch_pruning_call": "MetaPruner(net, x, GroupMagnitudeImportance(p=2), "
                                  "global_pruning=True, pruning_ratio=ratio, "
                                  "max_pruning_ratio=0.9, ignored_layers=[head]).step()"}


def _keras_accuracy(model, x, y):
    from kprune.methods.trainer import compile_classifier

    if model.optimizer is None:
        compile_classifier(model)
    return float(model.evaluate(x, y, verbose=0, batch_size=512)[1])


# -- part 3: llm-compressor ------------------------------------------------------------------

LLM_PLANS = ("50%", "2:4")
LLM_METHODS = ("sparsegpt", "wanda")
LLM_MODIFIERS = {"sparsegpt": "SparseGPTModifier", "wanda": "WandaPruningModifier"}
LLM_TOLERANCE = 0.02  # kprune's perplexity within 2 % of llm-compressor's


def _kprune_plan(name):
    import kprune
    from benchmarks import post_training

    return kprune.PruningPlan.uniform(0.5) if name == "50%" else post_training._n_m_plan()


def llmc_recipe(method, plan):
    """llm-compressor's modifier for one row, as its documentation writes it: every
    ``Linear`` but the head (the twin's attention projections and FFN after
    :func:`benchmarks._peer_lm.linear_twin`), SparseGPT with its defaults spelled out."""
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    common = dict(sparsity=0.5, mask_structure="2:4" if plan == "2:4" else "0:0",
                  targets=["Linear"], ignore=["re:.*lm_head"])
    if method == "sparsegpt":
        return SparseGPTModifier(block_size=128, dampening_frac=0.01, **common)
    return WandaPruningModifier(**common)


def llmc_prune(model, cfg, calibration, method, plan, *, twin_dir):
    """llm-compressor's ``oneshot`` on a fresh GPT-2 twin of ``model``; returns the pruned
    twin and the seconds of the ``oneshot`` call (its default pipeline: sequential, block by
    block). The calibration sequences go in already tokenized, as a DataLoader."""
    import torch
    from llmcompressor import oneshot

    from benchmarks import _peer_lm

    net = _peer_lm.linear_twin(_peer_lm.keras_to_gpt2(model, cfg))
    # oneshot re-reads the model's config from its name_or_path (a local folder here)
    net.config.name_or_path = str(twin_dir)
    rows = [{"input_ids": torch.as_tensor(np.asarray(x, np.int64))} for x in calibration]
    loader = torch.utils.data.DataLoader(rows, batch_size=1, shuffle=False)
    start = time.perf_counter()
    net = oneshot(model=net, dataset=loader, processor=_peer_lm.byte_tokenizer(),
                  recipe=[llmc_recipe(method, plan)], num_calibration_samples=len(rows))
    return net.eval(), time.perf_counter() - start


def _zero_masks(net):
    from benchmarks import _peer_lm

    return {name: _peer_lm._kernel(net.get_submodule(name)) == 0
            for name in _peer_lm.prunable_names(net)}


def _kprune_row(model, lm_cfg, data, plan, method):
    """One kprune run of part 3: seconds, perplexity (Keras, and of its GPT-2 twin), masks."""
    import kprune
    from benchmarks import _peer_lm, post_training

    start = time.perf_counter()
    pruned, report = kprune.prune_post_training(model, data["calibration"], _kprune_plan(plan),
                                                method=method)
    seconds = time.perf_counter() - start
    verified = kprune.sparsity_report(pruned)
    twin = _peer_lm.keras_to_gpt2(pruned, lm_cfg)
    masks = _zero_masks(twin)
    return dict(seconds=seconds, perplexity=post_training.perplexity(pruned, *data["eval"]),
                perplexity_pytorch=_peer_lm.perplexity(twin, *data["eval"]),
                layers=len(report.pruned), plan_met=bool(verified.ok),
                sparsity={k: float(v.mean()) for k, v in masks.items()}, _masks=masks)


def _llmc_row(model, lm_cfg, data, plan, method, *, twin_dir, head):
    """One llm-compressor run of part 3; its perplexity by the same Keras evaluator (its
    weights copied back into a copy of ``model``) and by PyTorch."""
    import torch

    import kprune
    from benchmarks import _peer_lm, post_training

    net, seconds = llmc_prune(model, lm_cfg, data["calibration"], method, plan,
                              twin_dir=twin_dir)
    back = _peer_lm.gpt2_to_keras(net, kprune.copy_model(model))
    masks = _zero_masks(net)
    return dict(seconds=seconds, perplexity=post_training.perplexity(back, *data["eval"]),
                perplexity_pytorch=_peer_lm.perplexity(net, *data["eval"]),
                layers=len(masks), head_untouched=bool(torch.equal(net.lm_head.weight, head)),
                sparsity={k: float(v.mean()) for k, v in masks.items()}, _masks=masks)


def run_llm_compressor(cfg, *, work, seed):
    """Part 3: kprune's SparseGPT and Wanda against llm-compressor's on one byte LM."""
    import torch

    import kprune
    from benchmarks import _peer_lm, post_training

    lm_cfg = dict(cfg["lm"])
    trained = post_training.train_lm(lm_cfg, seed)
    model, dense = trained["model"], trained["dense"]
    x_eval, y_eval = trained["eval"]
    x_cal = trained["calibration"]
    net = _peer_lm.keras_to_gpt2(model, lm_cfg)
    transfer = _peer_lm.max_difference(model, net, x_eval)
    linear = _peer_lm.max_difference(model, _peer_lm.linear_twin(net), x_eval)
    dense_hf = _peer_lm.perplexity(net, x_eval, y_eval)
    log(f"llm-compressor part: GPT-2 twin, largest logit difference {transfer:.1e} "
        f"(Linear twin {linear:.1e}); perplexity Keras {dense:.4f}, PyTorch {dense_hf:.4f}")
    if max(transfer, linear) > TRANSFER_TOLERANCE:
        raise RuntimeError(f"the GPT-2 twin's logits differ by {max(transfer, linear):.2e}")
    twin_dir = Path(work) / "gpt2-twin"
    twin_dir.mkdir(parents=True, exist_ok=True)
    net.config.save_pretrained(twin_dir)
    head = net.lm_head.weight.detach().clone()
    data = dict(calibration=x_cal, eval=(x_eval, y_eval))

    # one untimed call of each tool first (graph tracing, lazy imports)
    warm = {}
    start = time.perf_counter()
    kprune.prune_post_training(model, x_cal[:8], _kprune_plan("2:4"), method="wanda")
    warm["kprune"] = time.perf_counter() - start
    warm["llm-compressor"] = llmc_prune(model, lm_cfg, x_cal[:8], "wanda", "2:4",
                                        twin_dir=twin_dir)[1]
    log(f"llm-compressor part: warm-up calls {warm['kprune']:.1f} s (kprune), "
        f"{warm['llm-compressor']:.1f} s (llm-compressor)")

    rows = []
    for index, (plan, method) in enumerate((p, m) for p in LLM_PLANS for m in LLM_METHODS):
        order = ("kprune", "llm-compressor") if index % 2 == 0 else ("llm-compressor",
                                                                      "kprune")
        found = {}
        for name in order:
            found[name] = (_kprune_row(model, lm_cfg, data, plan, method) if name == "kprune"
                           else _llmc_row(model, lm_cfg, data, plan, method,
                                          twin_dir=twin_dir, head=head))
        ours, theirs = found["kprune"], found["llm-compressor"]
        same = {k: ours["_masks"][k] == theirs["_masks"][k] for k in ours["_masks"]}
        agreement = float(np.mean(np.concatenate([v.ravel() for v in same.values()])))
        for entry in found.values():
            del entry["_masks"]
        row = {"plan": plan, "method": method, "kprune": ours, "llm_compressor": theirs,
               "perplexity_ratio": ours["perplexity"] / theirs["perplexity"],
               "seconds_ratio": ours["seconds"] / theirs["seconds"],
               "mask_agreement": agreement,
               "mask_agreement_per_layer": {k: float(v.mean()) for k, v in same.items()},
               "first": "kprune" if index % 2 == 0 else "llm-compressor"}
        rows.append(row)
        log(f"llm-compressor part: {plan} {method}: perplexity kprune {ours['perplexity']:.4f} "
            f"vs llm-compressor {theirs['perplexity']:.4f} ({row['perplexity_ratio']:.4f}x); "
            f"{ours['seconds']:.1f} vs {theirs['seconds']:.1f} s; masks agree on "
            f"{100 * agreement:.1f} %")
    return {"model": "benchmarks.post_training.language_model (Keras 3) and its "
                     "transformers.GPT2LMHeadModel twin (benchmarks/_peer_lm.py)",
            "config": lm_cfg, "parameters": int(model.count_params()),
            "corpus": trained["corpus"], "train_seconds": trained["train_seconds"],
            "calibration_sequences": int(len(x_cal)), "held_out_sequences": int(len(x_eval)),
            "dense_perplexity": dense, "dense_perplexity_pytorch": dense_hf,
            "transfer_max_difference": transfer, "linear_twin_max_difference": linear,
            "keras_backend": post_training._keras().backend.backend(),
            "threads": {"torch": torch.get_num_threads()},
            "warm_up_seconds": warm, "rows": rows,
            "kprune_call": "kprune.prune_post_training(model, x_cal, plan, method=method) "
                           "(block_size=128, dampening=0.01; plan uniform(0.5) or every Dense "
                           "but the head at 2:4)",
            "llm_compressor_call": "oneshot(model=twin, dataset=DataLoader(tokenized, "
                                   "batch_size=1), processor=byte tokenizer, recipe=["
                                   "SparseGPTModifier(sparsity=0.5, mask_structure='0:0' or "
                                   "'2:4', block_size=128, dampening_frac=0.01, targets="
                                   "['Linear'], ignore=['re:.*lm_head']) or "
                                   "WandaPruningModifier(same sparsity, mask, targets, "
                                   "ignore)], num_calibration_samples=N)"}


# -- targets and report -------------------------------------------------------------------


def _smallest(part, row):
    """Part 1's file of ``row`` (any variant) with the fewest gzipped bytes; None if absent."""
    files = [r for r in part.get("rows", []) if r["row"] == row]
    return min(files, key=lambda r: r["gzip_bytes"]) if files else None


def check_targets(results):
    """The issue's targets, each with what was measured and whether it was met."""
    checks = []
    part = results.get("torch_pruning", {})
    rows = {row["row"]: row for row in part.get("rows", [])}
    for budget in BUDGETS:
        tag = f"{round(100 * budget)}"
        ours, theirs = rows.get(f"kprune-{tag}"), rows.get(f"torch-pruning-{tag}")
        if ours is None or theirs is None:
            continue
        sem = max(ours["sem"], theirs["sem"])
        ratio = theirs["litert"]["median_ms"] / ours["litert"]["median_ms"]
        checks.append({
            "target": f"{tag} % fewer MACs: kprune accuracy >= Torch-Pruning's - 1 SE",
            "measured": {"kprune_mean": ours["mean"], "torch_pruning_mean": theirs["mean"],
                         "sem": sem, "kprune_macs": ours["macs"],
                         "torch_pruning_macs": theirs["macs"]},
            "met": bool(ours["mean"] >= theirs["mean"] - sem - 1e-12)})
        checks.append({
            "target": f"{tag} % fewer MACs: kprune LiteRT latency <= Torch-Pruning's "
                      f"(within {100 * LATENCY_TOLERANCE:.0f} %)",
            "measured": {"kprune_ms": ours["litert"]["median_ms"],
                         "torch_pruning_ms": theirs["litert"]["median_ms"],
                         "torch_pruning_over_kprune": ratio},
            "met": bool(ratio >= 1 - LATENCY_TOLERANCE)})
    for row in results.get("llm_compressor", {}).get("rows", []):
        ours, theirs = row["kprune"], row["llm_compressor"]
        label = f"LM, {row['plan']} {row['method']}"
        checks.append({
            "target": f"{label}: kprune perplexity within {100 * LLM_TOLERANCE:.0f} % of "
                      "llm-compressor's",
            "measured": {"kprune": ours["perplexity"], "llm_compressor": theirs["perplexity"],
                         "ratio": row["perplexity_ratio"]},
            "met": bool(row["perplexity_ratio"] <= 1 + LLM_TOLERANCE)})
        checks.append({
            "target": f"{label}: kprune pruning wall time <= llm-compressor's",
            "measured": {"kprune_s": ours["seconds"], "llm_compressor_s": theirs["seconds"]},
            "met": bool(ours["seconds"] <= theirs["seconds"])})
    part = results.get("tfmot", {})
    if part.get("rows"):
        by = {(r["row"], r["variant"]): r for r in part["rows"]}
        ours, theirs = by.get(("kprune-80", "int8")), by.get(("tfmot", "int8"))
        if ours and theirs:
            checks.append({
                "target": "kprune at 80 % as accurate as tfmot at 80 % (int8, within 0.1 pp)",
                "measured": {"kprune_80": ours["accuracy"], "tfmot": theirs["accuracy"]},
                "met": bool(ours["accuracy"] >= theirs["accuracy"] - ACCURACY_TOLERANCE)})
        ours, theirs = _smallest(part, "kprune-best"), _smallest(part, "tfmot")
        if ours and theirs:
            smaller = ours["gzip_bytes"] < theirs["gzip_bytes"]
            accurate = ours["accuracy"] >= theirs["accuracy"] - ACCURACY_TOLERANCE
            checks.append({
                "target": f"{BEST_TARGET}: a smaller file (gzipped) than tfmot's smallest, "
                          f"as accurate (within {100 * ACCURACY_TOLERANCE:.1f} pp)",
                "measured": {"kprune": f"{ours['row']}/{ours['variant']}",
                             "kprune_gzip_bytes": ours["gzip_bytes"],
                             "kprune_accuracy": ours["accuracy"],
                             "tfmot": f"{theirs['row']}/{theirs['variant']}",
                             "tfmot_gzip_bytes": theirs["gzip_bytes"],
                             "tfmot_accuracy": theirs["accuracy"],
                             "smaller": smaller, "as_accurate": accurate},
                "met": bool(smaller and accurate)})
    return checks


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    env, mach, data = results["versions"], results["machine"], results["data"]
    cfg = results["settings"]
    parts = list(cfg.get("parts", PARTS))
    images = (f"{data['train']:,} train / {data['test']:,} test MNIST images, "
              if data else "")
    lines = [
        f"Measured {results['date']} in **{results['mode']}** mode: {images}seed "
        f"{results['seed']}, {results['seconds'] / 60:.1f} min in all. TF "
        f"{env.get('tensorflow')}, tf_keras {env.get('tf_keras')}, Keras {env.get('keras')}, "
        f"tfmot {env.get('tfmot')}, torch {env.get('torch')}, torch-pruning "
        f"{env.get('torch_pruning')}, transformers {env.get('transformers')}, llm-compressor "
        f"{env.get('llmcompressor')}, LiteRT {env.get('litert')}, Python "
        f"{env['python']}; {mach['platform']}, {mach.get('cpu_model', '?')}, "
        f"{mach['cpus_usable']} usable CPU(s).",
        "",
    ]
    command = "python -m benchmarks.peers" + (" --quick" if results["mode"] == "quick" else "")
    if "tfmot" in parts:
        command += f" --cnn-epochs {cfg['cnn_epochs']} {cfg['cnn_tune_epochs']}"
    if "torch-pruning" in parts:
        command += (f" --res-epochs {cfg['res_epochs']} {cfg['res_tune_epochs']} --seeds "
                    f"{results['seeds']}")
    if "llm-compressor" in parts and cfg.get("lm"):
        command += f" --lm-steps {cfg['lm']['steps']}"
    if parts != list(PARTS):
        command += " --only " + " ".join(parts)
    lines += [f"Reproduce: `{command}`.", ""]
    missing = [f"{name}: {s['why']}" for name, s in results["peers"].items()
               if not s["available"]]
    if missing:
        lines += ["Peers not installed (their part skipped): " + "; ".join(missing) + ".", ""]
    part = results.get("tfmot")
    if part and part.get("rows"):
        lines += [
            f"**tfmot on its own ground** ({part['model']}, {part['params']:,} parameters; dense "
            f"{part['baseline_epochs']} epoch(s), then every row {part['tune_epochs']} more at "
            f"lr {part['fine_tune_lr']}, same data order; accuracy in LiteRT; step = median "
            "time between training batches of that fine-tune):",
            "",
            "| row | .tflite | kernel sparsity | LiteRT acc. % | Δ pp | bytes | gzip bytes | "
            "x smaller gzip | step ms |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in part["rows"]:
            lines.append(
                f"| {r['row']} | {r['variant']} | {r['kernel_sparsity']:.3f} | "
                f"{100 * r['accuracy']:.2f} | {r['delta_pp']:+.2f} | {r['bytes']:,} | "
                f"{r['gzip_bytes']:,} | {r['x_smaller_gzip']:.2f} | {r['step_ms']:.1f} |")
        lines += ["", f"Sizes relative to `{part['reference']}`. `tfmot`: "
                  "`prune_low_magnitude` on the whole model with `PolynomialDecay` 0.5 -> 0.8 "
                  f"(end step {part['notes']['tfmot']['schedule']['end_step']}, frequency "
                  f"{part['notes']['tfmot']['schedule']['frequency']}), `UpdatePruningStep`, "
                  "`strip_pruning`, `TFLiteConverter` called directly; `kprune-default`: "
                  "`PruningPlan.default()`; `kprune-80`: `PruningPlan.uniform(0.8)` (head "
                  "left dense); `dense-ft`: the dense control fine-tuned as long."]
        best = part["notes"].get("kprune-best")
        if best:
            cut, split = best["structural"], best["split"]
            lines[-1] += (
                f" `kprune-best`: the steps of `{best['recipe']}` through kprune's Python API "
                f"in the same budget: `structural.prune` ({cut['fraction']:g} of the channels, "
                f"{cut['scope']}, cost {cut['cost']}, {cut['criterion']}, round_to "
                f"{cut['round_to']}: {best['params']:,} parameters left), fine-tuned "
                f"{split['structural_fine_tune_steps']} steps, then the recipe's plan (fc1 at "
                f"95 % in blocks of 16 inputs, head dense) over the other "
                f"{split['prune_steps']} steps, the recipe's {split['recipe_epochs'][0]} + "
                f"{split['recipe_epochs'][1]} epochs shared as {split['steps_per_recipe_epoch']}"
                f"-step epochs; its kernel sparsity counts the removed channels' weights as "
                f"pruned, and its step time is that of the pruning steps (the structural "
                f"fine-tune's: {best['structural_fine_tune_step_ms']:.1f} ms).")
        lines += [""]
    elif part:
        lines += [f"tfmot part skipped: {part.get('skipped')}", ""]
    part = results.get("torch_pruning")
    if part and part.get("rows"):
        seeds = len(part["tune_seeds"])
        lines += [
            f"**Torch-Pruning, structural pruning of a residual CNN** (projection shortcuts, "
            f"batch norm, a depthwise stage; {part['dense_params']:,} parameters, "
            f"{part['dense_macs']:,} MACs; trained {part['dense_epochs']} epoch(s) in tf_keras, "
            f"copied into the PyTorch twin: largest output difference "
            f"{part['transfer_max_difference']:.1e}). Each tool prunes to the MAC budget; every "
            f"model, the dense control too, is then fine-tuned in tf_keras for "
            f"{part['tune_epochs']} epoch(s) at Adam lr {part['tune_lr']}, batch {BATCH_SIZE}, "
            f"the same data order, over {seeds} seed(s). MACs and parameters from one counter "
            "(`kprune.measure.count_macs` on the tf_keras twin of each shape). Latency: batch 1, "
            f"one thread, {part['latency_litert']['rounds']} interleaved rounds; x = speed-up "
            "over the dense model (median of within-round ratios).",
            "",
            "| row | MACs | kept | params | kept | prune s | no fine-tune acc. % | "
            "BN recalibrated % | fine-tuned LiteRT acc. % (mean ± sd) | LiteRT ms | x | "
            "PyTorch eager ms | x |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in part["rows"]:
            recal = ("–" if "accuracy_no_ft_recal" not in r
                     else f"{100 * r['accuracy_no_ft_recal']:.2f}")
            lines.append(
                f"| {r['row']} | {r['macs']:,} | {r['macs_kept']:.3f} | {r['params']:,} | "
                f"{r['params_kept']:.3f} | {r['prune_s']:.2f} | {100 * r['accuracy_no_ft']:.2f} "
                f"| {recal} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | "
                f"{r['litert']['median_ms']:.4f} | {r['litert']['x_faster']:.2f} | "
                f"{r['eager']['median_ms']:.3f} | {r['eager']['x_faster']:.2f} |")
        lines += ["", "Widths after pruning (channels per group): " + "; ".join(
            f"{r['row']} {r['widths']}" for r in part["rows"]) + ".", ""]
    elif part:
        lines += [f"Torch-Pruning part skipped: {part.get('skipped')}", ""]
    part = results.get("llm_compressor")
    if part and part.get("rows"):
        lines += llm_table(part)
    elif part:
        lines += [f"llm-compressor part skipped: {part.get('skipped')}", ""]
    for name, why in results["not_done"].items():
        lines += [f"{name}: {why}.", ""]
    verdicts = leads_and_trails(results)
    if verdicts:
        lines += ["Where kprune leads and where it trails (this run):", ""]
        lines += [f"- {line}" for line in verdicts] + [""]
    if results["targets"]:
        lines += ["| target | measured | met |", "|---|---|:---:|"]
        for check in results["targets"]:
            got = ", ".join(f"{k} {_fmt(v)}" for k, v in check["measured"].items())
            lines.append(f"| {check['target']} | {got} | {'**yes**' if check['met'] else 'no'} |")
    return "\n".join(lines).rstrip()


def llm_table(part):
    """The README lines of part 3."""
    c = part["config"]
    lines = [
        f"**llm-compressor, post-training pruning of a language model** (the byte-level GPT of "
        f"`benchmarks.post_training`: {part['parameters']:,} parameters, {c['blocks']} "
        f"block(s) of width {c['width']}, {c['heads']} heads, FFN {c['ffn']}, context "
        f"{c['context']}; trained {c['steps']} steps in Keras 3 ({part['keras_backend']} "
        f"backend) in {part['train_seconds'] / 60:.1f} min, then copied into a "
        "`transformers.GPT2LMHeadModel` built from its config: largest logit difference "
        f"{part['transfer_max_difference']:.1e}; dense held-out perplexity "
        f"{part['dense_perplexity']:.4f}). Both tools prune the same layers (every attention "
        "projection and FFN layer; embeddings and head dense) from the same "
        f"{part['calibration_sequences']} calibration sequences, each with its own documented "
        "call; perplexity on the same "
        f"{part['held_out_sequences']} held-out sequences by one evaluator (Keras; "
        "llm-compressor's weights copied back, its PyTorch perplexity in the JSON). Wall time: "
        "the whole pruning call of each tool, after one untimed warm-up call of each, the "
        "tools alternating which goes first; masks agree: the share of prunable weights that "
        "both tools zero or both keep.",
        "",
        "| plan | method | kprune ppl | llm-compressor ppl | kprune / llm-compressor | "
        "kprune s | llm-compressor s | masks agree % |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in part["rows"]:
        ours, theirs = r["kprune"], r["llm_compressor"]
        lines.append(
            f"| {r['plan']} | {r['method']} | {ours['perplexity']:.4f} | "
            f"{theirs['perplexity']:.4f} | {r['perplexity_ratio']:.4f} | {ours['seconds']:.1f} "
            f"| {theirs['seconds']:.1f} | {100 * r['mask_agreement']:.1f} |")
    lines += ["", "kprune: `" + part["kprune_call"] + "`; llm-compressor: `"
              + part["llm_compressor_call"] + "`.", ""]
    return lines


def leads_and_trails(results):
    """Plain sentences: each head-to-head comparison of the run and who is ahead."""
    out = []
    for row in results.get("llm_compressor", {}).get("rows", []):
        ours, theirs = row["kprune"], row["llm_compressor"]
        ratio = row["perplexity_ratio"]
        word = ("leads" if ratio < 1 - 1e-3 else "trails" if ratio > 1 + 1e-3
                else "ties (within 0.1 %)")
        faster = "faster" if ours["seconds"] <= theirs["seconds"] else "slower"
        out.append(f"LM {row['plan']} {row['method']}: kprune {word} on perplexity, "
                   f"{ours['perplexity']:.4f} vs {theirs['perplexity']:.4f} "
                   f"({100 * (ratio - 1):+.2f} %), and is {faster}, {ours['seconds']:.1f} vs "
                   f"{theirs['seconds']:.1f} s.")
    part = results.get("torch_pruning", {})
    rows = {row["row"]: row for row in part.get("rows", [])}
    for budget in part.get("budgets", BUDGETS):
        tag = f"{round(100 * budget)}"
        ours, theirs = rows.get(f"kprune-{tag}"), rows.get(f"torch-pruning-{tag}")
        if ours is None or theirs is None:
            continue
        gap = 100 * (ours["mean"] - theirs["mean"])
        sem = 100 * max(ours["sem"], theirs["sem"])  # as in check_targets
        word = ("leads" if gap > sem else "trails" if gap < -sem else
                "ties (within one standard error)")
        out.append(f"{tag} % fewer MACs, fine-tuned accuracy: kprune {word}, "
                   f"{100 * ours['mean']:.2f} vs {100 * theirs['mean']:.2f} % ({gap:+.2f} pp, "
                   f"larger standard error {sem:.2f} pp, {len(ours['accuracy'])} seed(s)); MACs "
                   f"kept {ours['macs_kept']:.3f} vs {theirs['macs_kept']:.3f}.")
        for key, label in (("accuracy_no_ft_recal", "no fine-tune, batch norm recalibrated"),
                           ("accuracy_no_ft", "no fine-tune, batch norm as pruned")):
            gap = 100 * (ours[key] - theirs[key])
            out.append(f"{tag} %, {label}: kprune {'leads' if gap > 0 else 'trails' if gap < 0 else 'ties'}"
                       f", {100 * ours[key]:.2f} vs {100 * theirs[key]:.2f} %.")
        ratio = theirs["litert"]["median_ms"] / ours["litert"]["median_ms"]
        word = ("leads" if ratio > 1 + LATENCY_TOLERANCE else "trails"
                if ratio < 1 - LATENCY_TOLERANCE else "ties (within 2 %)")
        out.append(f"{tag} %, LiteRT latency: kprune {word}, {ours['litert']['median_ms']:.4f} vs "
                   f"{theirs['litert']['median_ms']:.4f} ms.")
        faster = "faster" if ours["prune_s"] < theirs["prune_s"] else "slower"
        out.append(f"{tag} %, pruning wall time: kprune {faster}, {ours['prune_s']:.2f} vs "
                   f"{theirs['prune_s']:.2f} s.")
    part = results.get("tfmot", {})
    by = {(r["row"], r["variant"]): r for r in part.get("rows", [])}
    ours, theirs = _smallest(part, "kprune-best"), _smallest(part, "tfmot")
    if ours and theirs:
        gap = 100 * (ours["accuracy"] - theirs["accuracy"])
        word = ("leads" if gap > 100 * ACCURACY_TOLERANCE else "trails"
                if gap < -100 * ACCURACY_TOLERANCE else "ties (within 0.1 pp)")
        ratio = theirs["gzip_bytes"] / ours["gzip_bytes"]
        size = f"{ratio:.1f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x bigger"
        out.append(f"kprune's best recipe against tfmot's recipe (each one's smallest file, "
                   f"{ours['variant']} vs {theirs['variant']}): gzipped "
                   f"{ours['gzip_bytes']:,} vs {theirs['gzip_bytes']:,} bytes ({size}); accuracy: "
                   f"kprune {word}, {100 * ours['accuracy']:.2f} vs "
                   f"{100 * theirs['accuracy']:.2f} % ({gap:+.2f} pp).")
    theirs = by.get(("tfmot", "int8"))
    for name in ("kprune-80", "kprune-default"):
        ours = by.get((name, "int8"))
        if ours is None or theirs is None:
            continue
        gap = 100 * (ours["accuracy"] - theirs["accuracy"])
        out.append(f"{name} against tfmot's recipe (int8 files): accuracy {gap:+.2f} pp "
                   f"({100 * ours['accuracy']:.2f} vs {100 * theirs['accuracy']:.2f} %), gzipped "
                   f"{ours['gzip_bytes']:,} vs {theirs['gzip_bytes']:,} bytes, kernel sparsity "
                   f"{ours['kernel_sparsity']:.3f} vs {theirs['kernel_sparsity']:.3f}, step "
                   f"{ours['step_ms']:.1f} vs {theirs['step_ms']:.1f} ms.")
    return out


def _fmt(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return (f"{value:.4f}" if value < 10 else f"{value:,.2f}" if value < 1000
                else f"{value:,.0f}")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
