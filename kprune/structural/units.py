"""Structural pruning: physically remove neurons and filters, giving a smaller dense model.

Masks and tfmot keep every weight slot (zeros included), so on x86 the model runs no
faster (XNNPACK has no sparse fast path there). Removing whole output units of a
``Dense`` (neurons) or ``Conv2D`` (filters) instead gives smaller dense layers that every
runtime speeds up on. A unit's removal is coupled: its column of the layer's kernel and
its bias go, and so do the matching inputs of the next ``Dense``/``Conv2D`` (its rows, or
its input channels, mapped through a ``Flatten``), and its entries in any
``BatchNormalization`` between them.

Three steps, each usable alone:

- :func:`unit_scores`: the L1 or L2 norm of each output unit of a layer;
- :func:`select_units` (keep the highest-scoring units) or :func:`nonzero_units` (drop
  the units whose kernel slice and bias are all zero, e.g. after row/column pruning):
  ``{layer name: indices to keep}``;
- :func:`remove_units`: a new, smaller model with the weights copied; the input model is
  not modified.

Supported: ``Sequential`` models of ``Dense``/``Conv2D`` (channels last, no groups)
with activations, dropout, pooling, ``BatchNormalization``, ``Flatten`` and global
pooling between them. :func:`nonzero_units`, :func:`remove_units` and :func:`summary`
also take functional models (residual ``Add``, ``Concatenate``, depthwise convolutions,
squeeze-and-excite): there ``keep`` is keyed by group id or producer name and channels
are removed across their whole group (see :mod:`kprune.structural.graph`). Anything
else is refused with the layer named.

Example:
    >>> from kprune import structural
    >>> keep = structural.select_units(model, {"conv2": 0.5, "fc1": 0.5})
    >>> smaller = structural.remove_units(model, keep)   # then fine-tune a little
"""

from __future__ import annotations

import numpy as np

from kprune.core import layers
from kprune.core.checks import check_choice, check_sparsity, did_you_mean
from kprune.structural.nesting import follows_nesting

__all__ = ["unit_scores", "select_units", "nonzero_units", "remove_units", "summary"]


def _is_producer(layer):
    """A layer whose output units this module can remove (``kprune.layers`` says which)."""
    entry = layers.spec(layer)
    return entry.units is not None and not entry.layout  # kernel (..., inputs, outputs)


def unit_scores(layer, criterion="l1"):
    """The norm of each output unit of a ``Dense`` or ``Conv2D`` layer (kernel only).

    Example:
        >>> unit_scores(model.get_layer("fc1")).shape
        (300,)
    """
    check_choice(criterion, ("l1", "l2"), "criterion")
    _check_producer(layer)
    kernel = layer.get_weights()[0]
    flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
    return flat.sum(axis=0) if criterion == "l1" else np.sqrt((flat**2).sum(axis=0))


@follows_nesting
def select_units(model, fractions, *, criterion="l1"):
    """``{layer: kept indices}``: remove ``fraction`` of each named layer's lowest-norm units.

    ``fractions`` maps layer names to the fraction of output units to remove, in [0, 1);
    the count is rounded down and at least one unit is kept. In a functional model a
    name is a producer (or a group id, see :func:`kprune.structural.groups`) and the
    scores add up over its whole group: a residual stage's convolutions lose the same
    channels.

    Example:
        >>> select_units(model, {"fc1": 0.5})["fc1"].shape
        (150,)
    """
    if not isinstance(fractions, dict) or not fractions:
        raise ValueError(
            "Argument `fractions` must be a non-empty dict of layer name -> fraction of "
            f"units to remove. Received: fractions={fractions!r}"
        )
    if not _is_sequential(model):
        return _select_in_groups(model, fractions, criterion)
    chain = _chain(model)
    keep = {}
    for name, fraction in fractions.items():
        layer = _producer(chain, name)
        check_sparsity(fraction, argument=f"fractions[{name!r}]")
        scores = unit_scores(layer, criterion)
        n_keep = max(1, len(scores) - int(fraction * len(scores)))
        # stable sort: among equal scores the lower index is kept
        keep[name] = np.sort(np.argsort(-scores, kind="stable")[:n_keep])
    return keep


@follows_nesting
def nonzero_units(model):
    """``{group: kept indices}`` for groups with output units that are always 0 where read.

    A unit is dead when every producer making it has a zero kernel slice and bias and an
    activation with ``f(0) = 0`` (a sigmoid gives 0.5), and every layer between it and the
    layers reading it maps 0 to 0 (a ``BatchNormalization`` only when its
    ``beta - mean * gamma / sqrt(var + eps)`` is 0 too). Removing dead units leaves the
    model's outputs unchanged. Keys are group ids: in a Sequential model, the producer's
    name (see :func:`kprune.structural.groups`). The model's outputs are never listed.

    Example:
        >>> nonzero_units(row_pruned_model)
        {'fc1': array([0, 2, 3, ...])}
    """
    from kprune.structural import rebuild

    if _is_sequential(model):
        _chain(model)  # pruning wrappers: refused as before (nested models are inlined)
    return rebuild.dead_channels(model)


