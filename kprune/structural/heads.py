"""Attention heads as removable units: a ``MultiHeadAttention`` layer's weights head by head.

A ``MultiHeadAttention`` holds four ``EinsumDense`` projections (not one dense kernel): query,
key and value kernels ``[d_model, heads, head_dim]`` with biases ``[heads, head_dim]``,
and an output kernel ``[heads, value_dim, d_out]`` with a bias ``[d_out]``. Head ``h`` is
the slice ``[:, h, :]`` of the first three (and ``[h]`` of their biases) and the rows
``[h]`` of the output kernel: removing it removes all of these together, and the rebuilt
layer has one head fewer with the same ``key_dim`` and ``value_dim``. The layer's input
channels are the first axis of the query, key and value kernels (each reads its own
tensor, so cross-attention couples query and key/value to different groups), its output
channels the last axis of the output kernel and its bias. Both Keras engines hold the
projections as ``_query_dense``, ``_key_dense``, ``_value_dense`` and ``_output_dense``.

Example:
    >>> from kprune.structural import heads
    >>> heads.per_head(model.get_layer("mha")).shape     # 4 heads, key_dim 16, d_model 64
    (4096, 4)
    >>> heads.dead_heads(model.get_layer("mha"))
    array([False,  True, False, False])
"""

from __future__ import annotations

import numpy as np

from kprune.engines import engine_of

__all__ = ["PARTS", "num_heads", "part_weights", "per_head", "head_outputs", "output_kernel",
           "dead_heads",
           "slice_attention", "inputs_of", "context_probe"]

#: The projections of a MultiHeadAttention, in the order of its weights.
PARTS = ("query", "key", "value", "output")
_DENSE = {"query": "_query_dense", "key": "_key_dense", "value": "_value_dense",
          "output": "_output_dense"}


def num_heads(layer):
    """How many heads ``layer`` has."""
    return int(layer.get_config()["num_heads"])


def part_weights(layer, weights=None):
    """``{part: [kernel, bias?]}`` of the four projections, as numpy arrays.

    ``weights`` (arrays in the order of ``layer.weights``, e.g. their gradients) are split
    the same way instead of the layer's own.
    """
    values = layer.get_weights() if weights is None else list(weights)
    index = {id(v): i for i, v in enumerate(layer.weights)}
    return {part: [np.asarray(values[index[id(v)]])
                   for v in getattr(layer, _DENSE[part]).weights] for part in PARTS}


def per_head(layer, weights=None):
    """Every weight of each head as one column: ``(weights per head, heads)``.

    The query, key and value kernel slices and biases and the output kernel's rows of
    head ``h`` make column ``h``; kernel norms of these columns score the heads.
    """
    parts = part_weights(layer, weights)
    heads = num_heads(layer)
    columns = []
    for part in ("query", "key", "value"):
        for array in parts[part]:  # (d, heads, dim) and (heads, dim)
            columns.append(np.moveaxis(array, -2, -1).reshape(-1, heads))
    kernel = parts["output"][0]  # (heads, value_dim, d_out)
    columns.append(np.moveaxis(kernel, 0, -1).reshape(-1, heads))
    return np.concatenate(columns)


def head_outputs(layer, weights=None):
    """The output projection's rows of each head as one column: ``(value_dim * d_out, heads)``
    (the weights a mask on the head's output multiplies); ``weights`` with leading axes
    (one per example) keep them."""
    kernel = part_weights(layer, weights)["output"][0]  # (..., heads, value_dim, d_out)
    return np.moveaxis(kernel, -3, -1).reshape(*kernel.shape[:-3], -1, kernel.shape[-3])


def output_kernel(layer, weights=None):
    """The output projection's kernel as ``(heads * value_dim, d_out)``: a producer's
    ``(inputs, outputs)`` kernel (see :func:`kprune.structural.rebuild.out_kernel`)."""
    kernel = part_weights(layer, weights)["output"][0]
    return kernel.reshape(*kernel.shape[:-3], -1, kernel.shape[-1])


