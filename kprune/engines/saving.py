"""Save and load models, wrapped (mid-training) or stripped, without losing N:M settings.

tfmot's wrapper config drops ``sparsity_m_by_n``, so a reloaded 2:4 layer would
quietly turn unstructured; kprune's wrapper (``kprune.wrap.PruneLowMagnitude``) keeps
it, and the pruning step is a saved weight, so training resumes where it stopped.

Example:
    >>> kprune.save_model(pruned, "ckpt.keras")
    >>> pruned = kprune.load_model("ckpt.keras")   # compile state kept; fit again
"""

from pathlib import Path

from kprune import _compat
from kprune.engines.wrap import PruneLowMagnitude

__all__ = ["save_model", "load_model"]

FORMATS = (".keras", ".h5")


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
    return path


def load_model(path, *, compile=True, custom_objects=None):
    """Load a model saved by :func:`save_model` (or plain Keras), pruning wrappers included."""
    path = _check_suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"No model file at this path. Received: path={str(path)!r}")
    objects = {"PruneLowMagnitude": PruneLowMagnitude, **(custom_objects or {})}
    with _compat.tfmot.sparsity.keras.prune_scope():
        return _compat.keras.models.load_model(
            str(path), custom_objects=objects, compile=compile
        )
