"""Which channels of each group to keep: group scores, selection, and one-call pruning.

A group's channel score adds up its "out" members' kernel norms (``"l1"``, ``"l2"``), its
batch norms' ``|gamma|`` (``"bn"``; groups without a batch norm fall back to ``"l1"``), or
``|w * grad|`` of those kernels on one batch of data (``"taylor"``, first-order Taylor).
:func:`select` keeps the highest scores of each group (``scope="layer"``: the same fraction
everywhere) or of the whole model (``scope="global"``: scores divided by their group's
mean, then one threshold), never removing more than ``max_fraction_per_group`` of a group.
A global budget counts channels, or with ``cost="macs"`` (``"params"``) each channel
weighted by the multiply-accumulates (parameters) it takes part in, so that the budget
goes where the compute is: a convolution's filter weighs more than a dense neuron.

Example:
    >>> from kprune import structural
    >>> smaller = structural.prune(model, 0.5, round_to=8)   # then fine-tune a little
    >>> faster = structural.prune(model, 0.5, cost="macs", criterion="taylor",
    ...                           data=(x[:128], y[:128]))
"""

from __future__ import annotations

import math

import numpy as np

from kprune import _compat
from kprune.core import layers
from kprune.core.checks import check_choice, did_you_mean, is_keras3
from kprune.core.cost import count_macs
from kprune.structural import graph as graph_module
from kprune.structural import rebuild
from kprune.structural.nesting import follows_nesting

__all__ = ["group_scores", "channel_costs", "select", "prune"]

CRITERIA = ("l1", "l2", "bn", "taylor")
COSTS = ("macs", "params")


@follows_nesting
def group_scores(model, criterion="l1", *, data=None):
    """``{group id: score of each channel}`` for the removable groups of ``model``.

    ``criterion="taylor"`` needs ``data=(x, y)``: one batch of inputs and integer labels.

    Example:
        >>> group_scores(model)["conv1"].shape
        (32,)
    """
    _check_criterion(criterion, data)
    return _scores(graph_module.groups(model), model, criterion, data=data)


@follows_nesting
def channel_costs(model, cost="macs"):
    """``{group id: what one channel of the group costs}`` for the removable groups.

    A channel's cost is its share of every member layer's multiply-accumulates
    (``cost="macs"``, see :func:`kprune.measure.count_macs`) or parameters
    (``"params"``): a filter costs its own output plane and its slice of every
    layer that reads it.

    Example:
        >>> costs = channel_costs(build("seed-cnn"))
        >>> round(costs["conv1"]), round(costs["fc1"])    # a filter vs a neuron
        (333200, 3146)
    """
    check_choice(cost, COSTS, "cost")
    groups = graph_module.groups(model)
    return _costs([g for g in groups if g.removable], model, cost)


