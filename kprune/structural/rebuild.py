"""Remove channel groups from a Sequential or functional model, and find dead channels.

:func:`remove` clones the model, each layer from its config with fewer ``filters``/``units`` and
copies the surviving weights, sliced along each member's axis: producers' kernels
``(..., in, out)`` and biases, batch norm (gamma, beta, mean, variance), depthwise kernels
``(kh, kw, C, 1)`` and biases; a ``Reshape`` that keeps the channel axis gets its new
channel count; attention layers and KerasHub blocks lose heads (and feed-forward neurons).
A KerasHub backbone comes back as a plain functional ``keras.Model`` with the same inputs
and outputs. :func:`dead_channels` lists the channels whose removal leaves the model's
outputs unchanged. The input model is never modified.

Example:
    >>> from kprune import structural
    >>> smaller = structural.remove_units(resnet, {"conv2_block1_1_conv": range(0, 64, 2)})
"""

from __future__ import annotations

import numpy as np

from kprune.core import layers
from kprune.core.checks import did_you_mean
from kprune.structural import graph as graph_module
from kprune.structural import heads, hub_blocks
from kprune.structural.nesting import follows_nesting

__all__ = ["remove", "kept_channels", "dead_channels", "out_kernel"]


@follows_nesting
def remove(model, keep):
    """A new model keeping, of each group in ``keep``, only the listed channels.

    The new model is built with ``model``'s own Keras (a tf_keras model gives a tf_keras
    model, a Keras 3 model a Keras 3 model), each layer from its config.

    ``keep`` maps a group id (see :func:`kprune.structural.groups`) or the name of a
    producer in the group to the indices of the channels to keep.

    Example:
        >>> smaller = remove(model, {"conv1": [0, 2, 3]})
        >>> smaller.get_layer("conv1").filters
        3
    """
    groups = graph_module.groups(model)
    kept = _resolve(groups, keep)
    graph = groups.graph

    def indices(desc):
        return _indices(graph, kept, desc)

    entries = {}  # layer name -> its config, with the new channel counts
    classes = {}  # layer name -> the class to rebuild it with, when not its own
    new_weights = {}
    owner = layers.engine(model)
    for layer, inputs, outputs in graph.steps:
        if (not isinstance(layer, owner.keras.layers.Layer)  # none, or a keras.ops function
                or isinstance(layer, owner.keras.layers.InputLayer)):
            continue
        entry = layers.spec(layer)
        role = graph.treated.get(layer.name)
        cfg = entries[layer.name] = layer.get_config()
        weights = layer.get_weights()
        index_in = indices(graph.desc[inputs[0]]) if inputs and role != "refused" else None
        index_out = indices(graph.desc[outputs[0]]) if role != "refused" else None
        if role == "attention":
            keys, head_node = graph.attention[layer.name]
            index_parts = {part: indices(graph.desc[key]) for part, key in keys.items()}
            cfg, weights = heads.slice_attention(layer, cfg, kept.get(graph.find(head_node)),
                                                 index_parts, index_out)
            entries[layer.name] = cfg
        elif role == "block":
            head_node, neuron_node = graph.blocks[layer.name]
            cfg, weights = hub_blocks.slice_block(layer, cfg, kept.get(graph.find(head_node)),
                                                  kept.get(graph.find(neuron_node)))
            entries[layer.name] = cfg
            if "head_size" in cfg:  # KerasHub would size its heads hidden_dim // num_heads
                from kprune.engines.keras3.sized_blocks import sized_class

                classes[layer.name] = sized_class(type(layer))
        elif role == "producer":
            if index_out is not None:
                cfg[entry.units] = len(index_out)
            weights = _slice_producer(entry.layout, weights, index_in, index_out)
        elif role == "channelwise" and index_in is not None:
            if "target_shape" in cfg:  # a Reshape that keeps the channel axis
                cfg["target_shape"] = [*cfg["target_shape"][:-1], len(index_in)]
            if entry.depthwise:
                weights = [np.take(weights[0], index_in, axis=-2)] + [
                    np.take(w, index_in, axis=-1) for w in weights[1:]]
            elif entry.per_channel:
                weights = [np.take(w, index_in, axis=-1) if w.ndim else w for w in weights]
        new_weights[layer.name] = weights

    def rebuilt(path, layer):
        config = entries.get(layer.name) or layer.get_config()
        return classes.get(layer.name, type(layer)).from_config(config)

    smaller = owner.clone_model(model, rebuilt)
    for name, weights in new_weights.items():
        smaller.get_layer(name).set_weights(weights)
    return smaller


