"""Apply a plan to a Keras 3 model: a clone whose pruned layers are wrapped, never the model.

Each pruned layer is wrapped in :class:`PruneLowMagnitude`, which holds a non-trainable
mask per pruned weight and runs the layer with ``weight * mask``. The masks are computed
in numpy by :mod:`kprune.core.masks` (the rules of tfmot: magnitude top-k, blocks, N:M
along the input channels) at the firing steps of the plan's schedules, by the callback
of :mod:`kprune.engines.keras3.callbacks`.

Example:
    >>> pruned = kprune.apply(keras3_model, kprune.PruningPlan.default(),
    ...                       steps_per_epoch=469, epochs=2)   # selects this engine
"""

import numpy as np

from kprune.core import layers, masks
from kprune.core.plan import LayerPlan
from kprune.engines.keras3 import helpers

keras = helpers.keras
ops = helpers.ops

__all__ = ["apply", "PruneLowMagnitude", "MaskedLayer", "wrapped_layers", "masked_layers",
           "kernel_masks"]

_POOLS = {"AVG": "mean", "MAX": "max"}


class MaskedLayer:
    """A layer inside a pruning wrapper, seen with its masks: what
    :func:`kprune.core.layers.weight_layers` gives for each layer a wrapper masks below the
    layer it wraps (a KerasHub block's feed-forward ``Dense``). Reads as the layer itself;
    ``layer``, ``masks`` and ``row`` say how it is pruned.

    Example:
        >>> view = dict(weight_layers(pruned))["block/fc1"]
        >>> view.layer.name, view.masks[0].shape
        ('fc1', (16, 32))
    """

    kprune_pruning_wrapper = True

    def __init__(self, layer, row, masks):
        self.layer, self.row, self.masks = layer, row, masks

    def __getattr__(self, name):  # everything else as the layer itself
        if name == "layer":  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.layer, name)


def _rows(row):
    """``{relative path: LayerPlan}`` from a row, a ``{path: row}`` mapping or their dicts."""
    if isinstance(row, LayerPlan):
        return {"": row}
    if "rows" in row:  # a saved wrapper's config
        pairs = row["rows"]
    elif "name" in row and not isinstance(row["name"], LayerPlan):  # one row's dict
        return {"": LayerPlan.from_dict(row)}
    else:
        pairs = row.items()
    return {path: r if isinstance(r, LayerPlan) else LayerPlan.from_dict(r) for path, r in pairs}


@keras.saving.register_keras_serializable(package="kprune")
class PruneLowMagnitude(keras.layers.Wrapper):
    """A Keras 3 layer pruned by masks: runs ``layer`` with each pruned weight times its mask.

    Prunes the layer itself and, for a custom layer (a KerasHub ``TransformerDecoder``),
    the layers inside it that the plan names, by their path relative to it. Holds one
    non-trainable mask per pruned weight (ones at first) and the pruning step, both saved
    with the model, so training resumes where it stopped. The masks change only in
    :meth:`update_masks`, which ``kprune.callbacks()`` calls at the firing steps. Masked
    weights get no gradient, so they never grow back between updates.

    Args:
        layer: the Keras 3 layer to prune.
        row: its :class:`kprune.core.plan.LayerPlan` (or the row's ``to_dict()``), or
            ``{path inside layer: row}`` (``""`` for the layer itself).

    Example:
        >>> wrapper = PruneLowMagnitude(keras.layers.Dense(4, name="fc"), plan_row)
        >>> wrapper.name
        'prune_low_magnitude_fc'
    """

    kprune_pruning_wrapper = True

    def __init__(self, layer, row, **kwargs):
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.rows = _rows(row)
        self.armed = False  # set by the callback for the length of a fit

    @property
    def row(self):
        """The plan row of the wrapped layer itself (None when only inner layers are pruned)."""
        return self.rows.get("")

    def build(self, input_shape=None):
        super().build(input_shape)
        inner = [helpers.sublayer(self.layer, path) for path in self.rows if path]
        if not all(layer.built for layer in inner) and input_shape is not None:
            # a custom layer without a build() of its own (Keras marks it built when it is
            # loaded) builds its sublayers when called: call it on a symbolic input once
            self.layer.compute_output_spec(keras.KerasTensor(input_shape))
        self.targets = {path: self._target(path, row) for path, row in self.rows.items()}
        self.masks = self.targets[""].masks if "" in self.targets else []
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), dtype="int32",
                                            initializer="zeros", trainable=False)
        self.built = True

    def _target(self, path, row):
        layer = helpers.sublayer(self.layer, path)
        weights = layers.prunable_weights(layer)
        labels = tuple(w.label for w in weights)
        if labels != tuple(row.weights):
            raise ValueError(
                f"Layer {row.name!r} prunes {list(labels)}, but its plan row names "
                f"{list(row.weights)}. Received: row={row!r}"
            )
        flat = [w.label for w in weights if len(w.shape) != 2]
        if row.block != (1, 1) and flat:
            raise ValueError(
                "Block sparsity needs 2-dimensional weights (as in tfmot); layer "
                f"{row.name!r} has {flat}. Received: block={row.block}"
            )
        prefix = f"{path.replace('/', '_')}_" if path else ""
        masks = [self.add_weight(name=f"{prefix}{w.label.replace('.', '_')}_mask", shape=w.shape,
                                 dtype=w.variable.dtype, initializer="ones", trainable=False)
                 for w in weights]
        return MaskedLayer(layer, row, masks)

    def views(self):
        """``{path inside the wrapped layer: MaskedLayer}`` for each layer masked below it."""
        return {path: view for path, view in self.targets.items() if path}

    def call(self, inputs, *args, training=None, **kwargs):
        if training and not self.armed:
            raise RuntimeError(
                f"Layer {self.name!r} is being trained without kprune's Keras 3 callbacks, "
                "so its masks would never be updated. Give fit kprune's callbacks: "
                "`fit(..., callbacks=kprune.callbacks())`."
            )
        masked = {id(w.variable): mask for view in self.targets.values()
                  for w, mask in zip(layers.prunable_weights(view.layer), view.masks)}
        mapping = [(v, ops.multiply(v.value, masked[id(v)]) if id(v) in masked else v.value)
                   for v in self.layer.variables]
        if training is not None:
            kwargs["training"] = training
        with keras.StatelessScope(state_mapping=mapping) as scope:
            before = {id(v): scope.get_current_value(v) for v, _ in mapping}
            outputs = self.layer(inputs, *args, **kwargs)
        for variable, _ in mapping:  # keep the layer's own updates (e.g. seed generators)
            value = scope.get_current_value(variable)
            if id(variable) not in masked and value is not before[id(variable)]:
                variable.assign(value)
        return outputs

    def compute_output_spec(self, inputs, *args, **kwargs):
        return self.layer.compute_output_spec(inputs, *args, **kwargs)

    def fires_at(self, step):
        """True when any of the masks is recomputed at training step ``step``."""
        return any(_fires_at(row, step) for row in self.rows.values())

    def update_masks(self, step):
        """Recompute the masks whose schedule fires at training step ``step`` from the
        weights as they act (``weight * mask``), and write the pruned weights as zeros."""
        for view in self.targets.values():
            if not _fires_at(view.row, step):
                continue
            axis = layers.n_m_axis(view.layer) if view.row.method == "m_by_n" else None
            for weight, mask in zip(layers.prunable_weights(view.layer), view.masks):
                values = np.asarray(weight.variable.numpy()) * np.asarray(mask.numpy())
                keep = _keep(view.row, values, step, axis)
                mask.assign(keep.astype(values.dtype))
                weight.variable.assign(np.where(keep, values, 0).astype(values.dtype))
        self.pruning_step.assign(step)

    def get_config(self):
        rows = [[path, row.to_dict()] for path, row in self.rows.items()]
        return {**super().get_config(), "row": {"rows": rows}}


