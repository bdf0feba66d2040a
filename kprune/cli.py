"""The ``kprune`` command line.

Example:
    $ kprune demo --out kprune-demo
    $ kprune run examples/seed_cnn_gradual.yaml --out runs/seed
    $ kprune run recipe.yaml --out runs/mine --data my_images/ --model my_model.keras
    $ kprune run recipe.yaml --out runs/mine --model custom.keras --import my_package.layers
    $ kprune run examples/seed_cnn_gradual.yaml --out runs/seed --resume  # after a kill
    $ kprune plan seed-cnn --plan plan.yaml
    $ kprune export pruned.keras --out out --quantize int8 --sparse --data mnist \\
          --compare baseline.keras
    $ kprune inspect out/pruned-sparse-int8.tflite
    $ kprune sensitivity baseline.keras --data mnist --out sens  # on a validation split
    $ kprune post-training baseline.keras --data mnist --method sparsegpt --out pt
"""

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from kprune import progress

__all__ = ["main", "build_parser"]

QUANTIZE = ("none", "dynamic", "int8", "float16")


def _plan(args):
    from kprune.core.plan import PruningPlan
    from kprune.experiments import models

    if (args.steps_per_epoch is None) != (args.epochs is None):
        raise ValueError("Give both --steps-per-epoch and --epochs, or neither.")
    plan = PruningPlan.default() if args.plan is None else PruningPlan.load(args.plan)
    model = models.load(args.model)
    print(plan.resolve(model, steps_per_epoch=args.steps_per_epoch, epochs=args.epochs))
    return 0


def _demo(args):
    from kprune.experiments.demo import run_demo

    run_demo(args.out, full=args.full, data=args.data, epochs=args.epochs, force=args.force,
             resume=args.resume)
    return 0


def _run(args):
    from kprune.experiments.recipe import Recipe
    from kprune.experiments.runner import run_recipe

    # --data and --model replace the recipe's; their paths are taken from here, not from
    # the recipe's folder, and checked like the recipe's own.
    overrides = {key: (f"--{option}", _from_here(value)) for key, option, value in
                 (("data.source", "data", args.data), ("model", "model", args.model))
                 if value is not None}
    if args.imports:  # --import adds to the recipe's `imports`
        overrides["imports"] = ("--import", args.imports)
    recipe = Recipe.load(args.recipe, overrides=overrides)
    result = run_recipe(recipe, args.out, force=args.force, resume=args.resume,
                        log=(lambda line: None) if args.quiet else print)
    if args.quiet:
        print(f"report: {result.report.markdown_path}")
    return 0


def _from_here(path):
    """A command-line path made absolute (a name such as ``mnist`` stays a name)."""
    from kprune.experiments.models import MODELS
    from kprune.experiments.sources import NAMED_SOURCES

    if path in NAMED_SOURCES or path in MODELS:
        return path
    return str(Path(path).expanduser().absolute())


def _load_data(spec, model, args):
    """``--data`` (any source :func:`kprune.sources.load_data` reads), fitted to ``model``."""
    from kprune.experiments.sources import load_data

    return load_data(spec, model=model, scale=args.scale, seed=args.seed,
                     verbose=not args.quiet)


def _export(args):
    from kprune.experiments.runner import check_out_dir, export_and_compare
    from kprune.tflite import export, measure

    if args.quantize == "int8" and args.data is None:
        raise ValueError(
            "--quantize int8 needs calibration data: pass --data (mnist, an .npz or a "
            "folder) so kprune can take a representative sample of its training split."
        )
    model = _stripped(args.model)
    data = None if args.data is None else _load_data(args.data, model, args)
    baseline = model if args.compare is None else _stripped(args.compare)
    out = check_out_dir(args.out, force=args.force)  # only once every input has been read
    name = export._variant_name(args.quantize, args.sparse)
    if data is None:
        result = export.to_tflite(model, out / f"{Path(args.model).stem}-{name}.tflite",
                                  quantize=args.quantize, sparse=args.sparse)
        sizes = measure.file_sizes(result.path)
        print(f"wrote {result.path}: {sizes['bytes']:,} bytes, {sizes['gzip_bytes']:,} gzipped")
        print(measure.tflite_tensors(result.path))
        return 0
    n = args.test_samples
    report = export_and_compare(
        baseline, model, variants=[name], representative_data=data.x_train[:200],
        x_test=data.x_test[:n], y_test=data.y_test[:n], out_dir=out,
        latency_repeats=args.latency_repeats, title=f"kprune export {args.model}",
        data=data.split_description("test"),
        extra={"data": data.to_dict()},
    )
    print(report)
    print(f"report: {report.markdown_path}")
    return 0


