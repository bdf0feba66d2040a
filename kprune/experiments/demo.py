"""``kprune demo``: the seed tutorial as a built-in recipe.

The seed CNN, the default plan (first conv unstructured, later conv and dense 2:4, head
skipped), gradual pruning on a cubic schedule, strip, export float / sparse / int8, and
the report. Quick by default (a 6,000-image subset, one epoch each); ``full=True`` uses
all of MNIST and two epochs each.

Example:
    >>> from kprune.experiments.demo import demo_recipe
    >>> print(demo_recipe().to_yaml())
"""

from kprune.experiments.recipe import Export, Recipe, Subset, Training, Workflow
from kprune.experiments.runner import run_recipe

__all__ = ["demo_recipe", "run_demo"]


def demo_recipe(*, full=False, data="mnist", epochs=None):
    """The seed recipe; ``epochs`` overrides the baseline and pruning epochs."""
    epochs = epochs if epochs is not None else (2 if full else 1)
    recipe = Recipe(
        model="seed-cnn",
        data=str(data),
        subset=Subset() if full else Subset(train=6000, test=2000),
        baseline=Training(epochs=epochs, batch_size=64),
        plan="default",
        workflow=Workflow(name="gradual", epochs=epochs),
        export=Export(variants=("float", "sparse", "int8", "sparse-int8")),
    )
    recipe.check()
    return recipe


def run_demo(out_dir, *, full=False, data="mnist", epochs=None, force=False, resume=False,
             log=print):
    """Run the seed recipe into ``out_dir``; returns the :class:`~kprune.runner.RunResult`.

    ``resume=True`` continues a demo that was interrupted (see ``run_recipe``)."""
    return run_recipe(demo_recipe(full=full, data=data, epochs=epochs), out_dir, force=force,
                      resume=resume, log=log)
