"""KerasHub transformer blocks as removable units: their attention heads and feed-forward neurons.

A KerasHub ``TransformerEncoder`` or ``TransformerDecoder`` (Keras 3) is one layer of its
backbone's graph; its input and its output are the residual stream (``hidden_dim``), which
kprune does not slice inside it. It holds two groups of its own:

- its heads (``num_heads``): the ``MultiHeadAttention`` it keeps as
  ``_self_attention_layer`` is sliced head by head as :mod:`kprune.structural.heads` does;
- its feed-forward neurons (``intermediate_dim``): neuron ``n`` is column ``n`` of
  ``_feedforward_intermediate_dense``'s kernel and bias and row ``n`` of
  ``_feedforward_output_dense``'s kernel.

The block is rebuilt from its config with the new ``num_heads`` and ``intermediate_dim``.
KerasHub derives the head size as ``hidden_dim // num_heads``; a block that lost heads is
rebuilt as a subclass that keeps the original head size in its config (``head_size``,
registered as ``kprune>TransformerEncoder``, see :mod:`kprune.engines.keras3.sized_blocks`):
it clones, saves and loads (``kprune.load_model`` registers it in a new process). A
decoder with cross-attention (called with an encoder sequence) keeps its heads: its self-
and cross-attention share one ``num_heads``.

kprune never imports KerasHub: the blocks are recognised by class (see
:data:`kprune.core.layers.HUB_BLOCKS`).

Example:
    >>> from kprune.structural import hub_blocks
    >>> block = bert.get_layer("transformer_layer_0")
    >>> hub_blocks.per_neuron(block).shape            # hidden 64, intermediate 128
    (129, 128)
    >>> hub_blocks.dead_neurons(block)[:3]
    array([False,  True, False])
"""

from __future__ import annotations

import numpy as np

from kprune.structural import heads

__all__ = ["attention", "cross_attention_problem", "num_neurons", "sub_weights", "per_head",
           "head_outputs", "per_neuron", "neuron_outputs", "dead_heads", "dead_neurons",
           "slice_block"]

_UP, _DOWN = "_feedforward_intermediate_dense", "_feedforward_output_dense"


def attention(block):
    """The block's self-attention layer (a Keras ``MultiHeadAttention``)."""
    return block._self_attention_layer


def cross_attention_problem(block):
    """Why the block's heads stay whole because of cross-attention ("" when it has none)."""
    if getattr(block, "_cross_attention_layer", None) is None:
        return ""
    return (f"layer {block.name!r} ({type(block).__name__}) has cross-attention, whose heads "
            "share num_heads with its self-attention: kprune does not prune the two apart")


def num_neurons(block):
    """The block's feed-forward neurons (``intermediate_dim``)."""
    return int(block.get_config()["intermediate_dim"])


def sub_weights(block, sublayer, weights=None):
    """``sublayer``'s weights (numpy, in the order of ``sublayer.weights``), taken from
    ``weights`` (arrays in the order of ``block.weights``, e.g. their gradients) or from the
    block's own."""
    if weights is None:
        return [np.asarray(v.numpy()) for v in sublayer.weights]
    index = {id(v): i for i, v in enumerate(block.weights)}
    return [np.asarray(weights[index[id(v)]]) for v in sublayer.weights]


def per_head(block, weights=None):
    """Every weight of each head as one column (see :func:`kprune.structural.heads.per_head`)."""
    inner = attention(block)
    return heads.per_head(inner, _attention_weights(block, weights))


def head_outputs(block, weights=None):
    """Each head's output projection rows as one column: ``(value_dim * d_out, heads)``."""
    return heads.head_outputs(attention(block), _attention_weights(block, weights))


def per_neuron(block, weights=None):
    """Every weight of each neuron as one column: its intermediate kernel column and bias and
    its output kernel row, ``(2 * hidden_dim + 1, neurons)``."""
    (up, *bias), (down, *_) = _feedforward(block, weights)
    return np.concatenate([up, *(b[None] for b in bias), down.T])


def neuron_outputs(block, weights=None):
    """Each neuron's output kernel row as one column: ``(hidden_dim, neurons)`` (leading axes
    of ``weights`` kept)."""
    return np.swapaxes(_feedforward(block, weights)[1][0], -1, -2)


def dead_heads(block):
    """Per head: does it add exactly nothing to the block's output for any input?"""
    return heads.dead_heads(attention(block))


def dead_neurons(block):
    """Per neuron: does it add exactly nothing for any input? Its output row is zero, or its
    intermediate column and bias are and the activation gives 0 at 0 (relu, gelu)."""
    (up, *bias), (down, *_) = _feedforward(block)
    silent = np.all(up == 0, axis=0)
    if bias:
        silent &= bias[0] == 0
    activation = getattr(block, _UP).activation
    if np.asarray(activation(np.zeros(1, "float32"))).item() != 0:
        silent[:] = False
    return silent | np.all(down == 0, axis=1)


def slice_block(block, config, index_heads, index_neurons):
    """``(config, weights)`` of ``block`` rebuilt with only the kept heads and neurons
    (``None``: all); weights in the order of ``block.weights``. A config with fewer heads
    has a ``head_size``: build it with
    :func:`kprune.engines.keras3.sized_blocks.sized_class`."""
    config = dict(config)
    by_id = {id(v): np.asarray(v.numpy()) for v in block.weights}
    inner = attention(block)
    if index_heads is not None:
        config["num_heads"] = len(index_heads)
        config["head_size"] = int(inner.get_config()["key_dim"])
        _, sliced = heads.slice_attention(inner, inner.get_config(), index_heads, {}, None)
        by_id.update({id(v): w for v, w in zip(inner.weights, sliced)})
    if index_neurons is not None:
        config["intermediate_dim"] = len(index_neurons)
        up, down = getattr(block, _UP), getattr(block, _DOWN)
        kernel, *bias = up.weights
        by_id[id(kernel)] = by_id[id(kernel)][:, index_neurons]
        for variable in bias:
            by_id[id(variable)] = by_id[id(variable)][index_neurons]
        kernel = down.weights[0]
        by_id[id(kernel)] = by_id[id(kernel)][index_neurons]
    return config, [by_id[id(v)] for v in block.weights]


# -- internals ---------------------------------------------------------------------

def _attention_weights(block, weights):
    return None if weights is None else sub_weights(block, attention(block), weights)


def _feedforward(block, weights=None):
    """``([up kernel, up bias?], [down kernel, down bias?])`` as numpy."""
    return (sub_weights(block, getattr(block, _UP), weights),
            sub_weights(block, getattr(block, _DOWN), weights))