def _stripped(path):
    """Load a .keras/.h5 model; strip pruning wrappers if it still has them."""
    from kprune.engines.saving import load_model
    from kprune.engines.tfkeras import loader
    from kprune.engines.verify import strip

    model = load_model(path)
    if any(isinstance(layer, loader.PruneLowMagnitude) for _, layer in loader.iter_layers(model)):
        print(f"{path}: still has pruning wrappers; stripping them first")
        model = strip(model)
    return model


def _inspect(args):
    from kprune.tflite import measure

    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"No file at this path. Received: FILE={str(path)!r}")
    if path.suffix == ".tflite":
        info = measure.tflite_tensors(path)
        sizes = measure.file_sizes(path)
        print(info)
        print(f"{path}: {sizes['bytes']:,} bytes ({sizes['gzip_bytes']:,} gzipped); "
              f"sparse storage: {'yes' if info.sparse_storage else 'no'}, "
              f"DENSIFY ops: {info.densify_ops}, weight sparsity {info.weight_sparsity:.3f}")
        return 0
    if path.suffix not in (".keras", ".h5"):
        raise ValueError(f"FILE must be a .keras, .h5 or .tflite file. Received: FILE={str(path)!r}")
    from kprune.core import masks
    from kprune.core.layers import effective_weights
    from kprune.core.table import table
    from kprune.engines.saving import load_model
    from kprune.engines.tfkeras import loader

    model = load_model(path, compile=False)
    rows = []
    for name, layer in loader.iter_layers(model):
        for label, kernel in effective_weights(layer):
            rows.append((name, type(getattr(layer, "layer", layer)).__name__, label,
                         "x".join(map(str, kernel.shape)), f"{kernel.size:,}",
                         f"{np.count_nonzero(kernel):,}", f"{masks.sparsity(kernel):.3f}",
                         "yes" if masks.is_n_m(kernel, 2, 4, axis=-2) else "no"))
    header = ("layer", "type", "weight", "shape", "weights", "nonzero", "sparsity", "2:4")
    print(table(header, rows))
    print(f"{path}: {path.stat().st_size:,} bytes; 2:4 is checked along the input-channel axis")
    return 0


def _sensitivity(args):
    from kprune.experiments import models
    from kprune.experiments.runner import check_out_dir
    from kprune.methods import sensitivity

    model = models.load(args.model)
    # A plan chosen on the test split would be tuned to the images its accuracy is later
    # reported on: scan a validation split held out of the training examples instead.
    data = _load_data(args.data, model, args).hold_out(args.validation, seed=args.seed)
    check_out_dir(args.out, force=True, create=False)
    n = min(args.samples, len(data.x_val))
    print(f"sensitivity on {n:,} validation examples held out of the "
          f"{len(data.x_train) + len(data.x_val):,} training examples "
          f"(validation={args.validation}, seed={args.seed}); the test split is not used")
    result = sensitivity.scan(model, data.x_val[:n], data.y_val[:n])
    paths = result.save(args.out, max_drop_pp=args.max_drop)
    print(result)
    print(f"suggested plan (each layer within {args.max_drop:g} pp of the dense accuracy "
          "when pruned alone; all together cost more, so fine-tune and check):")
    print(result.to_plan(max_drop_pp=args.max_drop))
    print(f"wrote {', '.join(str(path) for path in paths.values())}")
    return 0