def kept_channels(model, keep):
    """``{producer name: (inputs kept, outputs kept)}`` for the producers (``Dense``,
    convolutions) that ``keep`` changes; ``None`` where a side keeps everything. For an
    attention layer the first item is ``{"heads": ..., "query": ..., "key": ...,
    "value": ...}``: the heads and each input's channels kept (``None``: all).

    Example:
        >>> kept_channels(model, {"fc1": [0, 2]})["fc2"]
        (array([0, 2]), None)
    """
    groups = graph_module.groups(model)
    kept = _resolve(groups, keep)
    graph = groups.graph
    found = {}
    for layer, inputs, outputs in graph.steps:
        role = None if layer is None else graph.treated.get(layer.name)
        if role not in ("producer", "attention"):
            continue
        index_out = _indices(graph, kept, graph.desc[outputs[0]])
        if role == "attention":
            keys, head_node = graph.attention[layer.name]
            index_in = {part: _indices(graph, kept, graph.desc[key])
                        for part, key in keys.items()}
            index_in["heads"] = kept.get(graph.find(head_node))
            changed = any(v is not None for v in index_in.values())
        else:
            index_in = _indices(graph, kept, graph.desc[inputs[0]])
            changed = index_in is not None
        if changed or index_out is not None:
            found[layer.name] = (index_in, index_out)
    return found


@follows_nesting
def dead_channels(model):
    """``{group id: channels to keep}`` for groups with channels that change nothing.

    A channel is dead when every tensor that a producer reads it from is 0 on it for any
    input: every producer making it has a zero kernel slice and bias (and an activation
    with ``f(0) = 0``), and every layer on the way maps 0 to 0 (a batch norm only when its
    ``beta - mean * gamma / sqrt(var + eps)`` is 0 too; a ``Multiply`` by a zero channel
    gives 0; a layer norm never: its statistics include every channel). Removing dead channels leaves the outputs unchanged. Groups that are not
    removable, or whose channels are all dead, are not listed.

    Example:
        >>> dead_channels(model)
        {'conv1': array([0, 1, 3, 4, 5, 7])}
    """
    groups = graph_module.groups(model)
    graph = groups.graph
    zero = {}
    for layer, inputs, outputs in graph.steps:
        desc = graph.desc[outputs[0]]
        role = "input" if layer is None else graph.treated.get(layer.name, "input")
        if role == "attention":  # no activation after the output projection
            bias = heads.part_weights(layer)["output"][1:]
            zero[outputs[0]] = np.all(out_kernel(layer) == 0, axis=0) & np.all(
                [b == 0 for b in bias] or [True], axis=0)
        elif role == "producer":
            kernel = out_kernel(layer)
            kernel = kernel.reshape(-1, kernel.shape[-1])
            zero[outputs[0]] = np.all(kernel == 0, axis=0) & _at_zero(layer, desc.size)
        elif role == "channelwise" and layers.spec(layer).channel_statistics:
            zero[outputs[0]] = np.zeros(desc.size, bool)  # layer norm: never dead
        elif role == "channelwise" and not hasattr(layer, "weights"):  # x[key]: selects
            zero[outputs[0]] = zero[inputs[0]]
        elif role == "channelwise":
            zero[outputs[0]] = zero[inputs[0]] & _at_zero(layer, desc.size)
        elif role == "coupling":
            joined = [zero[key] for key in inputs]
            combine = np.logical_or if layers.spec(layer).annihilates else np.logical_and
            zero[outputs[0]] = np.broadcast_to(combine.reduce(
                np.broadcast_arrays(*joined)), desc.size).copy()
        elif role == "concatenating":
            zero[outputs[0]] = np.concatenate([zero[key] for key in inputs])
        elif role == "flattening":
            zero[outputs[0]] = zero[inputs[0]]
        else:  # inputs, refused and mixing layers: never zero
            for key in outputs:
                zero[key] = np.zeros(graph.desc[key].size, bool)
    found = {}
    for group in groups:
        if not group.removable:
            continue
        unit = next((role for role in ("neurons", "heads")
                     if role in {m.role for m in group.members}), None)
        if unit is not None:  # a block's neuron, or a head, adding nothing
            layer = model.get_layer(group.layers(unit)[0])
            dead = (hub_blocks.dead_neurons if unit == "neurons" else
                    hub_blocks.dead_heads if layer.name in graph.blocks else heads.dead_heads)
            alive = ~dead(layer)
            if not alive.all() and alive.any():
                found[group.id] = np.flatnonzero(alive)
            continue
        readers = [(offset, key) for node, offset, key in graph.readers
                   if graph.find(node) == group.node]
        if not readers:
            continue
        alive = np.zeros(group.size, bool)
        for offset, key in readers:
            alive |= ~zero[key][offset:offset + group.size]
        if not alive.all() and alive.any():
            found[group.id] = np.flatnonzero(alive)
    return found


