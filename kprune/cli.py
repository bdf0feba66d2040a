"""The ``kprune`` command line: ``plan`` and ``demo`` (more commands join as they land).

Example:
    $ kprune plan seed-cnn
    $ kprune plan my_model.keras --plan plan.yaml
    $ kprune demo --out kprune-demo
"""

import argparse
import sys

__all__ = ["main"]


def _plan(args):
    from kprune import models
    from kprune.plan import PruningPlan

    plan = PruningPlan.default() if args.plan is None else PruningPlan.load(args.plan)
    model = models.load(args.model)
    steps = dict(steps_per_epoch=args.steps_per_epoch, epochs=args.epochs)
    if (args.steps_per_epoch is None) != (args.epochs is None):
        raise ValueError("Give both --steps-per-epoch and --epochs, or neither.")
    print(plan.resolve(model, **steps))
    return 0


def _demo(args):
    from kprune.demo import run_demo

    run_demo(args.out, data_dir=args.data, full=args.full, epochs=args.epochs)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kprune", description="Per-layer pruning for Keras models on tfmot."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = commands.add_parser("plan", help="print the resolved pruning plan for a model")
    plan.add_argument("model", help="a .keras/.h5 file or a built-in name (seed-cnn, lenet-5, ...)")
    plan.add_argument("--plan", help="a plan file (.json/.yaml); default: the built-in plan")
    plan.add_argument("--steps-per-epoch", type=int, help="pin schedules to training steps")
    plan.add_argument("--epochs", type=int, help="pin schedules to training steps")
    plan.set_defaults(run=_plan)

    demo = commands.add_parser("demo", help="run the seed tutorial end to end on MNIST")
    demo.add_argument("--out", default="kprune-demo", help="output folder (default: kprune-demo)")
    demo.add_argument("--data", help="MNIST folder of IDX files or .npz; default: best available")
    demo.add_argument("--full", action="store_true", help="all of MNIST, more epochs")
    demo.add_argument("--epochs", type=int, help="epochs for the baseline and pruning fits")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    """Run the CLI; returns the exit code (0 on success, 2 on bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
        print(f"kprune {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