def _post_training(args):
    import json

    from kprune.core.plan import PruningPlan
    from kprune.engines.saving import save_model
    from kprune.experiments import models
    from kprune.experiments.runner import check_out_dir, export_and_compare
    from kprune.methods import post_training
    from kprune.tflite.export import VARIANTS

    post_training.check_method(args.method)
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown export variant {unknown[0]!r}. Known variants: {list(VARIANTS)}. "
                         f"Received: --variants {' '.join(args.variants)}")
    plan = PruningPlan.default() if args.plan is None else PruningPlan.load(args.plan)
    model = models.load(args.model)
    data = _load_data(args.data, model, args)
    check_out_dir(args.out, force=args.force, create=False)  # before any work
    calibration = data.x_train[:args.calibration]
    print(f"post-training pruning ({args.method}) on {len(calibration):,} calibration "
          "examples from the training split; no labels, no training")
    pruned, result = post_training.prune_post_training(model, calibration, plan,
                                                       method=args.method)
    print(result)
    out = check_out_dir(args.out, force=args.force)
    (out / "post_training.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    save_model(pruned, out / "pruned.keras")
    n = args.test_samples
    report = export_and_compare(
        model, pruned, variants=args.variants, representative_data=data.x_train[:200],
        x_test=data.x_test[:n], y_test=data.y_test[:n], out_dir=out,
        latency_repeats=args.latency_repeats, title=f"kprune post-training {args.model}",
        data=data.split_description("test"),
        extra={"data": data.to_dict(), "post_training": result.to_dict()})
    print(report)
    print(f"wrote {out / 'pruned.keras'}, {out / 'post_training.json'}; "
          f"report: {report.markdown_path}")
    return 0


def _fraction_or_count(text):
    """``--validation``: ``"5000"`` is a count, ``"0.1"`` a fraction (checked when used)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a fraction in (0, 1) or a positive integer count; got {text!r}"
        ) from None


DATA_HELP = ("mnist, fashion-mnist, an .npz (x_train, y_train, x_test, y_test), a folder of "
             "IDX files, or a folder of images in class subfolders")


def _scale(text):
    """``--scale``: ``auto``, ``none`` or a positive number."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be auto, none or a positive number such as 255; got {text!r}") from None