@follows_nesting
def remove_units(model, keep):
    """A new, smaller model without the output units not listed in ``keep``.

    Args:
        model: a built ``Sequential`` model, tf_keras or Keras 3 (not modified).
        keep: ``{layer name: indices of the output units to keep}``, as from
            :func:`select_units` or :func:`nonzero_units`.

    Returns:
        A new ``Sequential`` model of the same Keras (uncompiled) with the same layer names, fewer units in
        the named layers, and the surviving weights copied.

    Example:
        >>> smaller = remove_units(model, {"fc1": [0, 1, 5]})
        >>> smaller.get_layer("fc1").units
        3
    """
    if not _is_sequential(model):
        from kprune.structural import rebuild

        return rebuild.remove(model, keep)
    chain = _chain(model)
    if not isinstance(keep, dict):
        raise TypeError(
            f"Argument `keep` must be a dict of layer name -> unit indices. Received: {keep!r}"
        )
    keep = {name: _check_indices(_producer(chain, name), name, idx)
            for name, idx in keep.items()}
    out_slices, in_slices, bn_slices = {}, {}, {}
    for name, indices in keep.items():
        position = [layer.name for layer in chain].index(name)
        out_slices[name] = indices
        consumer, batch_norms, mapped = _follow(chain, position, indices)
        in_slices[consumer] = mapped
        for batch_norm in batch_norms:
            bn_slices[batch_norm] = indices
    config = model.get_config()
    for layer_config in config["layers"]:
        layer_config.pop("build_config", None)  # Keras 3: built again from the new shapes
        name = layer_config["config"].get("name")
        if name in out_slices:
            key = layers.spec(model.get_layer(name)).units
            layer_config["config"][key] = len(out_slices[name])
    smaller = layers.engine(model).keras.Sequential.from_config(config)
    for old, new in zip(chain, _chain(smaller)):
        weights = old.get_weights()
        if old.name in out_slices:
            weights = [w[..., out_slices[old.name]] for w in weights]
        if old.name in in_slices:
            axis = weights[0].ndim - 2  # a producer's kernel is (..., inputs, outputs)
            weights[0] = np.take(weights[0], in_slices[old.name], axis=axis)
        if old.name in bn_slices:
            weights = [w[bn_slices[old.name]] for w in weights]
        new.set_weights(weights)
    return smaller


@follows_nesting
def summary(before, after):
    """A text table of units and parameters per layer, before and after removal.

    Example:
        >>> print(summary(model, smaller))
    """
    from kprune.core.table import table

    rows = []
    for old in before.layers:
        if layers.spec(old).units is not None and layers.unwrap(old) is old:
            new = next((layer for layer in after.layers if layer.name == old.name), None)
            if new is None:  # its block was dropped
                rows.append((old.name, type(old).__name__, f"{_units(old):,}", "dropped",
                             f"{old.count_params():,}", "0"))
                continue
            rows.append((old.name, type(old).__name__, f"{_units(old):,}", f"{_units(new):,}",
                         f"{old.count_params():,}", f"{new.count_params():,}"))
    total = (f"total: {before.count_params():,} -> {after.count_params():,} parameters "
             f"({before.count_params() / after.count_params():.2f}x fewer)")
    header = ("layer", "type", "units", "kept", "params", "params after")
    return table(header, rows) + "\n" + total


# -- internals ---------------------------------------------------------------------


def _is_sequential(model):
    owner = layers.engine(model)
    owner.check_model(model)
    return isinstance(model, owner.keras.Sequential)


def _chain(model):
    if not _is_sequential(model):
        raise TypeError(
            "select_units supports Sequential models (a plain chain of layers); for "
            "functional models use structural.select or structural.prune, which follow "
            f"the channel groups. Received: model {model.name!r} of type "
            f"{type(model).__name__}"
        )
    keras = layers.engine(model).keras
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for layer in chain:
        if isinstance(layer, keras.Model) or layers.unwrap(layer) is not layer:
            raise TypeError(
                f"Structural pruning needs plain layers; layer {layer.name!r} is a "
                f"{type(layer).__name__}. Strip pruning wrappers first (kprune.verify.strip); "
                "for nested models use structural.select or structural.prune, which "
                "inline them."
            )
    return chain


