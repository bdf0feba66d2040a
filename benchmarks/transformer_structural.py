"""Structural pruning of a small ViT and a byte-level language model: half their heads and
neurons, or a quarter of their blocks.

A Keras 3 ViT-style classifier (patches by a strided ``Conv2D``, a learned position
embedding added to them, pre-norm blocks of ``MultiHeadAttention`` and a GELU feed-forward
``Dense`` pair, the tokens flattened into a ``Dense`` head) is trained here on the first
55,000 MNIST training images (Adam, cosine decay, random shifts of up to 2 pixels), the
last 5,000 held out as the validation split on which the pruning settings were chosen;
then, with no labels and no training:

- ``heads+neurons``: 50 % of the attention heads and 50 % of the feed-forward neurons
  removed (``structural.prune(model, {"heads": 0.5, "channels": 0.5})``, the residual
  stream left whole), scored by ``l1`` kernel norms or by ``fisher`` on calibration images
  (the model's own top class as the label), with and without the least-squares correction
  (``correct="least_squares"``: every Dense and attention output projection after a
  removal, the head included, re-fitted in graph order on the corrected model's
  activations to the original's outputs, a residual branch's to the block's output,
  shortcut included; and, as Kwon et al. do, only the layers that lost inputs or heads);
- ``blocks``: 25 % of the transformer blocks (attention and feed-forward sub-blocks
  together; at least one) dropped whole (``structural.drop_blocks(model, k,
  unit="transformer")``), ranked by block influence on the calibration images (ShortGPT's
  ``1 - cos(x_in, x_out)``, the block's input against its output);

then the Fisher-and-corrected model and the block-dropped one fine-tuned ``tune`` epochs
(full mode: one epoch over the first 10,000 training images, to fit the run in ~20 min on
two shared cores), beside the dense model fine-tuned alike (the control). Accuracy on the test
split (Keras), MACs and parameters for every model; the dense, heads+neurons and blocks
models exported to TFLite (TensorFlow backend, ``kprune.export.to_tflite``), their LiteRT
accuracy and size by ``kprune.report.compare``, and their latency at batch 1, one thread, in
interleaved rounds by ``kprune.measure.latency_rounds`` (median of within-round ratios to
the dense file, with the range).

The language model is the post-training benchmark's byte-level GPT (``benchmarks.post_training``:
its corpus, split, sizes and schedule, with fewer steps) with keras ``MultiHeadAttention``
called with ``use_causal_mask=True`` in place of its weightless attention layer, so that
kprune sees its heads; the same rows, scored by held-out perplexity and next-byte accuracy
(Keras and LiteRT), the fine-tune one epoch over fresh training windows.

    python -m benchmarks.transformer_structural            # full MNIST and the full LM
    python -m benchmarks.transformer_structural --quick    # 400 images, a 2-block ViT, a tiny LM
    python -m benchmarks.transformer_structural --part vit # the ViT only; the LM section of
                                                           # the existing --out JSON is kept

Writes the results JSON (``--out``; default ``benchmarks/results/transformer_structural.json``),
the report and .tflite files (``--work``; default ``runs/transformer_structural``), and in
full mode the tables into ``benchmarks/README.md`` between the ``transformer_structural``
markers.
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

DEFAULT_OUT = REPO / "benchmarks" / "results" / "transformer_structural.json"
BEGIN = "<!-- transformer_structural:begin -->"
END = "<!-- transformer_structural:end -->"

HEADS, NEURONS, BLOCKS = 0.5, 0.5, 0.25  # the fractions
#: The row of Kwon et al.'s mask search: ``HEADS`` of the heads' and neurons' MACs removed,
#: Fisher-ranked, split between heads and neurons where it keeps the most importance.
SEARCH = "macs search fisher+ls"
#: The row whose correction re-fits only the layers that lost inputs or heads (Kwon et al.'s
#: mask tuning; the other ``+ls`` rows also re-fit every layer after a removal).
REMOVED_ONLY = "heads+neurons fisher+ls removed-only"
#: (model, ViT size, training) of each mode: ``n_val`` training images held out (the last
#: ones) as the validation split, ``shift`` pixels of random translation while training,
#: ``calibration`` unlabeled training images for the Fisher scores and the block influence,
#: ``correction`` for the least-squares correction.
FULL = dict(n_train=None, n_val=5000, n_test=None, dense_epochs=8, shift=2, tune_epochs=1,
            tune_images=10000, batch_size=128, calibration=128, correction=4096, rounds=7,
            repeats=100, vit=dict(blocks=4, dim=64, heads=4, ffn=256, patch=7))
QUICK = dict(n_train=400, n_val=200, n_test=200, dense_epochs=2, shift=0, tune_epochs=1,
             tune_images=None, batch_size=32, calibration=16, correction=32, rounds=2,
             repeats=5, vit=dict(blocks=2, dim=32, heads=4, ffn=64, patch=7))
#: The models exported to TFLite and timed, the baseline first.
EXPORTED = ("dense", "heads+neurons fisher+ls+ft", "blocks influence+ft")
TARGETS = {"x_faster": 1.5, "pp_within_dense": 1.0}  # at half the heads and neurons
#: Published rows for the README, beside ours: (source, what was removed, speed, lost).
PARTS = ("both", "vit")
PUBLISHED = [
    ("Kwon et al. 2022, BERT-base (GLUE, SQuAD)", "heads and filters (Fisher mask search, "
     "least-squares mask tuning), 2.0x fewer FLOPs", "1.56x lower latency",
     "under 1 % accuracy, no retraining"),
    ("ShortGPT (Men et al. 2024), LLaMA-2-13B", "10 of 40 layers, 25 % (block influence)",
     "about 25 % fewer parameters and computation", "MMLU 55.0 -> 52.2, no retraining"),
]


def vit(*, blocks=4, dim=64, heads=4, ffn=256, patch=7, classes=10, input_shape=(28, 28, 1)):
    """A pre-norm ViT-style Keras 3 classifier: strided-conv patches plus a learned position
    embedding, ``blocks`` blocks, the head reading the flattened tokens (each at its
    position) instead of their average.

    Example:
        >>> vit(blocks=2, dim=32).get_layer("mha_1").get_config()["num_heads"]
        4
    """
    import keras
    import keras_hub

    L = keras.layers
    image = keras.Input(input_shape, name="image")
    x = L.Conv2D(dim, patch, strides=patch, name="patch")(image)
    tokens = (input_shape[0] // patch) * (input_shape[1] // patch)
    x = L.Reshape((tokens, dim), name="tokens")(x)
    x = L.Add(name="add_positions")([x, keras_hub.layers.PositionEmbedding(
        tokens, name="positions")(x)])
    for b in range(1, blocks + 1):
        h = L.LayerNormalization(name=f"ln_a{b}")(x)
        x = L.Add(name=f"add_a{b}")([x, L.MultiHeadAttention(
            heads, dim // heads, name=f"mha_{b}")(h, h)])
        h = L.LayerNormalization(name=f"ln_f{b}")(x)
        h = L.Dense(ffn, activation="gelu", name=f"ffn_up_{b}")(h)
        x = L.Add(name=f"add_f{b}")([x, L.Dense(dim, name=f"ffn_down_{b}")(h)])
    x = L.Flatten(name="flatten")(L.LayerNormalization(name="ln")(x))
    return keras.Model(image, L.Dense(classes, name="head")(x), name="vit")


#: The language model: the post-training benchmark's byte-level GPT (same corpus, split,
#: sizes and training schedule, fewer steps to fit the run) with keras ``MultiHeadAttention``.
LM_FULL = dict(context=64, width=128, heads=4, blocks=4, ffn=512, steps=1000, batch=32,
               train_bytes=4_000_000, calibration=128, held_out=512, tune_windows=4096,
               rounds=7, repeats=100)
LM_QUICK = dict(context=32, width=32, heads=4, blocks=2, ffn=64, steps=8, batch=16,
                train_bytes=200_000, calibration=8, held_out=32, tune_windows=16,
                rounds=2, repeats=5, eager=True,  # eager: a few steps cost less than tracing
                exported=EXPORTED[:2])  # each conversion takes seconds


def language_model(*, context, width, heads, blocks, ffn, **_):
    """The post-training benchmark's byte-level GPT (pre-LN blocks, GELU feed-forward,
    learned positions, no bias on the head) with its attention a keras
    ``MultiHeadAttention`` called with ``use_causal_mask=True``, whose heads kprune removes.

    Example:
        >>> language_model(context=32, width=32, heads=4, blocks=2, ffn=64).get_layer(
        ...     "mha_2").get_config()["num_heads"]
        4
    """
    import keras
    import keras_hub

    L = keras.layers
    tokens = keras.Input((context,), dtype="int32", name="tokens")
    h = L.Embedding(256, width, name="embed")(tokens)
    h = L.Add(name="add_positions")([h, keras_hub.layers.PositionEmbedding(
        context, name="positions")(h)])
    for b in range(1, blocks + 1):
        a = L.LayerNormalization(name=f"ln_a{b}")(h)
        h = L.Add(name=f"add_a{b}")([h, L.MultiHeadAttention(
            heads, width // heads, name=f"mha_{b}")(a, a, use_causal_mask=True)])
        f = L.LayerNormalization(name=f"ln_f{b}")(h)
        f = L.Dense(ffn, activation="gelu", name=f"ffn_up_{b}")(f)
        h = L.Add(name=f"add_f{b}")([h, L.Dense(width, name=f"ffn_down_{b}")(f)])
    h = L.LayerNormalization(name="ln_final")(h)
    return keras.Model(tokens, L.Dense(256, use_bias=False, name="head")(h), name="byte_gpt")


def run_lm(*, work, seed=0, quick=False):
    """The language-model half: train, prune, correct, fine-tune, export and measure."""
    import keras

    from benchmarks import post_training
    from kprune import measure

    started = elapsed()
    cfg = dict(LM_QUICK if quick else LM_FULL)
    trained = post_training.train_lm(cfg, seed, build=language_model)
    dense, calibration = trained["model"], trained["calibration"]
    x_eval, y_eval = trained["eval"]
    x_tune, y_tune = post_training.windows(trained["train_tokens"], cfg["context"],
                                           cfg["tune_windows"], seed + 3)

    def fine_tune(model):
        model.compile(optimizer=keras.optimizers.Adam(3e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      run_eagerly=cfg.get("eager", False))
        model.fit(x_tune, y_tune, batch_size=cfg["batch"], epochs=1, verbose=0)
        return model

    def scores(logits):
        return {"perplexity": post_training.perplexity_of_logits(logits, y_eval),
                "accuracy": float(np.mean(np.argmax(logits, -1) == y_eval))}

    pruned = pruned_models(dense, calibration, exclude=(), fine_tune=fine_tune,
                           tuning=f"one epoch over {len(x_tune):,} fresh training windows")
    built, seconds = pruned["built"], pruned["seconds"]
    rows = measured_rows(built, seconds, lambda model: scores(
        model.predict(x_eval, batch_size=64, verbose=0)))
    files = exported(built, cfg.get("exported", EXPORTED), work, prefix="lm_")
    litert = {f"{name}/float": dict(scores(measure.predict_tflite(result.path, x_eval)),
                                    bytes=result.bytes) for name, result in files.items()}
    log(f"lm latency: {cfg['rounds']} interleaved rounds of {cfg['repeats']} runs per file")
    latency = measure.latency_rounds({f"{name}/float": result.path
                                      for name, result in files.items()},
                                     baseline="dense/float", rounds=cfg["rounds"],
                                     repeats=cfg["repeats"])
    log(f"lm half: {elapsed() - started:.1f} s")
    return {
        "seconds": round(elapsed() - started, 1),
        "settings": dict(cfg, heads_fraction=HEADS, neurons=NEURONS, blocks_fraction=BLOCKS,
                         blocks_dropped=pruned["dropped"], blocks_unit="transformer"),
        "corpus": trained["corpus"],
        "train_seconds": round(trained["train_seconds"], 1),
        "fisher_seconds": seconds["fisher scores"],
        "selection": str(pruned["keep"]),
        "models": rows,
        "block_influence": pruned["scores"],
        "structural": pruned["structural"],
        "litert": litert,
        "latency": latency,
        "targets": dict(targets(rows, latency), perplexity_ratio_with_correction_no_fine_tune=(
            rows["heads+neurons fisher+ls"]["perplexity"] / rows["dense"]["perplexity"])),
    }


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transformer_structural",
        description="Heads, feed-forward neurons and blocks of a small ViT on MNIST and of a "
                    "byte-level language model removed with calibration-based criteria and "
                    "the least-squares correction: accuracy (perplexity), MACs, parameters "
                    "and LiteRT latency.")
    add_standard_options(parser, quick_help="400 training images, a 2-block ViT, a tiny LM "
                         "(a smoke test)", default_out=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "transformer_structural",
                        help="folder for the .tflite files and the report")
    parser.add_argument("--dense-epochs", type=int,
                        help="override the mode's dense training epochs")
    parser.add_argument("--part", choices=PARTS, default="both",
                        help="'vit': run the ViT only and keep the language-model section of "
                             "the existing --out JSON (the JSON says which run made each "
                             "part, and when); 'both' (default): run both")
    return parser


def main(argv=None):
    """Run the benchmark; returns 0 (2 if the MNIST files are missing)."""
    args = build_parser().parse_args(argv)
    if args.dense_epochs is not None and args.dense_epochs < 1:
        print(f"error: --dense-epochs must be at least 1. Received: {args.dense_epochs}",
              file=sys.stderr)
        return 2
    paths = output_paths(args, name="transformer_structural", default_out=DEFAULT_OUT)
    if paths is None:
        return 2
    out, readme = paths
    kept_lm = None
    if args.part == "vit":
        kept_lm = _earlier_lm(out)
        if kept_lm is None:
            print(f"error: --part vit keeps the language-model section of {out}, which has "
                  "none; run both parts first. Received: --part vit", file=sys.stderr)
            return 2
    results = run(data_dir=args.data, work=args.work, seed=args.seed, quick=args.quick,
                  dense_epochs=args.dense_epochs, lm=kept_lm)
    return publish(results, out, readme, summary=markdown_summary(results),
                   markers=(BEGIN, END))


def _earlier_lm(path):
    """``(lm section, when it was measured)`` of the results JSON at ``path``, or None."""
    import json

    path = Path(path)
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    if "lm" not in earlier:
        return None
    parts = earlier.get("parts", {})
    when = parts.get("lm", {}).get("measured") or earlier["report"]["created"]
    return earlier["lm"], when


def run(*, data_dir, work, seed=0, quick=False, dense_epochs=None, lm=None):
    """Train, prune, correct, fine-tune, export and measure; return the results dict.

    ``lm``: ``(language-model section, when measured)`` of an earlier run, kept instead of
    running the language model again.
    """
    import keras

    from kprune import data, report
    from kprune.engines.classifier import accuracy, compile_classifier

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("the LiteRT export needs the TensorFlow backend "
                           f"(KERAS_BACKEND=tensorflow); this is {keras.backend.backend()}")
    cfg = dict(QUICK if quick else FULL)
    if dense_epochs is not None:
        cfg["dense_epochs"] = dense_epochs
    (x_all, y_all), (x_test, y_test) = data.load_mnist(data_dir, verbose=False)
    n_val = cfg["n_val"]  # the last training images: the validation split
    x_val, y_val = x_all[-n_val:], y_all[-n_val:]
    x_train, y_train = x_all[:-n_val][:cfg["n_train"]], y_all[:-n_val][:cfg["n_train"]]
    x_test, y_test = x_test[:cfg["n_test"]], y_test[:cfg["n_test"]]
    calibration = x_train[:cfg["calibration"]]  # unlabeled: no y is read with it
    correction = x_train[:cfg["correction"]]
    log(f"MNIST: {len(x_train):,} train / {len(x_val):,} validation / {len(x_test):,} "
        f"test; calibration {len(calibration)} training images (Fisher, influence), "
        f"{len(correction)} for the correction")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)

    def fit(model, epochs, learning_rate, images=None):
        compile_classifier(model, learning_rate=learning_rate)
        model.fit(x_train[:images], y_train[:images], batch_size=cfg["batch_size"],
                  epochs=epochs, verbose=0 if quick else 2, shuffle=True)
        return model

    dense = vit(**cfg["vit"])
    log(f"dense ViT {cfg['vit']}, {cfg['dense_epochs']} epoch(s), cosine decay, shifts of "
        f"up to {cfg['shift']} pixels")
    start = elapsed()
    train_dense(dense, x_train, y_train, epochs=cfg["dense_epochs"], shift=cfg["shift"],
                batch_size=cfg["batch_size"], rng=rng, verbose=0 if quick else 2)
    train_seconds = round(elapsed() - start, 1)
    log(f"dense training: {train_seconds:.0f} s")
    tune, images = cfg["tune_epochs"], cfg["tune_images"]
    stream = ("patch",)  # the residual stream stays whole: heads and neurons only
    pruned = pruned_models(dense, calibration, exclude=stream,
                           fine_tune=lambda model: fit(model, tune, 3e-4, images),
                           tuning=f"{tune} epoch(s) over {images or len(x_train):,} images",
                           correction=correction)
    built, seconds, keep = pruned["built"], pruned["seconds"], pruned["keep"]
    rows = measured_rows(built, seconds, lambda model: {
        "accuracy": float(accuracy(model, x_test, y_test)),
        "validation_accuracy": float(accuracy(model, x_val, y_val))})
    variants = [report.Variant.from_export(result, model=built[name], group=name)
                for name, result in exported(built, EXPORTED, work).items()]
    measured, latency = litert_measurements(
        variants, x_test=x_test, y_test=y_test, work=work, title="transformer structural pruning",
        rounds=cfg["rounds"], repeats=cfg["repeats"])
    now = measured.data["created"]
    if lm is None:
        lm, lm_when, lm_run = run_lm(work=work, seed=seed, quick=quick), now, "this run"
    else:
        (lm, lm_when), lm_run = lm, "an earlier run (--part vit kept it)"
    return {
        "benchmark": "transformer_structural",
        "mode": "quick" if quick else "full",
        "seed": seed,
        "repeats": 1,
        "settings": dict(cfg, heads=HEADS, neurons=NEURONS, blocks=BLOCKS,
                         blocks_dropped=pruned["dropped"], blocks_unit="transformer",
                         excluded=list(stream)),
        "fisher_seconds": seconds["fisher scores"],
        "selection": str(keep),
        "parts": {"vit": {"run": "this run", "measured": now},
                  "lm": {"run": lm_run, "measured": lm_when}},
        "train_seconds": train_seconds,
        "data": {"train": len(x_train), "validation": len(x_val), "test": len(x_test),
                 "source": str(data_dir)},
        "keras": keras.__version__,
        "models": rows,
        "block_influence": pruned["scores"],
        "structural": pruned["structural"],
        "report": measured.data,
        "latency": latency,
        "targets": targets(rows, latency),
        "lm": lm,
        "seconds": round(elapsed(), 1),
    }


def train_dense(model, x, y, *, epochs, shift, batch_size, rng, verbose):
    """Train ``model`` from scratch: Adam from 1e-3 with a cosine decay to 0 over all the
    steps, each epoch on the images shifted at random by up to ``shift`` pixels each way
    (0: not shifted)."""
    import keras

    steps = epochs * -(-len(x) // batch_size)
    model.compile(optimizer=keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    for _ in range(epochs):
        model.fit(shifted(x, shift, rng), y, batch_size=batch_size, epochs=1,
                  verbose=verbose, shuffle=True)
    return model


def shifted(images, shift, rng):
    """``images`` (n, height, width, channels), each moved by a random whole number of
    pixels in [-shift, shift] along both axes, zeros shifted in.

    Example:
        >>> shifted(np.eye(3)[None, ..., None], 0, np.random.default_rng(0)).shape
        (1, 3, 3, 1)
    """
    if shift == 0:
        return images
    n, height, width = images.shape[:3]
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    down, right = (rng.integers(-shift, shift + 1, n) for _ in range(2))
    out = np.empty_like(images)
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            chosen = (down == dy) & (right == dx)
            out[chosen] = padded[chosen, shift - dy:shift - dy + height,
                                 shift - dx:shift - dx + width]
    return out


def pruned_models(dense, calibration, *, exclude, fine_tune, tuning, correction=None):
    """The benchmark's rows for one trained model, with no labels: half its heads and
    neurons by ``l1``, ``fisher`` and ``fisher`` + least squares; a quarter of its
    transformer blocks (at least one) by influence; the corrected and block-dropped models
    and a copy of ``dense`` after ``fine_tune(model)`` (``tuning`` says how, for the log).

    ``correction``: the inputs of the least-squares correction (default: ``calibration``).

    Returns ``dict(built={row: model}, seconds={row: s}, keep=Selection, scores={block:
    influence}, dropped=[blocks], structural={row: summary table})``.
    """
    from kprune import structural
    from kprune.engines.wrap import copy_model

    fraction = {"heads": HEADS, "channels": NEURONS}
    built, seconds = {"dense": dense}, {}

    def timed(name, make):
        start = elapsed()
        built[name] = make()
        seconds[name] = round(elapsed() - start, 2)
        log(f"{name}: {seconds[name]:.1f} s")

    timed("heads+neurons l1", lambda: structural.prune(dense, fraction, exclude=exclude))
    start = elapsed()  # Fisher scores once; the corrected model re-fits the same removal
    keep = structural.select(dense, fraction, criterion="fisher", data=calibration,
                             exclude=exclude)
    seconds["fisher scores"] = round(elapsed() - start, 2)
    log(f"Fisher scores on {len(calibration)} inputs, {seconds['fisher scores']:.1f} s:"
        f"\n{keep}")
    timed("heads+neurons fisher", lambda: structural.remove_units(dense, keep))
    correction = calibration if correction is None else correction
    timed("heads+neurons fisher+ls", lambda: structural.correct(
        dense, built["heads+neurons fisher"], keep, correction))
    timed(REMOVED_ONLY, lambda: structural.correct(
        dense, built["heads+neurons fisher"], keep, correction, refit="removed"))
    # Kwon et al.'s mask search: half the heads' and neurons' MACs, split between them
    timed(SEARCH, lambda: structural.prune(
        dense, HEADS, cost="macs", criterion="fisher", data=calibration, exclude=exclude,
        correct="least_squares", calibration=correction))
    whole = structural.residual_blocks(dense, unit="transformer")
    n_blocks = max(1, int(BLOCKS * sum(b.droppable for b in whole)))  # quick: 1 of 2
    scores = structural.block_scores(dense, criterion="influence", data=calibration,
                                     unit="transformer")
    timed("blocks influence", lambda: structural.drop_blocks(
        dense, n_blocks, criterion="influence", data=calibration, unit="transformer"))
    dropped = sorted(set(scores) - {layer.name for layer in built["blocks influence"].layers})
    log(f"dropped the transformer block(s) {dropped} of block influences "
        + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    log(f"fine-tune {tuning}: the corrected model, the block-dropped one and the dense "
        "control")
    for name in ("heads+neurons fisher+ls", "blocks influence"):
        built[f"{name}+ft"] = fine_tune(copy_model(built[name]))
    built["dense+ft"] = fine_tune(copy_model(dense))
    return dict(built=built, seconds=seconds, keep=keep, scores=scores, dropped=dropped,
                structural={name: structural.summary(dense, built[name]) for name in
                            ("heads+neurons fisher+ls", "blocks influence")})


def measured_rows(built, seconds, score):
    """``{row: dict(score(model), macs, params, seconds)}`` of every built model, logged."""
    from kprune import measure

    rows = {}
    for name, model in built.items():
        rows[name] = dict(score(model), macs=int(measure.count_macs(model)),
                          params=int(model.count_params()), seconds=seconds.get(name))
        log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items()
                                    if k not in ("macs", "params", "seconds"))
            + f", {rows[name]['macs']:,} MACs, {rows[name]['params']:,} params")
    return rows


def exported(built, names, work, prefix=""):
    """``{name: ExportResult}``: the models ``names`` written as float .tflite into ``work``."""
    from kprune import export

    work = Path(work)
    return {name: export.to_tflite(
        built[name], work / f"{prefix}{name.replace(' ', '_').replace('+', '_')}.tflite",
        variant="float") for name in names}


def targets(rows, latency):
    """The issue's targets at half the heads and neurons, from the measured figures."""
    speed = latency["files"]["heads+neurons fisher+ls+ft/float"]["x_faster"]
    corrected = rows["heads+neurons fisher+ls"]["accuracy"]
    lost = 100 * (rows["dense"]["accuracy"] - corrected)
    searched = 100 * (rows["dense"]["accuracy"] - rows[SEARCH]["accuracy"])
    return {"x_faster": speed, "x_faster_met": speed >= TARGETS["x_faster"],
            "pp_lost_with_correction_no_fine_tune": lost,
            "pp_met": lost <= TARGETS["pp_within_dense"],
            "pp_lost_mac_search_with_correction_no_fine_tune": searched}


