"""kprune: per-layer pruning plans for Keras models, on tfmot.

The top-level names are loaded lazily, so ``import kprune.masks`` (numpy only)
does not start TensorFlow.

Example:
    >>> import kprune
    >>> plan = kprune.PruningPlan.default()
    >>> pruned = kprune.apply(model, plan, steps_per_epoch=100, epochs=2)
    >>> pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> print(kprune.sparsity_report(kprune.strip(pruned), plan=plan))
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "PruningPlan": "kprune.plan",
    "LayerRule": "kprune.plan",
    "ResolvedPlan": "kprune.plan",
    "Schedule": "kprune.schedules",
    "apply": "kprune.wrap",
    "callbacks": "kprune.keras_callbacks",
    "PruningStepper": "kprune.keras_callbacks",
    "strip": "kprune.verify",
    "sparsity_report": "kprune.verify",
    "SparsityReport": "kprune.verify",
    "save_model": "kprune.saving",
    "load_model": "kprune.saving",
}

# Submodules reachable as ``kprune.NAME`` without importing them first.
_SUBMODULES = (
    "allocation", "data", "demo", "export", "masks", "measure", "models", "plan", "recipe",
    "report", "runner", "saving", "schedules", "sensitivity", "structural", "verify", "viz",
    "workflows", "wrap",
)

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"kprune.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__ + list(_SUBMODULES)