@follows_nesting
def select(model, fraction, *, criterion="l1", scope="global", cost=None, round_to=None,
           exclude=(), max_fraction_per_group=0.9, data=None):
    """``{group id: kept indices}``: remove ``fraction`` of the channels, lowest scores first.

    Args:
        model: a Sequential or functional model, tf_keras or Keras 3 (not modified).
        fraction: the fraction of channels to remove, in [0, 1).
        criterion: ``"l1"``, ``"l2"`` (kernel norms, summed over a group's producers),
            ``"bn"`` (batch norm ``|gamma|``) or ``"taylor"`` (``|w * grad|`` summed over
            the producers' kernels, on the batch ``data``).
        scope: ``"layer"`` removes ``fraction`` of every group; ``"global"`` compares all
            groups' scores, each divided by its group's mean, against one threshold.
        cost: with ``scope="global"``, ``None`` counts channels (``fraction`` of them
            go); ``"macs"`` or ``"params"`` weighs each channel by its cost (see
            :func:`channel_costs`) and removes ``fraction`` of the total weight, lowest
            scores first. With ``scope="layer"`` every group loses ``fraction`` anyway.
        round_to: keep a multiple of this many channels per group (rounded up, never 0).
        exclude: names of layers whose groups are left whole.
        max_fraction_per_group: never remove more than this fraction of a group (at least
            one channel always stays).
        data: ``(x, y)``, one batch of inputs and integer labels, for ``"taylor"``.

    Example:
        >>> select(model, 0.5, scope="layer")["conv1"].shape
        (16,)
    """
    fraction = _check_fraction(fraction, "fraction")
    _check_criterion(criterion, data)
    check_choice(scope, ("global", "layer"), "scope")
    if cost is not None:
        check_choice(cost, COSTS, "cost")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int)
                                 or round_to < 1):
        raise ValueError(
            f"Argument `round_to` must be None or a positive integer. Received: "
            f"round_to={round_to!r}"
        )
    cap = max_fraction_per_group
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap <= 1:
        raise ValueError(
            "Argument `max_fraction_per_group` must be a fraction in (0, 1]. "
            f"Received: max_fraction_per_group={cap!r}"
        )
    groups = graph_module.groups(model)
    names = [layer.name for layer in model.layers]
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    for name in exclude:
        if name not in names:
            raise ValueError(
                f"Argument `exclude` names layer {name!r}, which is not in the model."
                f"{did_you_mean(name, names)} Received: exclude={exclude!r}"
            )
    chosen = [g for g in groups if not set(g.layers()) & set(exclude)]
    for group in chosen:
        if groups.graph.is_refused_only(group):
            raise ValueError(
                f"Cannot prune group {group.id!r} (producers {group.layers('out')}): "
                f"{group.reason}. Leave it whole with exclude=({group.id!r},) to prune "
                "the rest."
            )
    chosen = [g for g in chosen if g.removable]
    scores = _scores(groups, model, criterion, chosen, data=data)
    if scope == "layer":
        removed = {g.id: int(fraction * g.size) for g in chosen}
    else:
        pooled = np.concatenate([_normalised(scores[g.id]) for g in chosen] or [[]])
        owner = np.concatenate([np.full(g.size, i) for i, g in enumerate(chosen)] or [[]])
        # ties (e.g. untrained batch norms, all gamma 1) go evenly: by rank within a group
        ranks = np.concatenate(
            [np.argsort(np.argsort(scores[g.id], kind="stable"), kind="stable") / g.size
             for g in chosen] or [[]])
        order = np.lexsort((ranks, pooled))
        if cost is None:
            lowest = order[:int(fraction * len(pooled))]
        else:  # the cheapest prefix of the order that reaches the cost budget
            costs = _costs(chosen, model, cost)
            weight = np.concatenate([np.full(g.size, costs[g.id]) for g in chosen] or [[]])
            spent = np.cumsum(weight[order])
            budget = fraction * (spent[-1] if len(spent) else 0.0)
            lowest = order[:int(np.searchsorted(spent, budget * (1 + 1e-12), side="right"))]
        counts = np.bincount(owner[lowest].astype(int), minlength=len(chosen))
        removed = {g.id: int(counts[i]) for i, g in enumerate(chosen)}
    keep = {}
    for group in chosen:
        least = max(1, math.ceil((1 - cap) * group.size - 1e-9))
        n_keep = max(group.size - removed[group.id], least)
        if round_to:
            n_keep = min(group.size, math.ceil(n_keep / round_to) * round_to)
        order = np.argsort(-scores[group.id], kind="stable")  # ties: lower index kept
        keep[group.id] = np.sort(order[:n_keep])
    return keep


@follows_nesting
def prune(model, fraction, *, criterion="l1", scope="global", cost=None, round_to=None,
          exclude=(), max_fraction_per_group=0.9, data=None):
    """A new, smaller model without ``fraction`` of its channels (see :func:`select`).

    The input model is not modified; fine-tune the result a little to recover accuracy.

    Example:
        >>> smaller = prune(resnet, 0.5)
        >>> smaller.count_params() < resnet.count_params()
        True
    """
    keep = select(model, fraction, criterion=criterion, scope=scope, cost=cost,
                  round_to=round_to, exclude=exclude,
                  max_fraction_per_group=max_fraction_per_group, data=data)
    return rebuild.remove(model, keep)