def _select_in_groups(model, fractions, criterion):
    """:func:`select_units` for a functional model: each name's group, scored whole."""
    from kprune.structural import graph, importance

    check_choice(criterion, ("l1", "l2"), "criterion")
    groups = graph.groups(model)
    scores = importance.group_scores(model, criterion)
    keep = {}
    for name, fraction in fractions.items():
        check_sparsity(fraction, argument=f"fractions[{name!r}]")
        group = groups[name] if name in groups else groups.of_producer(name)
        if group is None:
            known = groups.ids + [n for g in groups for n in g.layers("out")]
            raise ValueError(f"Argument `fractions` names {name!r}, which is neither a group "
                             f"id nor a producer layer.{did_you_mean(name, known)}")
        if not group.removable:
            raise ValueError(f"Cannot remove units of {name!r}: {group.reason}.")
        n_keep = max(1, group.size - int(fraction * group.size))
        keep[name] = np.sort(np.argsort(-scores[group.id], kind="stable")[:n_keep])
    return keep


def _check_producer(layer):
    if not _is_producer(layer):
        raise ValueError(
            "Structural pruning removes output units of Dense and Conv1D/2D/3D layers. "
            f"Received: layer {layer.name!r} of type {type(layer).__name__}"
        )
    if hasattr(layer, "groups") and (
            layer.data_format != "channels_last" or layer.groups != 1):
        raise ValueError(
            f"Layer {layer.name!r}: structural pruning supports channels_last Conv2D "
            f"without groups. Received: data_format={layer.data_format!r}, "
            f"groups={layer.groups}"
        )


def _producer(chain, name):
    names = [layer.name for layer in chain]
    if name not in names:
        raise ValueError(
            f"Layer {name!r} is not in the model.{did_you_mean(name, names)} Layers: {names}"
        )
    layer = chain[names.index(name)]
    _check_producer(layer)
    return layer


def _units(layer):
    """Output units, filters or (attention) heads: read from the config on both engines."""
    return layer.get_config()[layers.spec(layer).units]


def _check_indices(layer, name, indices):
    n = _units(layer)
    array = np.asarray(indices)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"Units to keep for layer {name!r} must be a non-empty list of integer indices "
            f"(keeping none would cut the model in two). Received: {indices!r}"
        )
    if array.min() < 0 or array.max() >= n or len(np.unique(array)) != array.size:
        raise ValueError(
            f"Units to keep for layer {name!r} must be distinct indices in [0, {n}). "
            f"Received: {indices!r}"
        )
    return np.sort(array)


def _follow(chain, position, indices):
    """From the producer at ``position``: its consumer's name, the per-channel layers
    between (batch norms), and the consumer's input indices that the kept units map to."""
    producer = chain[position]
    _check_not_mixing(producer, producer)
    per_channel = []
    mapped = indices
    for layer in chain[position + 1:]:
        role = layers.channel_role(layer)
        entry = layers.spec(layer)
        if role == "producer":
            _check_producer(layer)
            return layer.name, per_channel, mapped
        if role == "mixing":
            _check_not_mixing(layer, producer)
        elif role == "channelwise" and entry.per_channel:
            axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            if list(axes) not in ([-1], [len(layers.input_shape(layer)) - 1]):
                raise ValueError(
                    f"Cannot remove units of layer {producer.name!r}: {type(layer).__name__} "
                    f"{layer.name!r} normalises axis {layer.axis}, not the channel axis."
                )
            per_channel.append(layer.name)
        elif role == "flattening":
            shape = layers.input_shape(layer)[1:]
            positions = int(np.prod(shape[:-1]))
            channels = shape[-1]
            mapped = (np.arange(positions)[:, None] * channels + mapped[None, :]).ravel()
        elif role != "channelwise" or layer.weights:
            raise ValueError(
                f"Cannot remove units of layer {producer.name!r}: the layer after it, "
                f"{layer.name!r} ({type(layer).__name__}), is not one structural pruning "
                "knows how to carry the removal through (activations, dropout, pooling, "
                "BatchNormalization, Flatten)."
            )
    raise ValueError(
        f"Cannot remove units of layer {producer.name!r}: its outputs are the model's "
        "outputs (no Dense or Conv consumes them), so removing them would change what "
        "the model predicts."
    )


def _check_not_mixing(layer, producer):
    """Refuse a softmax between the producer and its consumer: it mixes the units."""
    if layers.channel_role(layer) == "mixing" or (
            getattr(getattr(layer, "activation", None), "__name__", "") == "softmax"):
        raise ValueError(
            f"Cannot remove units of layer {producer.name!r}: the softmax of layer "
            f"{layer.name!r} normalises over all units, so removing some changes the others."
        )
