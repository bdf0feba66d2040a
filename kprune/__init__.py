"""kprune: per-layer pruning plans for Keras models, on tfmot.

The package is grouped by concern, and imports point down only::

    kprune/engines/tfkeras/loader.py
                            the one module that imports TensorFlow, tf_keras and tfmot
    kprune/viz.py, kprune/progress.py   figures, progress bars
    kprune/engines/__init__.py, engines/*/engine.py, engines/keras3/helpers.py
                            the engine interface: engine_of (the one place that asks which
                            Keras a model holds) and each engine's answers; helpers.py is
                            the one module that imports Keras 3
    kprune/core/            plan, schedules, layers (what each layer prunes, asking the
                            layer's engine), masks
    kprune/engines/keras3/  the Keras 3 engine, any backend
    kprune/engines/tfkeras/ the tf_keras engine's wrapper and callbacks (tfmot)
    kprune/engines/         the tf_keras engine on tfmot (wrap, callbacks, verify, saving), the
                            public functions that take either engine's model, compiling and
                            scoring a classifier
    kprune/structural/      physical removal of units (smaller dense layers)
    kprune/methods/         trainer, workflows, sensitivity, allocation, PQAT
    kprune/tflite/          export, flatbuffer reader, measure, report
    kprune/experiments/     data, built-in models, recipes, runner, demo
    kprune/cli.py           the command line

Each line imports only from its own and the lines above it (the first four lines are one
level); ``tests/test_package.py`` holds that, and refuses any import cycle between modules.

The top-level names and submodules are loaded lazily, so ``from kprune import masks``
(numpy only) does not start TensorFlow. Every name of :data:`SUBMODULES` is also a module
of its own: ``import kprune.masks`` gives ``kprune.core.masks`` (the same module object),
loaded only when imported.

Example:
    >>> import kprune
    >>> plan = kprune.PruningPlan.default()
    >>> pruned = kprune.apply(model, plan, steps_per_epoch=100, epochs=2)
    >>> pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> print(kprune.sparsity_report(kprune.strip(pruned), plan=plan))
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_LAZY = {
    "PruningPlan": "kprune.core.plan",
    "LayerRule": "kprune.core.plan",
    "ResolvedPlan": "kprune.core.plan",
    "Schedule": "kprune.core.schedules",
    "apply": "kprune.engines.wrap",
    "copy_model": "kprune.engines.wrap",
    "callbacks": "kprune.engines.callbacks",
    "PruningStepper": "kprune.engines.callbacks",
    "strip": "kprune.engines.verify",
    "sparsity_report": "kprune.engines.verify",
    "SparsityReport": "kprune.engines.verify",
    "save_model": "kprune.engines.saving",
    "load_model": "kprune.engines.saving",
    "prune_post_training": "kprune.methods.post_training",
}

# Submodules reachable as ``kprune.NAME`` (and ``from kprune import NAME``) wherever
# they live, so user code does not depend on the folder layout.
SUBMODULES = {
    "plan": "kprune.core.plan",
    "schedules": "kprune.core.schedules",
    "layers": "kprune.core.layers",
    "masks": "kprune.core.masks",
    "wrap": "kprune.engines.wrap",
    "classifier": "kprune.engines.classifier",
    "verify": "kprune.engines.verify",
    "saving": "kprune.engines.saving",
    "structural": "kprune.structural",
    "trainer": "kprune.methods.trainer",
    "workflows": "kprune.methods.workflows",
    "sensitivity": "kprune.methods.sensitivity",
    "allocation": "kprune.methods.allocation",
    "variational": "kprune.methods.variational",
    "post_training": "kprune.methods.post_training",
    "calibration": "kprune.core.calibration",
    "layerwise": "kprune.core.layerwise",
    "pqat": "kprune.methods.pqat",
    "export": "kprune.tflite.export",
    "flatbuffer": "kprune.tflite.flatbuffer",
    "measure": "kprune.tflite.measure",
    "report": "kprune.tflite.report",
    "data": "kprune.experiments.data",
    "sources": "kprune.experiments.sources",
    "models": "kprune.experiments.models",
    "recipe": "kprune.experiments.recipe",
    "runner": "kprune.experiments.runner",
    "demo": "kprune.experiments.demo",
    "viz": "kprune.viz",
    "progress": "kprune.progress",
}

__all__ = sorted(_LAZY) + ["__version__"]


class _AliasLoader(importlib.abc.Loader):
    """Loads ``kprune.NAME`` as the module it names in :data:`SUBMODULES` (one object)."""

    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._spec = module.__spec__  # the import system sets __spec__ to the alias's
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # already run: keep its own name and spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``kprune.NAME`` for every name of :data:`SUBMODULES` that lives elsewhere,
    so ``import kprune.masks`` works as ``from kprune import masks`` does.

    Example:
        >>> import kprune.masks
        >>> kprune.masks is sys.modules["kprune.core.masks"]
        True
    """

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        real = SUBMODULES.get(name) if package == __name__ else None
        if real is None or real == fullname:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real))


if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    sys.meta_path.append(_AliasFinder())


def __getattr__(name):
    if name in SUBMODULES:
        return importlib.import_module(SUBMODULES[name])
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__ + list(SUBMODULES)
