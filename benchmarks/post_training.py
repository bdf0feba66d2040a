"""Post-training pruning without retraining: magnitude, Wanda and SparseGPT side by side.

Two parts, in one run, each model trained here and then pruned from calibration data only
(``kprune.prune_post_training``; no labels, no fine-tune):

- ``lm``: a small GPT-style byte-level language model in Keras 3 (token and position
  embeddings, pre-norm blocks of causal self-attention whose query, key, value and output
  projections are ``Dense`` layers, and a ``Dense`` feed-forward), trained on the Python
  standard library's own source files (every machine has them): the files sorted by name,
  every 10th held out, every 10th after the first calibration, the rest training. Each
  method at 50 % unstructured and 2:4 on every projection and feed-forward ``Dense``
  (embeddings and the output head left dense); held-out perplexity and seconds.
- ``cnn``: the seed CNN and a MobileNetV2-style network (inverted residual blocks of 1x1
  expand, depthwise 3x3, 1x1 project, batch norm) trained on MNIST, then each method at
  50 %, 70 %, 90 % (every conv and Dense but the head) and the default plan (first conv
  unstructured 50 %, the rest 2:4), 512 calibration images from the training split;
  test accuracy in Keras. SparseGPT also runs with ``center_before_batch_norm=True`` and
  with ``match_dense=True`` (each layer fitted to the dense model's outputs of that layer).

    python -m benchmarks.post_training            # the full run (minutes on 2 cores)
    python -m benchmarks.post_training --quick    # a smoke test
    python -m benchmarks.post_training --part cnn # the CNNs only; the LM part kept from the
                                                  # results JSON, each part's date recorded
    python -m benchmarks.post_training --part mobilenet  # the MobileNetV2-style net only

Writes the results JSON (``--out``; default ``benchmarks/results/post_training.json``) and,
in full mode, the tables into ``benchmarks/README.md`` between the ``post_training`` markers.
"""

import argparse
import datetime
import json
import math
import sysconfig
import time
from pathlib import Path

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

DEFAULT_OUT = REPO / "benchmarks" / "results" / "post_training.json"
BEGIN = "<!-- post_training:begin -->"
END = "<!-- post_training:end -->"
METHODS = ("magnitude", "wanda", "sparsegpt")
#: The CNN part's variants: each method, SparseGPT fitted on centered inputs before the
#: recalibrated batch norms (``center_before_batch_norm=True``) and SparseGPT fitted to the
#: dense model's outputs (``match_dense=True``: each layer's targets from the dense model,
#: its inputs from the pruned one).
CNN_VARIANTS = {**{m: dict(method=m) for m in METHODS},
                "sparsegpt, centered": dict(method="sparsegpt", center_before_batch_norm=True),
                "sparsegpt, match_dense": dict(method="sparsegpt", match_dense=True)}
#: The CNNs of the benchmark, by name.
CNN_NAMES = ("seed CNN", "MobileNetV2-style")
#: Published rows (perplexity on WikiText2), for the README beside ours.
PUBLISHED = [
    dict(source="LLaMA-2-7B, Wanda repository README", dense=5.12,
         unstructured={"magnitude": 14.89, "wanda": 6.42, "sparsegpt": 6.51},
         n_m={"magnitude": 54.59, "wanda": 11.02, "sparsegpt": 10.17}),
    dict(source="OPT-125M, SparseGPT paper table 1", dense=27.66,
         unstructured={"magnitude": 193.0, "sparsegpt": 36.85}, n_m={}),
]
FULL = dict(lm=dict(context=64, width=128, heads=4, blocks=4, ffn=512, steps=3000, batch=32,
                    train_bytes=4_000_000, calibration=128, held_out=512),
            cnn=dict(n_train=None, n_test=None, epochs=2, calibration=512,
                     targets=(0.5, 0.7, 0.9), finetune_plans=("70%", "default (2:4)")))
QUICK = dict(lm=dict(context=32, width=32, heads=2, blocks=1, ffn=64, steps=60, batch=16,
                     train_bytes=200_000, calibration=32, held_out=64),
             cnn=dict(n_train=2000, n_test=500, epochs=1, calibration=128, targets=(0.5,),
                      finetune_plans=()))


