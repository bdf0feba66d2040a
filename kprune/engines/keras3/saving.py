"""Save and load Keras 3 pruned models (mid-training or stripped) as ``.keras`` files.

The masks and the pruning step are variables of each pruning layer, so they are saved
with the weights and a reloaded model resumes training where it stopped; the plan
``kprune.apply`` attached is stored beside them, as for tf_keras models
(:mod:`kprune.engines.saving`, which selects this module by itself).

Example:
    >>> kprune.save_model(pruned, "ckpt.keras")
    >>> pruned = kprune.load_model("ckpt.keras")   # a Keras 3 model again; fit again
"""

import sys
from pathlib import Path

from kprune.engines.keras3 import helpers
from kprune.engines.keras3.wrap import PruneLowMagnitude

keras = helpers.keras

__all__ = ["save_model", "load_model"]


def save_model(model, path):
    """Save a Keras 3 model (wrapped or stripped) as ``.keras``; returns the path.

    Called by ``kprune.save_model``, which then stores the plan in the file.

    Example:
        >>> save_model(pruned, "ckpt.keras")
    """
    helpers.check_model(model, graph=False)
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(
            "A Keras 3 model is saved as .keras (Keras 3 writes whole models only in that "
            f"format). Received: path={str(path)!r}"
        )
    if helpers.is_subclassed(model) and any(
            helpers.is_wrapper(layer) for _, layer in helpers.iter_layers(model)):
        raise ValueError(
            f"{model.name!r} is a subclassed model being pruned: its config rebuilds its own "
            "layers, not kprune's pruning wrappers, so the masks could not be loaded back. "
            "Save it once stripped (kprune.save_model(kprune.strip(pruned), path)), or build "
            f"the model with the functional API to save it mid-pruning. Received: path={str(path)!r}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    helpers.sync_state(model)
    model.save(str(path))
    return path


def load_model(path, *, compile=True, custom_objects=None):
    """Load a Keras 3 ``.keras`` file, pruning layers included (no checks of the file:
    ``kprune.load_model`` makes them, then calls this).

    Example:
        >>> load_model("ckpt.keras").get_layer("prune_low_magnitude_fc1").masks
    """
    objects = {"PruneLowMagnitude": PruneLowMagnitude, **(custom_objects or {})}
    if "keras_hub" in sys.modules:  # KerasHub blocks that lost heads (never imported here)
        from kprune.engines.keras3 import sized_blocks

        sized_blocks.register()
    return keras.models.load_model(str(path), custom_objects=objects, compile=compile)