def _data_options(parser, *, seed=True):
    parser.add_argument("--scale", type=_scale, default="auto",
                        help="divide the data by this (auto: pixels by 255 unless the model "
                        "has a Rescaling layer; none: as they are)")
    if seed:
        parser.add_argument("--seed", type=int, default=0,
                            help="seed of an image folder's test split (default: 0)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kprune", description="Per-layer pruning for Keras models on tfmot."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true",
                        help="no progress bars or lines and no training output; results, "
                        "the files written and errors are still printed")
    add = functools.partial(commands.add_parser, parents=[common])

    demo = add("demo", help="the seed tutorial end to end, with the report")
    demo.add_argument("--out", default="kprune-demo", help="run folder (default: kprune-demo)")
    demo.add_argument("--data", default="mnist",
                      help="mnist (best available), a folder of MNIST IDX files, or an .npz")
    demo.add_argument("--full", action="store_true", help="all of MNIST and two epochs each")
    demo.add_argument("--epochs", type=int, help="epochs for the baseline and pruning fits")
    demo.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    demo.add_argument("--resume", action="store_true",
                      help="continue the unfinished demo in --out from its latest checkpoint")
    demo.set_defaults(handler=_demo)

    run = add("run", help="run a recipe (YAML) into a run folder")
    run.add_argument("recipe", help="a recipe file, see examples/")
    run.add_argument("--out", required=True, help="run folder")
    run.add_argument("--data", help=f"replace the recipe's data source: {DATA_HELP}")
    run.add_argument("--model", help="replace the recipe's model: a built-in name or a "
                     ".keras/.h5 classifier")
    run.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                     help="import this Python module first (repeatable), e.g. the one whose "
                     "keras.saving.register_keras_serializable classes the model holds; "
                     "added to the recipe's `imports`; looked up in the recipe's folder, "
                     "then on the Python path")
    run.add_argument("--force", action="store_true",
                     help="overwrite a finished run in --out, or start an unfinished one over")
    run.add_argument("--resume", action="store_true",
                     help="continue the unfinished run in --out from its latest checkpoint")
    run.set_defaults(handler=_run)

    plan = add("plan", help="print the resolved pruning plan for a model")
    plan.add_argument("model", help="a .keras/.h5 file or a built-in name (seed-cnn, lenet-5, ...)")
    plan.add_argument("--plan", help="a plan file (.json/.yaml); default: the built-in plan")
    plan.add_argument("--steps-per-epoch", type=int, help="pin schedules to training steps")
    plan.add_argument("--epochs", type=int, help="pin schedules to training steps")
    plan.set_defaults(handler=_plan)

    exp = add("export", help="convert a model to TFLite, evaluate, report")
    exp.add_argument("model", help="a pruned .keras/.h5 model (stripped or not)")
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--quantize", choices=QUANTIZE, default="none")
    exp.add_argument("--sparse", action="store_true", help="store sparse weights compressed")
    exp.add_argument("--data", help=f"evaluation and int8 calibration data: {DATA_HELP}")
    _data_options(exp)
    exp.add_argument("--compare", metavar="BASELINE_MODEL",
                     help="the dense .keras/.h5 model to compare against")
    exp.add_argument("--test-samples", type=int, default=10000,
                     help="test images to evaluate (default: 10000)")
    exp.add_argument("--latency-repeats", type=int, default=20,
                     help="LiteRT runs per file for the latency (default: 20)")
    exp.add_argument("--force", action="store_true", help="overwrite a finished report in --out")
    exp.set_defaults(handler=_export)

    inspect = add("inspect", help="per-layer or per-tensor sparsity of a file")
    inspect.add_argument("file", help="a .keras, .h5 or .tflite file")
    inspect.set_defaults(handler=_inspect)

    sens = add(
        "sensitivity", help="per-layer sensitivity scan and a plan",
        description="Prune each layer alone and measure the accuracy drop, on a validation "
        "split held out of the training images (never the test split), as `kprune run` "
        "holds out its `validation` split; then suggest a plan.",
    )
    sens.add_argument("model", help="a trained .keras/.h5 model")
    sens.add_argument("--data", default="mnist",
                      help=f"{DATA_HELP} (the validation split comes from its training "
                      "examples; its test split is not used)")
    _data_options(sens, seed=False)
    sens.add_argument("--out", required=True, help="output folder")
    sens.add_argument("--validation", type=_fraction_or_count, default=0.1,
                      help="validation split held out of the training images: a fraction "
                      "in (0, 1) or a count (default: 0.1, as in recipes)")
    sens.add_argument("--seed", type=int, default=0,
                      help="seed of the validation split and of an image folder's test "
                      "split (default: 0, as in recipes)")
    sens.add_argument("--samples", type=int, default=2000,
                      help="validation images to scan on (default: 2000)")
    sens.add_argument("--max-drop", type=float, default=1.0,
                      help="accuracy drop (percentage points) allowed per layer in the plan")
    sens.set_defaults(handler=_sensitivity)

    post = add("post-training",
               help="prune a trained model from calibration data, no retraining",
               description="Prune a trained model in one shot from unlabeled examples of "
               "its training split (magnitude, Wanda or SparseGPT; the plan's targets and "
               "N:M), then save it, export it to TFLite and compare it with the dense model.")
    post.add_argument("model", help="a trained .keras/.h5 model")
    post.add_argument("--data", default="mnist",
                      help=f"{DATA_HELP} (calibration from its training split, evaluation "
                      "on its test split)")
    _data_options(post)
    post.add_argument("--method", default="sparsegpt", help="magnitude, wanda or sparsegpt "
                      "(default: sparsegpt)")
    post.add_argument("--plan", help="a plan file (.json/.yaml); default: the built-in plan")
    post.add_argument("--calibration", type=int, default=512,
                      help="calibration examples (default: 512)")
    post.add_argument("--out", required=True, help="output folder")
    post.add_argument("--variants", nargs="+", default=["float", "sparse"],
                      help="TFLite variants to export (default: float sparse)")
    post.add_argument("--test-samples", type=int, default=10000,
                      help="test images to evaluate (default: 10000)")
    post.add_argument("--latency-repeats", type=int, default=20,
                      help="LiteRT runs per file for the latency (default: 20)")
    post.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    post.set_defaults(handler=_post_training)
    return parser


def main(argv=None):
    """Run the CLI; returns the exit code (0 on success, 2 on bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        if args.quiet:  # no progress bars or lines, no Keras training output
            with progress.quiet():
                return args.handler(args)
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError) as err:
        message = " ".join(str(err).split())
        # a damaged file's bytes can reach the message as lone surrogates: show them escaped
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"kprune {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
