"""Least-squares correction after removal: re-fit the layers after the removed units.

Removing neurons of a feed-forward block's first ``Dense`` (or any producer) takes away
part of what the next ``Dense`` reads, and every layer after it reads drifted inputs. With
a calibration set (inputs only, no labels) those layers' kernels and biases can be
re-fitted so that each one's pre-activation output on the pruned model's activations comes
as close as possible, in the least-squares sense, to the original model's on the original
activations. Kwon et al. 2022 tune the masks of the pruned layers this way, with no
retraining; by default every ``Dense`` whose inputs changed is re-fitted too (the layers
downstream of a removal, the classifier head included: layer-wise reconstruction, as in
SparseGPT), ``refit="removed"`` re-fits only the layers that lost inputs. The layers are
re-fitted in graph order, each on the inputs of the already corrected model, so that every
fit sees the corrections before it.

Re-fitted: ``Dense`` layers (applied to any rank: every position is one row) and the
output projection of a ``MultiHeadAttention`` (on the values its kept heads attend to,
causally when the layer is called with ``use_causal_mask=True``); a convolution, or an
attention layer called with a mask tensor, keeps its sliced weights, and so does a layer
that the calibration gives fewer rows than it has inputs (a fit would only memorise them).

Example:
    >>> from kprune import structural
    >>> smaller = structural.prune(model, 0.5, correct="least_squares", calibration=x[:512])
    >>> keep = structural.select(model, 0.5)
    >>> fixed = structural.correct(model, structural.remove_units(model, keep), keep, x[:512])
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from kprune.core import layers
from kprune.core.calibration import calibration_batches
from kprune.core.checks import check_choice
from kprune.engines import engine_of
from kprune.engines.capture import layer_inputs, to_numpy
from kprune.engines.graph_reader import read
from kprune.structural import heads, rebuild
from kprune.structural.nesting import inline

__all__ = ["CORRECTIONS", "REFITS", "correct", "refitted_layers"]

#: What ``correct=`` accepts in :func:`kprune.structural.prune`.
CORRECTIONS = ("least_squares",)
#: Which layers :func:`correct` re-fits: every one whose inputs changed, or only those
#: that lost inputs (Kwon et al.'s mask tuning).
REFITS = ("downstream", "removed")


def refitted_layers(model, keep, refit="downstream"):
    """The names of the layers that :func:`correct` re-fits after ``keep``, in graph order:
    the ``Dense`` layers and the ``MultiHeadAttention`` layers (their output projection;
    not when called with a mask) that lose inputs or heads, and with
    ``refit="downstream"`` also those that read what a removal changed.

    Example:
        >>> refitted_layers(transformer, {"ffn_up_1": range(64)}, refit="removed")
        ['ffn_down_1']
        >>> refitted_layers(transformer, {"ffn_up_1": range(64)})
        ['ffn_down_1', 'mha_2', 'ffn_up_2', 'ffn_down_2', 'head']
    """
    check_choice(refit, REFITS, "refit")
    model = inline(model)
    return _refitted(model, rebuild.kept_channels(model, keep), refit)


def correct(original, pruned, keep, calibration, *, refit="downstream", batch_size=64,
            ridge=1e-6):
    """A copy of ``pruned`` whose layers after removed units are re-fitted on
    ``calibration`` to give the original's pre-activation outputs (least squares).

    A ``Dense`` gets a new kernel and bias; a ``MultiHeadAttention`` a new output
    projection, fitted on the values its kept heads attend to. The layers are fitted in
    graph order, each on the already corrected model; one that feeds a residual ``Add``
    alone is fitted to the original's sum (its shortcut's drift included).

    Args:
        original: the model before removal (not modified).
        pruned: the model :func:`kprune.structural.remove_units` built from ``original``
            and ``keep`` (not modified: a corrected copy is returned).
        keep: what was kept (a :class:`kprune.structural.Selection` or ``{group id:
            indices}``), to map each layer's kept inputs and outputs.
        calibration: model inputs without labels: an array, a dict of arrays, a
            ``tf.data.Dataset`` or an iterable of batches (see
            :func:`kprune.core.calibration.calibration_batches`).
        refit: ``"downstream"`` re-fits every layer whose inputs the removal changed (the
            head included); ``"removed"`` only those that lost inputs or heads.
        batch_size: examples per batch when ``calibration`` is an array.
        ridge: a damping of the normal equations, relative to their mean diagonal, so
            that inputs that never vary do not make the fit singular.

    A layer given fewer calibration rows (examples times positions) than it has inputs
    keeps its weights, with a warning that says how many examples it needs.

    Example:
        >>> fixed = correct(model, smaller, keep, x_train[:512])
    """
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
        raise ValueError(f"Argument `ridge` must be a number >= 0. Received: ridge={ridge!r}")
    check_choice(refit, REFITS, "refit")
    original = inline(original)
    batches = calibration_batches(original, calibration, batch_size=batch_size)
    fixed = _copy(pruned)
    found = rebuild.kept_channels(original, keep)
    for name in _refitted(original, found, refit):
        _, index_out = found.get(name, (None, None))
        layer = original.get_layer(name)
        if _is_plain_dense(layer):
            kernel, *bias = layer.get_weights()
            pairs = zip(layer_inputs(original, name, batches), layer_inputs(fixed, name, batches))
        else:  # the output projection of an attention layer, on what its heads attend to
            kernel, *bias = heads.part_weights(layer)["output"]
            kernel = kernel.reshape(-1, kernel.shape[-1])
            pairs = zip(_contexts(original, name, batches), _contexts(fixed, name, batches))
        if index_out is not None:
            kernel, bias = kernel[:, index_out], [b[index_out] for b in bias]
        drift = _shortcut_drift(original, fixed, name, batches)
        solved, rows, examples = _least_squares(pairs, kernel, bias, ridge, drift)
        if solved is None:
            columns = kernel.shape[0] + len(bias)
            needed = math.ceil(columns * examples / rows)
            warnings.warn(
                f"structural.correct: layer {name!r} keeps its weights: the calibration "
                f"gives it {rows:,} rows (examples times positions) for its {columns:,} "
                f"inputs, too few to fit; pass at least {needed:,} calibration examples "
                f"(not {examples:,}) to re-fit it.", TooFewRows, stacklevel=2)
            continue
        target = fixed.get_layer(name)
        if _is_plain_dense(layer):
            target.set_weights(solved)
        else:
            dense = target._output_dense  # (heads, value_dim, outputs) on both engines
            shape = tuple(dense.kernel.shape)
            dense.set_weights([solved[0].reshape(shape), *solved[1:]])
    return fixed


class TooFewRows(UserWarning):
    """:func:`correct` left a layer's weights as they were: too few calibration rows."""