def _keras():
    from kprune.engines.keras3 import helpers

    return helpers.keras


# -- the language model ---------------------------------------------------------------------


def corpus(train_bytes):
    """``(train, calibration, held_out)`` byte arrays from the standard library's sources."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    parts = {"train": [], "calibration": [], "held_out": []}
    for index, path in enumerate(files):
        split = ("held_out" if index % 10 == 0 else "calibration" if index % 10 == 1
                 else "train")
        parts[split].append(path.read_bytes())
    joined = {k: np.frombuffer(b"\n".join(v), np.uint8).astype("int32") for k, v in parts.items()}
    joined["train"] = joined["train"][:train_bytes]
    return joined["train"], joined["calibration"], joined["held_out"], len(files)


def windows(tokens, context, count, seed):
    """``count`` windows of ``context + 1`` bytes at random offsets (inputs, next bytes)."""
    starts = np.random.default_rng(seed).integers(0, len(tokens) - context - 1, size=count)
    rows = np.stack([tokens[s:s + context + 1] for s in starts])
    return rows[:, :-1], rows[:, 1:]


def language_model(*, context, width, heads, blocks, ffn, **_):
    """The GPT-style model: every projection a top-level ``Dense`` that kprune can reach.

    It is GPT-2's architecture exactly (``benchmarks._peer_lm`` copies it into a
    ``transformers.GPT2LMHeadModel`` with exact GELU and Keras's layer-norm epsilon)."""
    keras = _keras()
    ops = keras.ops

    class CausalAttention(keras.layers.Layer):
        """Scaled dot-product attention over ``heads`` heads, causal; no weights."""

        def call(self, q, k, v):
            b, t = ops.shape(q)[0], ops.shape(q)[1]

            def split(x):
                return ops.transpose(ops.reshape(x, (b, t, heads, width // heads)), (0, 2, 1, 3))

            q, k, v = split(q), split(k), split(v)
            scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(width // heads)
            mask = ops.tril(ops.ones((t, t), "bool"))
            scores = ops.where(mask, scores, -1e9)
            out = ops.matmul(ops.softmax(scores, axis=-1), v)
            return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (b, t, width))

    class AddPositions(keras.layers.Layer):
        def build(self, input_shape):
            self.table = self.add_weight(shape=(context, width), initializer="random_normal",
                                         name="positions")

        def call(self, x):
            return x + self.table[None, : ops.shape(x)[1]]

    tokens = keras.Input((context,), dtype="int32", name="tokens")
    h = AddPositions(name="positions")(keras.layers.Embedding(256, width, name="embed")(tokens))
    for i in range(blocks):
        a = keras.layers.LayerNormalization(name=f"ln_{i}_a")(h)
        q, k, v = (keras.layers.Dense(width, name=f"{n}_{i}")(a) for n in ("query", "key",
                                                                           "value"))
        a = CausalAttention(name=f"attention_{i}")(q, k, v)
        h = keras.layers.Add()([h, keras.layers.Dense(width, name=f"out_{i}")(a)])
        f = keras.layers.LayerNormalization(name=f"ln_{i}_f")(h)
        f = keras.layers.Dense(ffn, activation="gelu", name=f"ffn_up_{i}")(f)
        h = keras.layers.Add()([h, keras.layers.Dense(width, name=f"ffn_down_{i}")(f)])
    h = keras.layers.LayerNormalization(name="ln_final")(h)
    # no bias on the head, as GPT-2's lm_head (benchmarks.peers copies this model into one)
    head = keras.layers.Dense(256, use_bias=False, name="head")
    return keras.Model(tokens, head(h), name="byte_gpt")


def perplexity(model, x, y):
    """``exp`` of the mean next-byte cross-entropy on ``(x, y)``."""
    return perplexity_of_logits(model.predict(x, batch_size=64, verbose=0), y)


def perplexity_of_logits(logits, y):
    """``exp`` of the mean cross-entropy of next-byte ``logits`` against the bytes ``y``
    (from Keras or from a LiteRT file alike)."""
    keras = _keras()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    return float(np.exp(float(keras.ops.convert_to_numpy(loss))))


def train_lm(cfg, seed, build=language_model):
    """Train the byte LM of ``cfg`` (made by ``build(**cfg)``) on the corpus; returns the
    model and its data: ``dict(model, train_seconds, dense, eval=(x, y), calibration=x,
    train_tokens, corpus=...)``."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    train, calibration, held_out, files = corpus(cfg["train_bytes"])
    x, y = windows(train, cfg["context"], cfg["steps"] * cfg["batch"], seed)
    model = build(**cfg)
    steps = cfg["steps"]
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps, warmup_target=None)
    model.compile(optimizer=keras.optimizers.Adam(schedule),  # eager: no tracing (tiny runs)
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=cfg.get("eager", False))
    start = time.perf_counter()
    model.fit(x, y, batch_size=cfg["batch"], epochs=1, verbose=0)
    train_seconds = time.perf_counter() - start
    x_eval, y_eval = windows(held_out, cfg["context"], cfg["held_out"], seed + 1)
    x_cal, _ = windows(calibration, cfg["context"], cfg["calibration"], seed + 2)
    dense = perplexity(model, x_eval, y_eval)
    log(f"lm: trained {steps} steps in {train_seconds:.0f} s; held-out perplexity {dense:.3f}")
    return dict(model=model, train_seconds=train_seconds, dense=dense, eval=(x_eval, y_eval),
                calibration=x_cal, train_tokens=train,
                corpus=dict(files=files, train_bytes=len(train),
                            calibration_bytes=len(calibration), held_out_bytes=len(held_out),
                            rule="stdlib *.py sorted by name; index % 10 == 0 held out, == 1 "
                                 "calibration, else training"))


def run_lm(cfg, seed):
    import kprune

    trained = train_lm(cfg, seed)
    model, dense, x_cal = trained["model"], trained["dense"], trained["calibration"]
    x_eval, y_eval = trained["eval"]
    plans = {"50%": kprune.PruningPlan.uniform(0.5), "2:4": _n_m_plan()}
    rows = []
    for plan_name, plan in plans.items():
        for method in METHODS:
            start = time.perf_counter()
            pruned, report = kprune.prune_post_training(model, x_cal, plan, method=method)
            seconds = time.perf_counter() - start
            verified = kprune.sparsity_report(pruned)  # against the plan it carries
            ppl = perplexity(pruned, x_eval, y_eval)
            rows.append(dict(plan=plan_name, method=method, perplexity=ppl,
                             ratio_to_dense=ppl / dense, seconds=seconds,
                             layers=len(report.pruned), plan_met=verified.ok,
                             mean_error=float(np.mean([r.error for r in report.pruned]))))
            log(f"lm {plan_name} {method}: perplexity {ppl:.3f} ({ppl / dense:.2f}x dense), "
                f"{seconds:.1f} s")
    return dict(config=cfg, corpus=trained["corpus"], parameters=int(model.count_params()),
                train_seconds=trained["train_seconds"], dense_perplexity=dense, rows=rows)


def _n_m_plan():
    from kprune.core.plan import HEAD_RULE, LayerRule, PruningPlan

    return PruningPlan((HEAD_RULE, LayerRule("dense", by="kind", method="m_by_n")))


# -- the CNNs -------------------------------------------------------------------------------


def mobilenet_v2_style(keras):
    """Inverted residual blocks (expand 1x1, depthwise 3x3, project 1x1) on 28x28x1."""
    layers = keras.layers

    def block(x, expand, out, stride, name):
        h = layers.Conv2D(expand, 1, use_bias=False, name=f"{name}_expand")(x)
        h = layers.ReLU(6.0)(layers.BatchNormalization(name=f"{name}_bn1")(h))
        h = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                   name=f"{name}_dw")(h)
        h = layers.ReLU(6.0)(layers.BatchNormalization(name=f"{name}_bn2")(h))
        h = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(h)
        h = layers.BatchNormalization(name=f"{name}_bn3")(h)
        return layers.Add()([x, h]) if stride == 1 and x.shape[-1] == out else h

    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="stem")(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="stem_bn")(x))
    for i, (expand, out, stride) in enumerate([(64, 24, 1), (96, 24, 1), (96, 32, 2),
                                               (128, 32, 1)]):
        x = block(x, expand, out, stride, f"block{i}")
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, name="head")(x), name="mobilenet_v2_style")


def run_cnn(cfg, data_dir, seed, names=CNN_NAMES):
    import kprune
    from kprune import data, models
    from kprune.engines.tfkeras import loader

    loader.keras.utils.set_random_seed(seed)
    (x, y), (x_test, y_test) = data.load_mnist(data_dir, verbose=False)
    x, y = x[:cfg["n_train"]], y[:cfg["n_train"]]
    x_test, y_test = x_test[:cfg["n_test"]], y_test[:cfg["n_test"]]
    plans = {f"{t:.0%}": kprune.PruningPlan.uniform(t) for t in cfg["targets"]}
    plans["default (2:4)"] = kprune.PruningPlan.default()
    results = {}
    builds = {"seed CNN": models.seed_cnn,
              "MobileNetV2-style": lambda: mobilenet_v2_style(loader.keras)}
    for name in names:
        build = builds[name]
        model = models.compile_classifier(build())
        start = time.perf_counter()
        model.fit(x, y, batch_size=64, epochs=cfg["epochs"], verbose=0)
        dense = float(model.evaluate(x_test, y_test, verbose=0)[1])
        log(f"cnn {name}: trained in {time.perf_counter() - start:.0f} s, accuracy {dense:.4f}")
        rows = []
        for plan_name, plan in plans.items():
            for method, options in CNN_VARIANTS.items():
                start = time.perf_counter()
                pruned, report = kprune.prune_post_training(model, x[:cfg["calibration"]], plan,
                                                            **options)
                seconds = time.perf_counter() - start
                # not strict: a row that misses its target is recorded as such (SparseGPT
                # zeroes every weight of an input that never fires, which can overshoot)
                verified = kprune.sparsity_report(pruned)  # against the plan it carries
                accuracy = float(models.compile_classifier(pruned).evaluate(x_test, y_test,
                                                                            verbose=0)[1])
                rows.append(dict(plan=plan_name, method=method, accuracy=accuracy,
                                 drop_pp=100 * (dense - accuracy), seconds=seconds,
                                 sparsity=verified.sparsity, layers=len(report.pruned),
                                 plan_met=verified.ok,
                                 missed=[r.name for r in verified.mismatches]))
                log(f"cnn {name} {plan_name} {method}: {accuracy:.4f} ({seconds:.1f} s)")
        # the same 50 % runs with the batch-norm statistics left as trained
        stale = {}
        for method in METHODS:
            pruned, _ = kprune.prune_post_training(model, x[:cfg["calibration"]],
                                                   plans[f"{cfg['targets'][0]:.0%}"],
                                                   method=method, recalibrate=False)
            stale[method] = float(models.compile_classifier(pruned).evaluate(
                x_test, y_test, verbose=0)[1])
            log(f"cnn {name} {cfg['targets'][0]:.0%} {method}, batch norm as trained: "
                f"{stale[method]:.4f}")
        results[name] = dict(parameters=int(model.count_params()), dense_accuracy=dense,
                             rows=rows, stale_batch_norm=stale)
        if cfg["finetune_plans"] and name == "seed CNN":
            results[name]["finetune"] = finetune_rows(model, plans, cfg, x, y, x_test, y_test,
                                                      seed)
    return dict(config={**cfg, "targets": list(cfg["targets"])}, test_images=len(x_test),
                models=results)


def finetune_rows(model, plans, cfg, x, y, x_test, y_test, seed):
    """One epoch after each: post-training pruning then a fine-tune that keeps its zeros,
    against the gradual workflow over the same epoch and the dense model trained as long."""
    import kprune
    from kprune import models
    from kprune.methods import workflows

    def score(m):
        return float(models.compile_classifier(m).evaluate(x_test, y_test, verbose=0)[1])

    trainer = workflows.Trainer(x, y, batch_size=64, seed=seed)
    control = models.compile_classifier(kprune.copy_model(model))
    trainer.fit(control, 1)
    rows = [dict(plan="dense", method="dense control, 1 more epoch", accuracy=score(control))]
    log(f"finetune: dense control {rows[0]['accuracy']:.4f}")
    for plan_name in cfg["finetune_plans"]:
        plan = plans[plan_name]
        for method in ("magnitude", "sparsegpt"):
            pruned, _ = kprune.prune_post_training(model, x[:cfg["calibration"]], plan,
                                                   method=method)
            tuned = workflows.one_shot(pruned, plan, trainer=trainer, finetune_epochs=1).model
            kprune.sparsity_report(tuned, plan=plan, strict=True)
            rows.append(dict(plan=plan_name, method=f"{method} + 1 epoch fine-tune",
                             accuracy=score(tuned)))
            log(f"finetune {plan_name} {method}: {rows[-1]['accuracy']:.4f}")
        gradual = workflows.gradual(model, plan, trainer=trainer, epochs=1).model
        rows.append(dict(plan=plan_name, method="gradual, 1 epoch", accuracy=score(gradual)))
        log(f"finetune {plan_name} gradual: {rows[-1]['accuracy']:.4f}")
    return rows




# -- summary ----------------------------------------------------------------------------------


def markdown_summary(results):
    lm = results["lm"]
    by = {(r["plan"], r["method"]): r for r in lm["rows"]}
    lines = [
        f"Held-out perplexity of the byte-level LM ({lm['parameters']:,} parameters, "
        f"{lm['config']['blocks']} blocks, trained {lm['config']['steps']} steps here; "
        f"dense {lm['dense_perplexity']:.3f}), pruned with no retraining "
        f"({lm['config']['calibration']} calibration sequences of {lm['config']['context']} "
        "bytes), beside the published rows:",
        "",
        "| model | dense | magnitude 50 % | Wanda 50 % | SparseGPT 50 % | "
        "2:4 magnitude / SparseGPT / Wanda |",
        "|---|---|---|---|---|---|",
    ]

    def cell(plan, method):
        row = by[(plan, method)]
        return f"{row['perplexity']:.3f} ({row['ratio_to_dense']:.2f}x)"

    lines.append(f"| byte GPT here (kprune) | {lm['dense_perplexity']:.3f} | "
                 f"{cell('50%', 'magnitude')} | {cell('50%', 'wanda')} | "
                 f"{cell('50%', 'sparsegpt')} | {cell('2:4', 'magnitude')} / "
                 f"{cell('2:4', 'sparsegpt')} / {cell('2:4', 'wanda')} |")
    for row in PUBLISHED:
        u, n = row["unstructured"], row["n_m"]

        def show(table, key):
            return f"{table[key]:g}" if key in table else ""

        lines.append(f"| {row['source']} | {row['dense']:g} | {show(u, 'magnitude')} | "
                     f"{show(u, 'wanda')} | {show(u, 'sparsegpt')} | "
                     + (f"{show(n, 'magnitude')} / {show(n, 'sparsegpt')} / {show(n, 'wanda')}"
                        if n else "") + " |")
    if "parts" in results:  # the parts from different runs
        lines.insert(0, "From different runs: " + "; ".join(
            f"{'language model' if key == 'lm' else key}: {value}"
            for key, value in results["parts"].items()) + ".\n")
    lines.insert(0, f"Run finished {results.get('finished', '?')}, "
                    f"{results['seconds'] / 60:.0f} min on "
                    f"{results['environment']['machine']['cpu_count']} CPUs shared with other "
                    f"jobs (TensorFlow {results['environment']['versions']['tensorflow']}, "
                    f"Keras {results.get('keras', '?')}).\n")
    seconds = ", ".join(f"{m} {np.mean([r['seconds'] for r in lm['rows'] if r['method'] == m]):.1f} s"
                        for m in METHODS)
    lines += ["", f"Pruning time per run (mean over the two plans): {seconds}.", ""]
    for name, model in results["cnn"]["models"].items():
        plans = list(dict.fromkeys(r["plan"] for r in model["rows"]))
        cells = {(r["plan"], r["method"]): f"{r['accuracy']:.4f}" + ("" if r["plan_met"] else " *")
                 for r in model["rows"]}
        variants = list(dict.fromkeys(r["method"] for r in model["rows"]))
        lines += [f"{name} on MNIST ({model['parameters']:,} parameters; dense "
                  f"{model['dense_accuracy']:.4f} on {results['cnn']['test_images']:,} test "
                  "images), accuracy with no fine-tune:", "",
                  "| plan | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
        lines += [f"| {plan} | " + " | ".join(cells[(plan, m)] for m in variants) + " |"
                  for plan in plans]
        lines.append(f"| {plans[0]}, batch norm as trained | "
                     + " | ".join(f"{model['stale_batch_norm'][m]:.4f}"
                                  if m in model["stale_batch_norm"] else "" for m in variants)
                     + " |")
        if model.get("finetune"):
            lines += ["", f"{name}, one more epoch of training after each (same trainer, data "
                      "order and rate):", "", "| plan | run | accuracy |", "|---|---|---|"]
            lines += [f"| {r['plan']} | {r['method']} | {r['accuracy']:.4f} |"
                      for r in model["finetune"]]
        lines.append("")
    if any(not r["plan_met"] for m in results["cnn"]["models"].values() for r in m["rows"]):
        lines.append("\\* a layer reached more zeros than its target by over 1 pp (SparseGPT "
                     "zeroes every weight of an input that never fires on the calibration data).")
    return "\n".join(lines).rstrip()


def run(*, data_dir, seed, quick, part="all", previous=None):
    """Run the benchmark's parts. ``part="cnn"`` reruns the CNNs and ``"mobilenet"`` the
    MobileNetV2-style network alone, the rest taken from ``previous`` (the results JSON of
    an earlier run); ``parts`` then says which run gave each part."""
    cfg = QUICK if quick else FULL
    results = dict(benchmark="post_training", quick=quick, seed=seed,
                   environment=environment())
    if part != "all":
        if previous is None or "lm" not in previous:
            raise ValueError(f"--part {part} keeps the other parts of the results JSON, and "
                             "it has none: run the whole benchmark first.")
        results["lm"] = previous["lm"]
        results["earlier_environment"] = previous.get("earlier_environment",
                                                      previous["environment"])
    else:
        results["lm"] = run_lm(dict(cfg["lm"]), seed)
    names = ("MobileNetV2-style",) if part == "mobilenet" else CNN_NAMES
    results["cnn"] = run_cnn(dict(cfg["cnn"]), data_dir, seed, names)
    if part == "mobilenet":
        results["cnn"]["models"] = {**previous["cnn"]["models"], **results["cnn"]["models"]}
    results["seconds"] = elapsed()
    results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results["keras"] = _keras().__version__
    if part != "all":
        earlier = previous.get("parts", {}).get("lm") or (
            f"the full run finished {previous.get('finished', '?')} "
            f"({previous['seconds'] / 60:.0f} min in all)")
        now = f"the --part {part} run finished {results['finished']}"
        results["parts"] = {
            "lm": earlier,
            **{name: (now if name in names
                      else previous.get("parts", {}).get(name, earlier)) for name in CNN_NAMES}}
    return results


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.post_training",
        description="Magnitude, Wanda and SparseGPT with no retraining, on a byte-level LM "
                    "trained here and on MNIST CNNs.")
    add_standard_options(parser, quick_help="tiny models and data (a smoke test)",
                         default_out=DEFAULT_OUT)
    parser.add_argument("--part", choices=("all", "cnn", "mobilenet"), default="all",
                        help="cnn: rerun the CNNs only, mobilenet: the MobileNetV2-style "
                             "network only, keeping the other parts of the results JSON at "
                             "--out (default: all)")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    paths = output_paths(args, name="post_training", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    previous = json.loads(out.read_text()) if args.part != "all" and out.exists() else None
    results = run(data_dir=args.data, seed=args.seed, quick=args.quick, part=args.part,
                  previous=previous)
    return publish(results, out, readme, summary=markdown_summary(results),
                   markers=(BEGIN, END))


if __name__ == "__main__":
    raise SystemExit(main())