def out_kernel(layer, weights=None):
    """A producer's kernel as ``(..., inputs, outputs)`` (a separable conv's pointwise one).

    ``weights`` (arrays in the order of ``layer.weights``, e.g. their gradients) are laid
    out the same way instead of the layer's own (leading axes, one per example, kept).

    Example:
        >>> out_kernel(model.get_layer("deconv")).shape   # Conv2DTranspose(8, 3) on 4
        (3, 3, 4, 8)
    """
    layout = layers.spec(layer).layout
    if layout == "attention":
        return heads.output_kernel(layer, weights)
    weights = layer.get_weights() if weights is None else weights
    if layout == "separable":
        return weights[1]
    return np.swapaxes(weights[0], -1, -2) if layout == "transposed" else weights[0]


# -- internals ---------------------------------------------------------------------


def _indices(graph, kept, desc):
    """The indices of tensor ``desc``'s channels that ``kept`` keeps (None: all)."""
    if not any(graph.find(node) in kept for node, _, _ in desc.offsets()):
        return None
    parts = [offset + kept.get(graph.find(node), np.arange(size))
             for node, size, offset in desc.offsets()]
    index = np.concatenate(parts)
    if desc.positions > 1:
        index = (np.arange(desc.positions)[:, None] * desc.size + index[None, :]).ravel()
    return index


def _slice_producer(layout, weights, index_in, index_out):
    """A producer's weights with only the kept inputs and outputs."""
    weights = list(weights)
    if layout == "separable":
        depthwise, pointwise, *bias = weights
        if index_out is not None:
            pointwise = pointwise[..., index_out]
            bias = [b[index_out] for b in bias]
        if index_in is not None:
            multiplier = depthwise.shape[-1]
            depthwise = np.take(depthwise, index_in, axis=-2)
            rows = (index_in[:, None] * multiplier + np.arange(multiplier)).ravel()
            pointwise = np.take(pointwise, rows, axis=-2)
        return [depthwise, pointwise, *bias]
    if layout == "transposed":
        weights[0] = np.swapaxes(weights[0], -1, -2)
    if index_out is not None:
        weights = [w[..., index_out] for w in weights]
    if index_in is not None:
        weights[0] = np.take(weights[0], index_in, axis=-2)
    if layout == "transposed":
        weights[0] = np.swapaxes(weights[0], -1, -2)
    return weights


def _at_zero(layer, channels):
    """Per output channel: does ``layer`` give exactly 0 everywhere for an all-zero input?"""
    shape = [1] + [8 if d is None else int(d) for d in layers.input_shape(layer)[1:]]
    try:
        out = np.asarray(layer(np.zeros(shape, "float32"), training=False))
    except (TypeError, ValueError):  # a TFOpLambda needs its other arguments: not 0
        return np.zeros(channels, bool)
    return np.all(out.reshape(-1, channels) == 0, axis=0)


def _resolve(groups, keep):
    """``keep`` (group id or producer name -> indices) as ``{root node: sorted indices}``."""
    if not isinstance(keep, dict):
        raise TypeError(
            "Argument `keep` must be a dict of group id or layer name -> channel indices. "
            f"Received: keep={keep!r}"
        )
    kept = {}
    names = groups.ids + [n for g in groups for n in g.layers("out") if n not in groups]
    for key, indices in keep.items():
        group = groups[key] if key in groups else groups.of_producer(key)
        pieces = [g.id for g in groups if key in g.layers("out")]
        if key not in groups and len(pieces) > 1:
            raise ValueError(
                f"Argument `keep` names layer {key!r}, whose output channels are split over "
                f"groups {pieces} (parts of a Concatenate added to it): key them by group "
                f"id. Received: keep keys {list(keep)}"
            )
        if group is None:
            raise ValueError(
                f"Argument `keep` names {key!r}, which is neither a group id nor a layer "
                f"whose output units a group removes.{did_you_mean(key, names)} "
                f"Received: keep keys {list(keep)}"
            )
        if not group.removable:
            raise ValueError(
                f"Cannot remove channels of group {group.id!r} (layers "
                f"{group.layers()}): {group.reason}. Received: keep[{key!r}]"
            )
        array = np.asarray(list(indices) if isinstance(indices, range) else indices)
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"Channels to keep for group {group.id!r} must be a non-empty list of "
                f"integer indices (keeping none would cut the model in two). "
                f"Received: keep[{key!r}]={indices!r}"
            )
        if array.min() < 0 or array.max() >= group.size or len(np.unique(array)) != array.size:
            raise ValueError(
                f"Channels to keep for group {group.id!r} must be distinct indices in "
                f"[0, {group.size}). Received: keep[{key!r}]={indices!r}"
            )
        array = np.sort(array)
        if group.node in kept and not np.array_equal(kept[group.node], array):
            raise ValueError(
                f"Argument `keep` gives group {group.id!r} two different index lists "
                f"(by its id and by a producer's name). Received: keep[{key!r}]={indices!r}"
            )
        if array.size < group.size:
            kept[group.node] = array
    return kept