def markdown_summary(results):
    """The text that goes into benchmarks/README.md."""
    rep, lat, rows = results["report"], results["latency"], results["models"]
    env, mach, cfg = rep["versions"], rep["machine"], results["settings"]
    dense = rows["dense"]
    parts = results["parts"]
    lines = [
        f"Measured {rep['created']} in **{results['mode']}** mode: ViT {cfg['vit']} with a "
        f"learned position embedding, {results['data']['train']:,} training / "
        f"{results['data']['validation']:,} validation (the last training images, on which "
        f"the settings were chosen) / {results['data']['test']:,} test images, "
        f"dense {cfg['dense_epochs']} epoch(s) (Adam, cosine decay, random shifts of up to "
        f"{cfg['shift']} pixels; {results['train_seconds'] / 60:.1f} min), fine-tune "
        f"{cfg['tune_epochs']} over {cfg['tune_images'] or results['data']['train']:,} "
        f"images, calibration {cfg['calibration']} unlabeled training images (Fisher "
        f"scores, block influence) and {cfg['correction']} for the least-squares "
        f"correction, seed {results['seed']}, one run, {results['seconds'] / 60:.1f} min "
        f"(the language model: {parts['lm']['run']}, measured {parts['lm']['measured']})."
        f" Keras {results['keras']}, TF "
        f"{env['tensorflow']}; {mach['platform']}, {mach['cpu_count']} usable CPU(s). "
        f"Transformer blocks dropped (attention and feed-forward together, named by "
        f"their feed-forward Add): {', '.join(cfg['blocks_dropped'])}.",
        "",
        f"Fisher scores of the heads and neurons: {results['fisher_seconds']:.1f} s on "
        f"{cfg['calibration']} images (per-image gradients, 64 images at a time); `prune s` "
        "below is the removal (and the correction) after them.",
        "",
        "| model | accuracy % | vs dense pp | validation % | MACs | x fewer MACs | params "
        "| prune s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| `{name}` | {100 * row['accuracy']:.2f} | "
            f"{100 * (row['accuracy'] - dense['accuracy']):+.2f} | "
            f"{100 * row['validation_accuracy']:.2f} | {_cost_cells(row, dense)}")
    lines += [
        "",
        f"LiteRT, batch {lat['batch']}, {lat['threads']} thread, {lat['rounds']} interleaved "
        f"rounds of {lat['repeats']} runs per file: median of the round medians, and the "
        "median and range of the within-round speed-up over `dense/float`:",
        "",
        "| file | LiteRT accuracy % | KB | latency ms | x faster [range] |",
        "|---|---:|---:|---:|---:|",
    ]
    by_name = {v["name"]: v for v in rep["variants"]}
    for name, row in lat["files"].items():
        variant = by_name[name]
        lines.append(f"| `{name}` | {100 * variant['accuracy']:.2f} | "
                     f"{variant['bytes'] / 1024:.0f} | {row['median_ms']:.3f} | "
                     f"{speedup(row)} |")
    met = results["targets"]
    lines += ["", f"Targets at half the heads and neurons: >= {TARGETS['x_faster']}x faster "
              f"in LiteRT: {met['x_faster']:.2f}x ({'met' if met['x_faster_met'] else 'missed'});"
              f" within {TARGETS['pp_within_dense']:g} pp of dense after the correction with "
              f"no fine-tune: {met['pp_lost_with_correction_no_fine_tune']:.2f} pp lost "
              f"({'met' if met['pp_met'] else 'missed'}); Kwon et al.'s mask search at the "
              f"same half of the heads' and neurons' MACs, corrected: "
              f"{met['pp_lost_mac_search_with_correction_no_fine_tune']:.2f} pp lost."]
    return "\n".join(lines + [""] + lm_summary(results["lm"]) + [""]
                     + published_table(results))