# -- internals ---------------------------------------------------------------------


def _check_fraction(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Argument `{argument}` must be a number in [0, 1). "
                        f"Received: {argument}={value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"Argument `{argument}` must be a fraction in [0, 1) (0.5 removes half of the "
            f"channels). Received: {argument}={value!r}"
        )
    return float(value)


def _check_criterion(criterion, data):
    check_choice(criterion, CRITERIA, "criterion")
    if criterion == "taylor" and (not isinstance(data, (tuple, list)) or len(data) != 2):
        raise ValueError(
            "criterion='taylor' scores channels by |w * grad| on one batch: pass "
            f"data=(x, y), inputs and integer labels. Received: data={_short(data)}"
        )
    if criterion != "taylor" and data is not None:
        raise ValueError(
            f"Argument `data` is only used by criterion='taylor'. Received: "
            f"criterion={criterion!r} with data={_short(data)}"
        )


def _short(value):
    text = repr(value) if not hasattr(value, "shape") else f"array of shape {value.shape}"
    return text if len(text) < 80 else text[:77] + "..."


def _costs(chosen, model, cost):
    if cost == "macs":
        per_layer = count_macs(model, by_layer=True)
    else:
        per_layer = {layer.name: layer.count_params() for layer in model.layers}
    return {g.id: sum(per_layer.get(m.layer, 0) / m.channels for m in g.members)
            for g in chosen}


def _kernel_gradients(model, data):
    """``{producer name: d loss / d kernel}`` on one batch, laid out like ``out_kernel``."""
    from kprune.engines.classifier import ends_in_softmax

    x, y = (np.asarray(part) for part in data)
    loss_fn = layers.engine(model).keras.losses.SparseCategoricalCrossentropy(
        from_logits=not ends_in_softmax(model))
    variables = {layer.name: layer.weights for layer in model.layers if layer.weights}
    if is_keras3(model):  # the backend's own gradients (TensorFlow or JAX)
        from kprune import _keras3

        grads = _keras3.weight_gradients(model, loss_fn, x, y)
        return {name: [grads[id(v)] for v in found] for name, found in variables.items()}
    tf = _compat.tf
    with tf.GradientTape() as tape:
        tape.watch([v for vs in variables.values() for v in vs])
        loss = loss_fn(y, model(x, training=False))
    grads = tape.gradient(loss, variables)
    return {name: [np.zeros(v.shape) if g is None else np.asarray(g) for v, g in
                   zip(variables[name], found)] for name, found in grads.items()}


def _normalised(scores):
    mean = scores.mean()
    return scores / mean if mean > 0 else np.zeros_like(scores)


def _scores(groups, model, criterion, chosen=None, *, data=None):
    grads = _kernel_gradients(model, data) if criterion == "taylor" else None
    found = {}
    for group in chosen if chosen is not None else [g for g in groups if g.removable]:
        total = np.zeros(group.size)
        if criterion == "bn":
            for member in group.members:
                gamma = getattr(model.get_layer(member.layer), "gamma", None)
                if member.role == "channelwise" and gamma is not None:
                    values = np.asarray(gamma.numpy())
                    total += np.abs(values[member.offset:member.offset + group.size])
        if criterion != "bn" or not total.any():
            for member in group.members:
                if member.role != "out":
                    continue
                layer = model.get_layer(member.layer)
                kernel = rebuild.out_kernel(layer)
                if grads is not None:  # first-order Taylor: |w * dL/dw|
                    kernel = kernel * rebuild.out_kernel(layer, grads[layer.name])
                kernel = kernel[..., member.offset:member.offset + group.size]
                flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
                total += flat.sum(axis=0) if criterion != "l2" else np.sqrt((flat**2).sum(0))
        found[group.id] = total
    return found

