"""Strip a Keras 3 pruned model: a plain Keras 3 model holding the masked weights.

``kprune.sparsity_report`` reads Keras 3 models with the tf_keras engine's own rows and
checks (:mod:`kprune.engines.verify`); only stripping differs.

Example:
    >>> final = kprune.strip(pruned)          # selects this engine for a Keras 3 model
    >>> print(kprune.sparsity_report(final, strict=True))
"""

from kprune.core import layers
from kprune.engines.keras3 import helpers

__all__ = ["strip"]


def strip(model):
    """A plain Keras 3 model: the wrappers removed, each pruned weight written as ``weight * mask``.

    The result shares nothing with ``model``, which is not modified; it keeps the plan
    ``kprune.apply`` attached, for ``sparsity_report``. Called by ``kprune.strip``.

    Example:
        >>> final = strip(pruned)
        >>> final.save("pruned.keras")
    """
    helpers.check_model(model, graph=False)
    helpers.sync_state(model)
    effective = {path: layers.effective_weights(layer)
                 for path, layer in layers.weight_layers(model) if helpers.is_wrapper(layer)}
    stripped = helpers.copy_model(helpers.clone_model(model, lambda path, layer: helpers.unwrap(layer)))
    for path, layer in layers.weight_layers(stripped):
        for weight, (_, values) in zip(layers.prunable_weights(layer), effective.get(path, ())):
            weight.variable.assign(values)
    plan = getattr(model, "_kprune_plan", None)
    if plan is not None:
        stripped._kprune_plan = plan
    return stripped