def dead_heads(layer):
    """Per head: does it add exactly nothing to the output for any input?

    A head is dead when its output rows are all zero, or when its value kernel slice and
    value bias are (its values are then 0 whatever it attends to).
    """
    parts = part_weights(layer)
    rows = np.all(parts["output"][0] == 0, axis=(1, 2))
    value = np.all(parts["value"][0] == 0, axis=(0, 2))
    if len(parts["value"]) > 1:
        value &= np.all(parts["value"][1] == 0, axis=1)
    return rows | value


def inputs_of(node_args, node_kwargs):
    """``{"query": tensor, "value": tensor, "key": tensor}`` of one call, and the other
    tensors passed to it (masks), from the call's positional and keyword arguments."""
    args, kwargs = list(node_args), dict(node_kwargs or {})
    found = {}
    for position, part in enumerate(("query", "value", "key")):
        tensor = args[position] if position < len(args) else kwargs.pop(part, None)
        if tensor is not None:
            found[part] = tensor
    found.setdefault("key", found["value"])
    is_tensor = engine_of(found["query"]).is_graph_tensor
    return found, [a for a in args[3:] + list(kwargs.values()) if is_tensor(a)]


def context_probe(layer, call):
    """A function ``(query, value, key) -> context`` giving, for ``layer``'s weights, what
    its output projection reads: every head's attended values, ``(positions, heads *
    value_dim)``. It is a twin of the layer whose output projection is the identity.

    ``call(probe, query, value, key)`` calls a layer on numpy inputs (the engine's way)."""
    config = dict(layer.get_config())
    parts = part_weights(layer)
    heads, value_dim = parts["output"][0].shape[:2]
    width = heads * value_dim
    config.update(name=f"{layer.name}_context", output_shape=width)
    probe = type(layer).from_config(config)
    state = {}

    def context(query, value, key):
        if "built" not in state:
            call(probe, query, value, key)  # builds it; then its weights are set
            mine = dict(parts, output=[np.eye(width, dtype=parts["output"][0].dtype).reshape(
                heads, value_dim, width), np.zeros(width, parts["output"][0].dtype)])
            order = {id(v): i for i, v in enumerate(probe.weights)}
            values = [None] * len(probe.weights)
            for part in PARTS:
                for variable, array in zip(getattr(probe, _DENSE[part]).weights, mine[part]):
                    values[order[id(variable)]] = array
            probe.set_weights(values)
            state["built"] = True
        return np.asarray(call(probe, query, value, key)).reshape(-1, width)

    return context


def slice_attention(layer, config, index_heads, index_in, index_out):
    """``(config, weights)`` of ``layer`` rebuilt with only the kept heads and channels.

    ``index_heads``: the heads kept (None: all); ``index_in``: ``{part: input channels
    kept}`` for "query", "key" and "value" (a part missing or None: all);
    ``index_out``: the output channels kept (None: all). Weights come back in the order of
    ``layer.weights``.
    """
    parts = part_weights(layer)
    config = dict(config)
    if index_heads is not None:
        config["num_heads"] = len(index_heads)
        for part in ("query", "key", "value"):
            kernel, *bias = parts[part]
            parts[part] = [kernel[:, index_heads, :], *(b[index_heads, :] for b in bias)]
        kernel, *bias = parts["output"]
        parts["output"] = [kernel[index_heads], *bias]
    for part in ("query", "key", "value"):
        index = index_in.get(part)
        if index is not None:
            parts[part][0] = np.take(parts[part][0], index, axis=0)
            shape = config.get(f"{part}_shape")
            if shape is not None:  # tf_keras builds from these shapes in from_config
                config[f"{part}_shape"] = [*list(shape)[:-1], len(index)]
    if index_out is not None:
        kernel, *bias = parts["output"]
        parts["output"] = [kernel[..., index_out], *(b[index_out] for b in bias)]
        config["output_shape"] = len(index_out)
    weights = [w for part in PARTS for w in parts[part]]
    order = [id(v) for part in PARTS for v in getattr(layer, _DENSE[part]).weights]
    position = {key: i for i, key in enumerate(order)}
    return config, [weights[position[id(v)]] for v in layer.weights]