def _fires_at(row, step):
    """True when ``row``'s masks are recomputed at training step ``step`` (as tfmot: an N:M
    mask once, at step 1; an unstructured one at its schedule's firing steps)."""
    if row.method == "m_by_n":
        return step == 1
    return row.schedule.fires_at(step)


def _keep(row, values, step, axis):
    """The keep-mask of one weight at ``step``: tfmot's rules, by kprune.core.masks.

    Blocks start at index 0 (``masks.block``). tfmot pools blocks with ``SAME``
    padding, which, for a weight whose shape is not a multiple of the block, splits
    the padding over both ends and shifts the pooled windows against the mask it
    expands from index 0; the two agree when the shape is a multiple of the block.
    """
    if row.method == "m_by_n":
        return masks.n_m(values, row.n, row.m, axis=axis)
    sparsity = row.schedule.scheduled_sparsity(step)
    if row.block != (1, 1):
        return masks.block(values, row.block, sparsity, pool=_POOLS[row.pool])
    return masks.magnitude(values, sparsity)


def wrapped_layers(model):
    """``(path, wrapper)`` for every Keras 3 pruning wrapper in ``model``, nested ones included."""
    return [(path, layer) for path, layer in helpers.iter_layers(model)
            if helpers.is_wrapper(layer)]


def kernel_masks(model):
    """``{layer path: {weight label: keep-mask}}`` of every layer a Keras 3 pruning wrapper
    masks in ``model`` (layers inside custom layers included): the masks it holds, for each
    weight it prunes (as the tfmot engine's ``kprune.methods.workflows.kernel_masks`` gives
    them).

    Example:
        >>> kernel_masks(pruned)["conv2"]["kernel"].mean()   # 2:4 keeps half
        0.5
    """
    return {path: {w.label: np.asarray(mask.numpy()) != 0
                   for w, mask in zip(layers.prunable_weights(view.layer), view.masks)}
            for path, view in masked_layers(model)}


def masked_layers(model):
    """``(path, layer)`` of every layer with masks in ``model``: a pruning wrapper, or a
    :class:`MaskedLayer` inside one (both have ``layer``, ``masks`` and ``row``)."""
    return [(path, layer) for path, layer in layers.weight_layers(model)
            if helpers.is_wrapper(layer) and layer.masks]


def apply(model, plan, *, steps_per_epoch, epochs):
    """A new Keras 3 model whose layers are wrapped for pruning as ``plan`` says.

    Called by ``kprune.apply`` for a Keras 3 model (same arguments). ``model`` is never
    modified: its weights are copied into new layers first. The result is not compiled.

    Example:
        >>> pruned = apply(model, PruningPlan.default(), steps_per_epoch=100, epochs=2)
    """
    resolved = plan.resolve(model, steps_per_epoch=steps_per_epoch, epochs=epochs)
    twin = helpers.copy_model(model)

    def wrap(path, layer):  # the layer's own row and those of the layers inside it
        inside = {_inside(row.name, path): row for row in resolved.pruned
                  if _inside(row.name, path) is not None}
        return PruneLowMagnitude(layer, inside) if inside else layer

    pruned = helpers.clone_model(twin, wrap)
    pruned._kprune_plan = resolved  # read by sparsity_report when no plan is given
    return pruned


def _inside(name, path):
    """``name``'s path inside the layer at ``path`` (``""`` for the layer itself), or None."""
    if name == path:
        return ""
    return name[len(path) + 1:] if name.startswith(f"{path}/") else None