def published_table(results):
    """Our rows at half the heads and neurons and at a quarter of the blocks, beside the
    published ones, with no retraining."""
    lines = ["Beside the published rows (no retraining anywhere; ours with the least-squares "
             "correction for heads and neurons, none for blocks):", "",
             "| source | removed | speed | lost |", "|---|---|---|---|"]
    for source, removed, speed, lost in PUBLISHED:
        lines.append(f"| {source} | {removed} | {speed} | {lost} |")
    for label, part in (("ViT on MNIST", results), ("byte LM", results["lm"])):
        rows, files = part["models"], part["latency"]["files"]
        dense = rows["dense"]
        for row, file, removed in (
                ("heads+neurons fisher+ls", "heads+neurons fisher+ls+ft/float",
                 "50 % of heads and feed-forward neurons"),
                (SEARCH, None, "50 % of the heads' and neurons' MACs (Fisher mask search, "
                 "split between heads and neurons)"),
                ("blocks influence", "blocks influence+ft/float",
                 f"{len(part['settings']['blocks_dropped'])} of "
                 f"{len(part['block_influence'])} transformer blocks (block influence)")):
            if row not in rows or (file is not None and file not in files):
                continue
            speed = ("not exported" if file is None else f"{files[file]['x_faster']:.2f}x "
                     "faster in LiteRT (after the fine-tune; same shapes)")
            lost = f"{100 * (dense['accuracy'] - rows[row]['accuracy']):.2f} pp " + (
                "accuracy" if "perplexity" not in dense else
                f"next-byte accuracy, perplexity {rows[row]['perplexity'] / dense['perplexity']:.2f}x")
            lines.append(f"| kprune here, {label} | {removed}, "
                         f"{dense['macs'] / rows[row]['macs']:.2f}x fewer MACs | "
                         f"{speed} | {lost} |")
    return lines


