"""What a layer costs at inference: multiply-accumulates from layer shapes.

Used by structural pruning's cost-weighted selection (``structural.prune(model, 0.5,
cost="macs")``) and by :func:`kprune.measure.count_macs` (re-exported there). The shapes of
each call are read from the model's graph through its engine (:func:`kprune.engines.engine_of`).

Example:
    >>> from kprune.structural.cost import count_macs
    >>> count_macs(build("seed-cnn"), by_layer=True)["conv2"]
    10035200
"""

from __future__ import annotations

import numpy as np

from kprune.core import layers as layer_registry
from kprune.engines import engine_of

__all__ = ["count_macs", "block_macs"]


def _layer_macs(layers, layer, in_shape, out_shape):
    """Multiply-accumulates of one call of a Conv/Dense layer at batch 1 (None: not one);
    ``layers`` is ``keras.layers`` of the layer's Keras."""
    if isinstance(layer, layers.Dense):
        return int(np.prod(out_shape[1:-1], dtype=np.int64)) * int(in_shape[-1]) * layer.units
    convs = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.DepthwiseConv1D,
             layers.DepthwiseConv2D, layers.SeparableConv1D, layers.SeparableConv2D)
    if not isinstance(layer, convs):  # transposed convs subclass Conv1D/2D/3D
        return None
    first = getattr(layer, "data_format", "channels_last") == "channels_first"
    spatial_in = in_shape[2:] if first else in_shape[1:-1]
    spatial_out = out_shape[2:] if first else out_shape[1:-1]
    in_c = int(in_shape[1] if first else in_shape[-1])
    window = int(np.prod(layer.kernel_size, dtype=np.int64))
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        return int(np.prod(spatial_out, dtype=np.int64)) * window * in_c * layer.depth_multiplier
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        mid = in_c * layer.depth_multiplier
        pixels = int(np.prod(spatial_out, dtype=np.int64))
        return pixels * window * mid + pixels * mid * layer.filters
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose,
                          layers.Conv3DTranspose)):  # every input pixel scatters a window
        return int(np.prod(spatial_in, dtype=np.int64)) * window * in_c * layer.filters
    return (int(np.prod(spatial_out, dtype=np.int64)) * window * (in_c // layer.groups)
            * layer.filters)


def _attention_calls(engine, layer):
    """``[(query shape, value shape)]`` of every call of a MultiHeadAttention (its first
    two tensor inputs; the value is the query when it is called with one)."""
    calls = []
    for node in engine.layer_calls(layer):
        shapes = [tuple(t.shape) for t in engine.node_inputs(node)]
        if shapes:
            calls.append((shapes[0], shapes[1] if len(shapes) > 1 else shapes[0]))
    return calls


def _attention_macs(layer, query, value):
    """MACs of one MultiHeadAttention call: the four projections, the scores and the
    weighted sum of the values."""
    config = layer.get_config()
    heads, key_dim = config["num_heads"], config["key_dim"]
    value_dim = config.get("value_dim") or key_dim
    t_q = int(np.prod(query[1:-1], dtype=np.int64))
    t_v = int(np.prod(value[1:-1], dtype=np.int64))
    d_out = int(np.prod(layer._output_dense.kernel.shape[2:], dtype=np.int64))
    return (t_q * query[-1] * heads * key_dim + t_v * value[-1] * heads * (key_dim + value_dim)
            + t_q * t_v * heads * (key_dim + value_dim) + t_q * heads * value_dim * d_out)


_UNKNOWN_DIMENSIONS = (
    "count_macs needs every input dimension but the batch to be known: call the model on "
    "inputs of fixed sizes (a sequence model on keras.Input((128,), dtype='int32') for each "
    "of its inputs, say) and count that model, or prune with cost=None.")


def block_macs(engine, layer):
    """``{"heads": MACs, "neurons": MACs}`` of a KerasHub transformer block over its calls:
    its self-attention (as :func:`_attention_macs`) and its feed-forward's two ``Dense``
    (``positions * hidden * intermediate`` each). Every dimension but the batch must be
    known."""
    from kprune.structural import hub_blocks

    found = {"heads": 0, "neurons": 0}
    for node in engine.layer_calls(layer):
        shape = tuple(engine.node_inputs(node)[0].shape)
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"{_UNKNOWN_DIMENSIONS} Received: layer {layer.name!r} with input shape "
                f"{shape}")
        positions = int(np.prod(shape[1:-1], dtype=np.int64))
        found["heads"] += _attention_macs(hub_blocks.attention(layer), shape, shape)
        found["neurons"] += 2 * positions * shape[-1] * hub_blocks.num_neurons(layer)
    return found


def count_macs(model, *, by_layer=False):
    """Multiply-accumulates of one forward pass at batch 1, from layer shapes.

    Counts the layers that dominate inference cost: ``Dense`` (its kernel times the
    positions it is applied at), ``Conv1D/2D/3D`` (grouped too) and their transposes,
    ``DepthwiseConv1D/2D`` and ``SeparableConv1D/2D`` (depthwise plus pointwise), each
    from its input and output shapes and kernel size, and ``MultiHeadAttention`` (its
    four projections, the scores and the weighted values, from its query and value
    shapes; inside a KerasHub ``TransformerEncoder``/``TransformerDecoder`` too, with its
    feed-forward, see :func:`block_macs`); nested models are descended into
    and a layer called twice counts twice. Biases, batch norm, activations, pooling and
    element-wise layers are not counted. Every input dimension but the batch must be
    known. Takes tf_keras and Keras 3 models.

    Returns:
        The total (an int), or with ``by_layer=True`` ``{layer path: MACs}`` of the
        counted layers, in model order.

    Example:
        >>> count_macs(build("seed-cnn"))
        13883904
    """
    engine = engine_of(model)
    per_layer = {}
    for path, layer in engine.model_layers(model):  # checked
        layer = getattr(layer, "layer", layer)  # a pruning wrapper counts as its layer
        total = None
        if layer_registry.spec(layer).layout == "block":
            per_layer[path] = int(sum(block_macs(engine, layer).values()))
            continue
        if layer_registry.spec(layer).layout == "attention":
            calls = _attention_calls(engine, layer)
            if calls:
                per_layer[path] = int(sum(_attention_macs(layer, q, v) for q, v in calls))
            continue
        for in_shape, out_shape in engine.node_shapes(layer):
            if any(d is None for d in (*in_shape[1:], *out_shape[1:])):
                raise ValueError(
                    f"{_UNKNOWN_DIMENSIONS} Received: layer {path!r} with input shape "
                    f"{in_shape} and output "
                    f"shape {out_shape}"
                )
            macs = _layer_macs(engine.keras.layers, layer, in_shape, out_shape)
            if macs is not None:
                total = (total or 0) + macs
        if total is not None:
            per_layer[path] = int(total)
    return per_layer if by_layer else int(sum(per_layer.values()))