# -- internals ---------------------------------------------------------------------


def _refitted(model, found, refit):
    """:func:`refitted_layers` of an inlined ``model``, given its ``found`` =
    ``rebuild.kept_channels(model, keep)``."""
    changed = _changed_inputs(model, found) if refit == "downstream" else set()
    names = []
    for layer in model.layers:
        index_in, _ = found.get(layer.name, (None, None))
        if _is_plain_dense(layer):
            if index_in is not None or layer.name in changed:
                names.append(layer.name)
        elif layers.spec(layer).layout == "attention" and not _attention_call(model, layer)[1]:
            lost = index_in is not None and any(v is not None for v in index_in.values())
            if lost or layer.name in changed:
                names.append(layer.name)
    return names


def _least_squares(pairs, kernel, bias, ridge, drifts):
    """``([kernel, bias?], rows, examples)``: the weights fitted so that ``after @ kernel +
    bias`` matches ``before @ kernel + bias`` plus the shortcut's drift over the ``(before,
    after)`` input pairs (every position a row; ``drifts`` yields one array per pair, or
    None), and the number of rows and of examples; no weights (None) with fewer rows than
    inputs."""
    gram, cross, count, examples = 0.0, 0.0, 0, 0
    for (before, after), drift in zip(pairs, drifts):
        examples += len(after)
        before = before.reshape(-1, before.shape[-1]).astype(np.float64)
        after = after.reshape(-1, after.shape[-1]).astype(np.float64)
        target = before @ kernel + (bias[0] if bias else 0.0)
        if drift is not None:
            target = target + drift.reshape(target.shape)
        rows = np.hstack([after, np.ones((len(after), 1))]) if bias else after
        gram = gram + rows.T @ rows
        cross = cross + rows.T @ target
        count += len(rows)
    if count < len(gram):
        return None, count, examples
    gram = gram + ridge * max(float(np.mean(np.diag(gram))), 1e-12) * np.eye(len(gram))
    solved = np.linalg.solve(gram, cross).astype(kernel.dtype)
    return ([solved[:-1], solved[-1]] if bias else [solved]), count, examples