def lm_summary(lm):
    """The language model's lines of the README text."""
    cfg, rows, lat, met = lm["settings"], lm["models"], lm["latency"], lm["targets"]
    dense = rows["dense"]
    lines = [
        f"Language model: the post-training benchmark's byte-level GPT with keras "
        f"`MultiHeadAttention` (context {cfg['context']}, width {cfg['width']}, "
        f"{cfg['heads']} heads, {cfg['blocks']} blocks, feed-forward {cfg['ffn']}), "
        f"trained {cfg['steps']} steps of {cfg['batch']} windows in "
        f"{lm['train_seconds'] / 60:.1f} min on the standard library's sources "
        f"({lm['corpus']['files']} files, every 10th held out); scored on "
        f"{cfg['held_out']} held-out windows (perplexity, and next-byte accuracy); "
        f"calibration {cfg['calibration']} windows of the calibration files; fine-tune "
        f"one epoch over {cfg['tune_windows']:,} fresh training windows. Fisher scores "
        f"{lm['fisher_seconds']:.1f} s. Blocks dropped: {', '.join(cfg['blocks_dropped'])}.",
        "",
        "| model | perplexity | x dense | next-byte accuracy % | vs dense pp | MACs | "
        "x fewer MACs | params | prune s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| `{name}` | {row['perplexity']:.3f} | "
            f"{row['perplexity'] / dense['perplexity']:.2f} | {100 * row['accuracy']:.2f} | "
            f"{100 * (row['accuracy'] - dense['accuracy']):+.2f} | {_cost_cells(row, dense)}")
    lines += [
        "",
        f"LiteRT, batch {lat['batch']}, {lat['threads']} thread, {lat['rounds']} interleaved "
        f"rounds of {lat['repeats']} runs per file (as above):",
        "",
        "| file | LiteRT perplexity | KB | latency ms | x faster [range] |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in lat["files"].items():
        lines.append(f"| `{name}` | {lm['litert'][name]['perplexity']:.3f} | "
                     f"{lm['litert'][name]['bytes'] / 1024:.0f} | {row['median_ms']:.3f} | "
                     f"{speedup(row)} |")
    lines += ["", f"Targets at half the heads and neurons: >= {TARGETS['x_faster']}x faster "
              f"in LiteRT: {met['x_faster']:.2f}x ({'met' if met['x_faster_met'] else 'missed'});"
              f" within {TARGETS['pp_within_dense']:g} pp of dense next-byte accuracy after the "
              f"correction with no fine-tune: {met['pp_lost_with_correction_no_fine_tune']:.2f} "
              f"pp lost ({'met' if met['pp_met'] else 'missed'}; perplexity "
              f"{met['perplexity_ratio_with_correction_no_fine_tune']:.2f}x dense)."]
    return lines


def _cost_cells(row, dense):
    """The table cells every model row ends with: MACs, x fewer than dense, params, prune s."""
    seconds = "" if row["seconds"] is None else format(row["seconds"], ".1f")
    return (f"{row['macs']:,} | {dense['macs'] / row['macs']:.2f} | {row['params']:,} | "
            f"{seconds} |")


if __name__ == "__main__":
    sys.exit(main())
