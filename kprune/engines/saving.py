"""Save and load models, wrapped (mid-training) or stripped, without losing N:M settings.

tfmot's wrapper config drops ``sparsity_m_by_n``, so a reloaded 2:4 layer would
quietly turn unstructured; kprune's wrapper (``kprune.wrap.PruneLowMagnitude``) keeps
it, and the pruning step is a saved weight, so training resumes where it stopped.
The resolved plan that ``kprune.apply`` attached is stored in the file too (an entry
``kprune_plan.json`` in a ``.keras`` archive, an attribute of an ``.h5`` file), so a
reloaded model can still be checked with ``sparsity_report(model, strict=True)``.

Example:
    >>> kprune.save_model(pruned, "ckpt.keras")
    >>> pruned = kprune.load_model("ckpt.keras")   # compile state kept; fit again
"""

import json
import zipfile
from pathlib import Path

from kprune import _compat
from kprune.core.plan import ResolvedPlan
from kprune.engines.wrap import PruneLowMagnitude

__all__ = ["save_model", "load_model"]

FORMATS = (".keras", ".h5")
PLAN_ENTRY = "kprune_plan.json"


def _check_suffix(path):
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(
            f"Argument `path` must end in {' or '.join(FORMATS)}. Received: path={str(path)!r}"
        )
    return path


def save_model(model, path):
    """Save a tf_keras model (wrapped or stripped) as ``.keras`` or ``.h5``; returns the path."""
    _compat.check_model(model)
    path = _check_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    plan = getattr(model, "_kprune_plan", None)
    if plan is not None:
        _write_plan(path, json.dumps(plan.to_dict()))
    return path


def _write_plan(path, text):
    if path.suffix == ".keras":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(PLAN_ENTRY, text)
    else:
        import h5py

        with h5py.File(path, "a") as handle:
            handle.attrs[PLAN_ENTRY] = text


def _read_plan(path):
    """The resolved plan stored by :func:`save_model`, or None."""
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            if PLAN_ENTRY not in archive.namelist():
                return None
            text = archive.read(PLAN_ENTRY).decode()
    else:
        import h5py

        with h5py.File(path, "r") as handle:
            text = handle.attrs.get(PLAN_ENTRY)
        if text is None:
            return None
    return ResolvedPlan.from_dict(json.loads(text))


def load_model(path, *, compile=True, custom_objects=None):
    """Load a model saved by :func:`save_model` (or plain Keras), pruning wrappers included.

    The resolved plan saved with it comes back as the model's plan, so
    ``kprune.sparsity_report(model, strict=True)`` checks against it.
    """
    path = _check_suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"No model file at this path. Received: path={str(path)!r}")
    objects = {"PruneLowMagnitude": PruneLowMagnitude, **(custom_objects or {})}
    with _compat.tfmot.sparsity.keras.prune_scope():
        model = _compat.keras.models.load_model(
            str(path), custom_objects=objects, compile=compile
        )
    plan = _read_plan(path)
    if plan is not None:
        model._kprune_plan = plan
    return model