def _changed_inputs(model, found):
    """The names of the layers of ``model`` that read, directly or through other layers,
    an output of a layer in ``found`` (those whose inputs or outputs the removal changes)."""
    graph = read(model)
    changed = set()  # tensor keys
    readers = set()
    for call in graph.calls:
        if any(key in changed for key in call.inputs):
            readers.add(call.layer.name)
            changed.update(call.outputs)
        elif call.layer.name in found:
            changed.update(call.outputs)
    return readers


def _shortcut_drift(original, fixed, name, batches):
    """Yield, per batch, what the re-fitted layer ``name`` must add to give the original
    residual stream: when an ``Add`` is the only reader of its output, the original's other
    ``Add`` inputs minus the corrected model's (the drift the removals before it left in
    the shortcut), else None forever. Kwon et al. 2022 fit the same target: the block's
    output, shortcut included."""
    ends = [_shortcut(model, name) for model in (original, fixed)]
    if ends[0] is None or ends[1] is None:
        while True:
            yield None
    probes = [engine_of(model).keras.Model(
        model.inputs[0] if len(model.inputs) == 1 else model.inputs, tensors)
        for model, tensors in zip((original, fixed), ends)]
    for batch in batches:
        before, after = (sum(to_numpy(t).astype(np.float64) for t in _listed(
            probe(batch, training=False))) for probe in probes)
        yield before - after


def _shortcut(model, name):
    """The other input tensors of the ``Add`` that alone reads layer ``name``'s output in
    ``model``, or None (another reader, or none)."""
    graph = read(model)
    layer = model.get_layer(name)
    made, readers = graph.made_by(layer), graph.readers_of(layer)
    if len(readers) != 1:
        return None
    call = next(call for call in graph.calls if call.key == readers[0])
    mine = [key in made for key in call.inputs]
    if type(call.layer).__name__ != "Add" or sum(mine) != 1:
        return None
    return [graph.tensors[key] for key, own in zip(call.inputs, mine) if not own] or None


def _listed(found):
    return list(found) if isinstance(found, (list, tuple)) else [found]


def _attention_call(model, layer):
    """``({part: tensor}, other tensors)`` of ``layer``'s call in ``model``."""
    call = read(model).call_of(layer)
    return heads.inputs_of(call.args, call.kwargs)


def _causal(model, layer):
    """Whether ``layer`` is called with ``use_causal_mask=True`` in ``model``."""
    return bool(read(model).call_of(layer).kwargs.get("use_causal_mask", False))


def _contexts(model, name, batches):
    """Yield, per batch, what attention layer ``name``'s output projection reads."""
    layer = model.get_layer(name)
    parts, _ = _attention_call(model, layer)
    tensors = [parts["query"], parts["value"], parts["key"]]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    feed = engine_of(model).keras.Model(inputs, tensors)
    causal = _causal(model, layer)  # a decoder's heads attend to earlier positions only
    context = heads.context_probe(layer, lambda probe, q, v, k: to_numpy(
        probe(q, v, key=k, use_causal_mask=causal)))
    for batch in batches:
        query, value, key = (to_numpy(t) for t in feed(batch, training=False))
        yield context(query, value, key)


def _is_plain_dense(layer):
    entry = layers.spec(layer)
    return entry.kind == "dense" and entry.role == "producer" and not entry.layout


def _copy(model):
    """An independent copy of ``model`` (same Keras, same weights)."""
    owner = engine_of(model)
    twin = owner.clone_model(model, lambda path, layer: type(layer).from_config(
        layer.get_config()))
    twin.set_weights(model.get_weights())
    return twin
