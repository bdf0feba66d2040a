"""Which channels of each group to keep: group scores, selection, and one-call pruning.

A group's channel score adds up its "out" members' kernel norms (``"l1"``, ``"l2"``), its
batch norms' ``|gamma|`` (``"bn"``; groups without a batch norm fall back to ``"l1"``), or
``|w * grad|`` of those kernels on one batch of data (``"taylor"``, first-order Taylor), or
the Fisher information of each channel's (head's) mask on unlabeled calibration inputs, the
model's own top class as the label (``"fisher"``: the squared loss change its removal
causes, to second order; Kwon et al. 2022).
:func:`select` keeps the highest scores of each group (``scope="layer"``: the same fraction
everywhere) or of the whole model (``scope="global"``: scores divided by their group's
mean, Fisher scores as they are, then one threshold), never removing more than
``max_fraction_per_group`` of a group (what a group cannot give is taken elsewhere).
A global budget counts channels, or with ``cost="macs"`` (``"params"``) each channel
weighted by the multiply-accumulates (parameters) it takes part in, so that the budget
goes where the compute is: a convolution's filter weighs more than a dense neuron.

Example:
    >>> from kprune import structural
    >>> smaller = structural.prune(model, 0.5, round_to=8)   # then fine-tune a little
    >>> faster = structural.prune(model, 0.5, cost="macs", criterion="taylor",
    ...                           data=(x[:128], y[:128]))
    >>> smaller = structural.prune(vit, {"heads": 0.5, "channels": 0.5},
    ...                            criterion="fisher", data=x[:256])
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from kprune.core import layers
from kprune.core.calibration import calibration_batches
from kprune.core.checks import check_choice, did_you_mean
from kprune.engines import engine_of
from kprune.structural import graph as graph_module
from kprune.structural import heads, hub_blocks, rebuild
from kprune.structural.correct import CORRECTIONS
from kprune.structural.cost import block_macs, count_macs
from kprune.structural.nesting import follows_nesting

__all__ = ["group_scores", "channel_costs", "select", "prune", "Selection", "LeftWhole"]

CRITERIA = ("l1", "l2", "bn", "taylor", "fisher")
UNITS = ("channels", "heads")
COSTS = ("macs", "params")


@follows_nesting
def group_scores(model, criterion="l1", *, data=None):
    """``{group id: score of each channel}`` for the removable groups of ``model``.

    ``criterion="taylor"`` needs ``data=(x, y)``: one batch of inputs and integer labels;
    ``"fisher"`` needs ``data=x``: calibration inputs, no labels.

    Example:
        >>> group_scores(model)["conv1"].shape
        (32,)
    """
    data = _check_criterion(criterion, data, model)
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
           exclude=(), max_fraction_per_group=0.9, data=None, strict=False):
    """The channels (and attention heads) to keep: remove ``fraction`` of them, lowest
    scores first, from the groups that can be pruned.

    Groups that cannot be pruned (a transformer's residual stream behind an
    ``Embedding``, the model's outputs, an attention layer with one head, the groups of
    ``exclude``) are left whole and listed with the reason; ``fraction`` is of what can be
    pruned (the channels, or their cost, of the other groups), as the table says.

    Args:
        model: a Sequential or functional model, tf_keras or Keras 3 (not modified).
        fraction: the fraction of the prunable channels and heads to remove, in [0, 1);
            or ``{"heads": f, "channels": g}``: each kind has its own budget (a kind not
            named loses nothing), e.g. half the heads and half the feed-forward neurons.
        criterion: ``"l1"``, ``"l2"`` (kernel norms, summed over a group's producers; a
            head's norm is that of its query, key and value slices and output rows),
            ``"bn"`` (batch norm ``|gamma|``), ``"taylor"`` (``|w * grad|`` summed over
            the same weights, on the batch ``data``) or ``"fisher"`` (per example of the
            calibration inputs ``data``, no labels, ``(sum of w * grad)**2`` over the same
            weights, the model's own top class as the label: the Fisher information of the
            channel's or head's mask).
        scope: ``"layer"`` removes ``fraction`` of every group; ``"global"`` compares all
            groups' scores, each divided by its group's mean, against one threshold
            (``"fisher"`` scores as they are: each estimates the loss change its removal
            causes, so they compare across layers).
        cost: with ``scope="global"``, ``None`` counts channels and heads (``fraction``
            of them go); ``"macs"`` or ``"params"`` weighs each by its cost (see
            :func:`channel_costs`) and removes ``fraction`` of the total weight, lowest
            scores first (``"fisher"`` with one ``fraction`` for heads and channels: the
            split between them that keeps the most importance, Kwon et al.'s mask search).
            With ``scope="layer"`` every group loses ``fraction`` anyway.
        round_to: keep a multiple of this many channels and heads per group (rounded up,
            never 0); ``{"channels": 8, "heads": 2}`` rounds the two apart. A multiple of
            more heads than an attention layer has is refused.
        exclude: names of layers whose groups are left whole.
        max_fraction_per_group: never remove more than this fraction of a group (at least
            one channel, and one head, always stays).
        data: ``(x, y)``, one batch of inputs and integer labels, for ``"taylor"``;
            calibration inputs (an array, a dict of arrays or batches) for ``"fisher"``.
        strict: raise instead of leaving whole a group that a layer kprune cannot follow
            stops (the error names the layer).

    Returns:
        A :class:`Selection`: ``{group id: kept indices}`` of the groups that lose
        channels or heads; ``print`` it for the budget and what was left whole, and why.

    Example:
        >>> keep = select(transformer, 0.5, scope="layer")
        >>> keep["ffn_up_1"].shape, keep["mha_1/heads"]
        ((64,), array([1, 3]))
        >>> print(keep)                 # ... left whole: the residual stream (embedding)
        >>> keep = select(vit, {"heads": 0.5, "channels": 0.5}, criterion="fisher",
        ...               data=x[:256])
    """
    fraction = _check_fractions(fraction)
    data = _check_criterion(criterion, data, model)
    check_choice(scope, ("global", "layer"), "scope")
    if cost is not None:
        check_choice(cost, COSTS, "cost")
    rounds = _check_round_to(round_to)
    cap = max_fraction_per_group
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap <= 1:
        raise ValueError(
            "Argument `max_fraction_per_group` must be a fraction in (0, 1]. "
            f"Received: max_fraction_per_group={cap!r}"
        )
    if not isinstance(strict, bool):
        raise TypeError(f"Argument `strict` must be True or False. Received: strict={strict!r}")
    groups = graph_module.groups(model)
    names = [layer.name for layer in model.layers]
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    for name in exclude:
        if name not in names:
            raise ValueError(
                f"Argument `exclude` names layer {name!r}, which is not in the model."
                f"{did_you_mean(name, names)} Received: exclude={exclude!r}"
            )
    left = []  # (group, why)
    chosen = []
    for group in groups:
        if not (group.layers("out") or group.layers("heads") or group.layers("neurons")):
            continue  # nothing makes these channels (a model input): nothing to prune
        if set(group.layers()) & set(exclude):
            left.append((group, "excluded: exclude=" + repr(tuple(exclude))))
        elif groups.graph.is_refused_only(group) and strict:
            raise ValueError(
                f"Cannot prune group {group.id!r} (producers {group.layers('out')}): "
                f"{group.reason}. Leave it whole with exclude=({group.id!r},) to prune "
                "the rest, or pass strict=False to leave whole what cannot be pruned."
            )
        elif not group.removable:
            left.append((group, group.reason))
        else:
            chosen.append(group)
    for group in chosen:
        step = rounds[_unit(group)]
        if _unit(group) == "heads" and step and step > group.size:
            raise ValueError(
                f"Argument `round_to` counts heads in attention layers: keeping a multiple of "
                f"{step} heads is impossible in layer {group.layers('heads')[0]!r}, which has "
                f"{group.size}. Pass round_to={{'channels': {rounds['channels'] or 1}, "
                f"'heads': 1}} (or exclude the layer). Received: round_to={round_to!r}"
            )
    scores = _scores(groups, model, criterion, chosen, data=data)
    costs = _costs(chosen, model, cost) if cost is not None else None
    if isinstance(fraction, dict):  # each kind of unit its own budget
        parts = [([g for g in chosen if _unit(g) == unit], fraction.get(unit, 0.0))
                 for unit in UNITS]
    else:
        parts = [(chosen, fraction)]
    # what each group keeps at least: one unit, and 1 - max_fraction_per_group of it
    least = {g.id: max(1, math.ceil((1 - cap) * g.size - 1e-9)) for g in chosen}
    removed = {}
    for part, share in parts:
        if part:
            removed.update(_removed(part, scores, costs, share, scope, cost,
                                    raw=criterion == "fisher", least=least))
    keep = {}
    for group in chosen:
        n_keep = max(group.size - removed[group.id], least[group.id])
        step = rounds[_unit(group)]
        if step:
            n_keep = min(group.size, math.ceil(n_keep / step) * step)
        order = np.argsort(-scores[group.id], kind="stable")  # ties: lower index kept
        keep[group.id] = np.sort(order[:n_keep])
    return Selection(keep, graph=groups.graph, chosen=chosen, left=left, fraction=fraction,
                     scope=scope, cost=cost, costs=costs)


def _removed(chosen, scores, costs, fraction, scope, cost, *, raw=False, least=None):
    """``{group id: channels (heads) to remove}``: ``fraction`` of ``chosen``'s budget.

    Globally, scores are compared divided by their group's mean (kernel norms of layers of
    different sizes are not comparable), or ``raw`` (Fisher scores estimate the loss
    change each removal causes, comparable across layers, so a layer that matters little
    loses more: Kwon et al. 2022's global ranking). A group keeps at least ``least[id]``
    units (default 1): what it cannot give is taken from the next-lowest units of the
    other groups, so that the budget is met."""
    if scope == "layer":
        return {g.id: int(fraction * g.size) for g in chosen}
    least = {g.id: 1 for g in chosen} if least is None else least
    if raw and cost is not None and {_unit(g) for g in chosen} == set(UNITS):
        return _split_heads_and_channels(chosen, scores, costs, fraction, least)
    pooled = np.concatenate([scores[g.id] if raw else _normalised(scores[g.id])
                             for g in chosen])
    owner = np.concatenate([np.full(g.size, i) for i, g in enumerate(chosen)])
    # ties (e.g. untrained batch norms, all gamma 1) go evenly: by rank within a group
    ranks = np.concatenate([np.argsort(np.argsort(scores[g.id], kind="stable"),
                                       kind="stable") / g.size for g in chosen])
    order = np.lexsort((ranks, pooled))
    room = np.array([g.size - least[g.id] for g in chosen])
    eligible = order[_within_room(owner[order], room)]
    if cost is None:
        lowest = eligible[:int(fraction * len(pooled))]
    else:  # the cheapest prefix of the order that reaches the cost budget
        weight = np.concatenate([np.full(g.size, costs[g.id]) for g in chosen])
        spent = np.cumsum(weight[eligible])
        budget = fraction * weight.sum()
        lowest = eligible[:int(np.searchsorted(spent, budget * (1 + 1e-12), side="right"))]
    counts = np.bincount(owner[lowest].astype(int), minlength=len(chosen))
    return {g.id: int(counts[i]) for i, g in enumerate(chosen)}


def _within_room(owners, room):
    """Which positions of ``owners`` (the group of each unit, in removal order) fall within
    their group's ``room`` (the first ``room[group]`` of its units).

    Example:
        >>> _within_room(np.array([0, 0, 1, 0]), np.array([2, 1]))
        array([ True,  True,  True, False])
    """
    seen = np.zeros(len(room), int)
    inside = np.zeros(len(owners), bool)
    for position, group in enumerate(owners):
        inside[position] = seen[group] < room[group]
        seen[group] += 1
    return inside


def _split_heads_and_channels(chosen, scores, costs, fraction, least):
    """``{group id: units to remove}`` keeping the most Fisher importance within ``1 -
    fraction`` of the cost: for every number of heads kept (the most important first), the
    most important channels the rest of the budget pays for, and the best of these splits
    (Kwon et al. 2022's mask search under a MACs constraint: a head and a neuron cost
    different amounts, so neither is removed by score alone). Each group's ``least`` most
    important units are kept first, their cost taken from the budget."""
    ranked, forced = {}, 0.0
    for unit in UNITS:
        groups = [g for g in chosen if _unit(g) == unit]
        score = np.concatenate([scores[g.id] for g in groups])
        weight = np.concatenate([np.full(g.size, costs[g.id]) for g in groups])
        owner = np.concatenate([np.full(g.size, i) for i, g in enumerate(groups)])
        order = np.argsort(-score, kind="stable")
        floor = np.array([least[g.id] for g in groups])
        kept_first = order[_within_room(owner[order], floor)]  # each group's best `least`
        forced += weight[kept_first].sum()
        order = order[~_within_room(owner[order], floor)]
        base = np.bincount(owner[kept_first].astype(int), minlength=len(groups))
        ranked[unit] = (groups, owner[order], np.concatenate([[0.0], np.cumsum(weight[order])]),
                        np.concatenate([[0.0], np.cumsum(score[order])]), base, weight.sum())
    budget = (1 - fraction) * (ranked["heads"][5] + ranked["channels"][5]) - forced
    _, _, head_cost, head_value, _, _ = ranked["heads"]
    _, _, channel_cost, channel_value, _, _ = ranked["channels"]
    best = None
    for heads_kept in range(len(head_cost)):
        left = budget - head_cost[heads_kept]
        if left < 0:
            break
        channels_kept = int(np.searchsorted(channel_cost, left * (1 + 1e-12), side="right")) - 1
        value = head_value[heads_kept] + channel_value[channels_kept]
        if best is None or value > best[0]:
            best = (value, {"heads": heads_kept, "channels": channels_kept})
    if best is None:  # the floors alone spend the budget
        best = (0.0, {"heads": 0, "channels": 0})
    removed = {}
    for unit in UNITS:
        groups, owner, _, _, base, _ = ranked[unit]
        kept = base + np.bincount(owner[:best[1][unit]].astype(int), minlength=len(groups))
        removed.update({g.id: int(g.size - kept[i]) for i, g in enumerate(groups)})
    return removed


@follows_nesting
def prune(model, fraction, *, criterion="l1", scope="global", cost=None, round_to=None,
          exclude=(), max_fraction_per_group=0.9, data=None, strict=False, correct=None,
          calibration=None):
    """A new, smaller model without ``fraction`` of its prunable channels and heads (see
    :func:`select`).

    What cannot be pruned is left whole: a :class:`LeftWhole` warning lists the groups
    that a layer stopped (``strict=True`` raises instead). ``correct="least_squares"``
    then re-fits, on ``calibration`` inputs, every ``Dense`` and attention output
    projection that lost inputs or reads what the removal changed (the head included), so
    that each one's output changes least (see :func:`kprune.structural.correct`). The input
    model is not modified; fine-tune the result a little to recover more accuracy.

    Example:
        >>> smaller = prune(resnet, 0.5)
        >>> smaller.count_params() < resnet.count_params()
        True
        >>> closer = prune(transformer, 0.5, correct="least_squares", calibration=x[:256])
    """
    if correct is not None:
        check_choice(correct, CORRECTIONS, "correct")
        if calibration is None:
            raise ValueError(
                "correct='least_squares' re-fits layers on calibration inputs: pass "
                "calibration=x (model inputs, no labels). Received: calibration=None"
            )
        calibration = calibration_batches(model, calibration)  # checked before any work
    elif calibration is not None:
        raise ValueError(
            "Argument `calibration` is only used by correct='least_squares'. Received: "
            f"correct=None with calibration={_short(calibration)}"
        )
    keep = select(model, fraction, criterion=criterion, scope=scope, cost=cost,
                  round_to=round_to, exclude=exclude,
                  max_fraction_per_group=max_fraction_per_group, data=data, strict=strict)
    stopped = [(g, why) for g, why in keep.left
               if not why.startswith(("excluded", "model output"))]
    if stopped:
        warnings.warn(
            "structural.prune left whole what it cannot prune (strict=True raises "
            "instead):\n" + keep.left_table(stopped), LeftWhole, stacklevel=3)
    smaller = rebuild.remove(model, keep)
    if correct is not None:
        from kprune.structural.correct import correct as least_squares

        smaller = least_squares(model, smaller, keep, calibration)
    return smaller


class LeftWhole(UserWarning):
    """Structural pruning left groups whole that a layer stopped (see :func:`prune`)."""


class Selection(dict):
    """``{group id: kept indices}`` from :func:`select`, with the budget and what was left.

    ``left`` lists ``(group, why)`` for the groups left whole; ``print`` shows the groups
    pruned, the budget (``fraction`` of the prunable channels, heads or cost) and what
    was left whole.

    Example:
        >>> keep = select(transformer, 0.3)
        >>> [g.id for g, _ in keep.left]
        ['mha_1', 'head']
    """

    def __init__(self, keep, *, graph, chosen, left, fraction, scope, cost, costs):
        super().__init__(keep)
        self.graph = graph
        self.chosen, self.left = list(chosen), list(left)
        self.fraction, self.scope, self.cost, self.costs = fraction, scope, cost, costs

    def budget(self, unit=None):
        """``(removed, prunable)``: channels and heads (with ``cost``: their cost), or
        those of one ``unit`` (``"channels"`` or ``"heads"``)."""
        weight = (lambda g: self.costs[g.id]) if self.costs else (lambda g: 1)
        chosen = [g for g in self.chosen if unit is None or _unit(g) == unit]
        removed = sum((g.size - len(self[g.id])) * weight(g) for g in chosen)
        return removed, sum(g.size * weight(g) for g in chosen)

    def left_table(self, left=None):
        """The groups left whole, their producers and why."""
        from kprune.core.table import table

        rows = []
        for group, why in self.left if left is None else left:
            makers, what = self.graph.describe(group)
            inner = [m.layer for m in group.members if m.role in ("heads", "neurons")]
            makers = ", ".join(makers or inner)
            rows.append((group.id, f"{group.size} {_unit(group)}", what or "-",
                         makers or "-", why))
        return table(("left whole", "size", "what", "made by", "why"), rows)

    def __str__(self):
        from kprune.core.table import table

        rows = [(g.id, _unit(g), str(g.size), str(len(self[g.id])),
                 str(g.size - len(self[g.id]))) for g in self.chosen]
        if isinstance(self.fraction, dict):
            kinds = [(unit, self.fraction[unit]) for unit in UNITS if unit in self.fraction]
        else:
            kinds = [(None, self.fraction)]
        lines = []
        for unit, fraction in kinds:
            removed, total = self.budget(unit)
            units = unit or " and ".join(sorted({_unit(g) for g in self.chosen}) or
                                         ["channels"])
            what = f"{self.cost} of the prunable {units}" if self.cost else f"prunable {units}"
            share = removed / total if total else 0.0
            lines.append(f"fraction {fraction:g} ({self.scope}) of the prunable budget: "
                         f"removed {removed:,.0f} of {total:,.0f} {what} ({share:.1%})")
        line = "\n".join(lines) + (f" in {len(self.chosen)} groups; {len(self.left)} groups "
                                    "left whole")
        parts = [table(("group", "unit", "size", "kept", "removed"), rows), line]
        if self.left:
            parts.append(self.left_table())
        return "\n".join(parts)


# -- internals ---------------------------------------------------------------------


def _unit(group):
    """What a group's units are: "heads" of an attention layer, else "channels"."""
    return "heads" if group.layers("heads") else "channels"


def _check_round_to(round_to):
    """``round_to`` as ``{"channels": n or None, "heads": n or None}``."""
    def positive(value):
        return value is None or (isinstance(value, int) and not isinstance(value, bool)
                                 and value >= 1)

    if isinstance(round_to, dict):
        unknown = set(round_to) - {"channels", "heads"}
        if not unknown and all(positive(v) for v in round_to.values()):
            return {"channels": round_to.get("channels"), "heads": round_to.get("heads")}
    elif positive(round_to):
        return {"channels": round_to, "heads": round_to}
    raise ValueError(
        "Argument `round_to` must be None, a positive integer, or a dict with keys "
        f"'channels' and 'heads' of positive integers. Received: round_to={round_to!r}"
    )


def _check_fractions(fraction):
    """``fraction`` as a float, or as ``{"heads": float, "channels": float}``."""
    if not isinstance(fraction, dict):
        return _check_fraction(fraction, "fraction")
    unknown = [key for key in fraction if key not in UNITS]
    if unknown or not fraction:
        key = unknown[0] if unknown else None
        raise ValueError(
            "Argument `fraction` as a dict gives a fraction per kind of unit, keys "
            f"{list(UNITS)}.{did_you_mean(str(key), UNITS) if key else ''} "
            f"Received: fraction={fraction!r}")
    return {key: _check_fraction(value, f"fraction[{key!r}]") for key, value in
            fraction.items()}


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


def _check_criterion(criterion, data, model):
    """``data`` as the criterion uses it: ``(x, y)`` for taylor, checked calibration
    batches for fisher (:func:`kprune.core.calibration.calibration_batches`), else None."""
    check_choice(criterion, CRITERIA, "criterion")
    if criterion in ("taylor", "fisher") and len(model.outputs) != 1:
        raise ValueError(
            f"criterion={criterion!r} takes the gradient of a classifier's loss: model "
            f"{model.name!r} has {len(model.outputs)} outputs (a backbone?). Score it inside "
            "a classifier with one output of class scores, or use criterion='l1'.")
    if criterion == "taylor" and (not isinstance(data, (tuple, list)) or len(data) != 2):
        raise ValueError(
            "criterion='taylor' scores channels by |w * grad| on one batch: pass "
            f"data=(x, y), inputs and integer labels. Received: data={_short(data)}"
        )
    if criterion == "fisher":
        if data is None:
            raise ValueError(
                "criterion='fisher' scores channels on calibration inputs: pass data=x "
                "(model inputs, no labels). Received: data=None")
        return calibration_batches(model, data)
    if criterion != "taylor" and data is not None:
        raise ValueError(
            "Argument `data` is only used by criterion='taylor' and 'fisher'. Received: "
            f"criterion={criterion!r} with data={_short(data)}"
        )
    return data


def _short(value):
    text = repr(value) if not hasattr(value, "shape") else f"array of shape {value.shape}"
    return text if len(text) < 80 else text[:77] + "..."


def _costs(chosen, model, cost):
    if cost == "macs":
        per_layer = count_macs(model, by_layer=True)
    else:
        per_layer = {layer.name: layer.count_params() for layer in model.layers
                     if hasattr(layer, "count_params")}
    return {g.id: sum(_member_cost(model, m, cost, per_layer) for m in g.members)
            for g in chosen}


def _member_cost(model, member, cost, per_layer):
    """What one unit of ``member``'s group costs in its layer: its share of the layer's
    cost, or inside a KerasHub block its share of the attention (a head) or of the
    feed-forward (a neuron)."""
    if member.role not in ("heads", "neurons"):
        return per_layer.get(member.layer, 0) / member.channels
    layer = model.get_layer(member.layer)
    if layers.spec(layer).role != "block":
        return per_layer.get(member.layer, 0) / member.channels
    if cost == "params":  # the weights that go with one unit
        unit = hub_blocks.per_head if member.role == "heads" else hub_blocks.per_neuron
        return float(unit(layer).shape[0])
    return block_macs(engine_of(model), layer)[member.role] / member.channels


def _kernel_gradients(model, data):
    """``{producer name: d loss / d kernel}`` on one batch, laid out like ``out_kernel``."""
    x, y = data
    x = ({name: np.asarray(part) for name, part in x.items()} if isinstance(x, dict)
         else np.asarray(x))  # a model with named inputs (a KerasHub backbone) takes a dict
    y = np.asarray(y)
    variables = {layer.name: layer.weights for layer in model.layers
                 if getattr(layer, "weights", None)}
    grads = engine_of(model).weight_gradients(model, _loss(model), x, y)  # TF or JAX's own
    return {name: [grads[id(v)] for v in found] for name, found in variables.items()}


def _loss(model):
    """The classifier's loss on integer labels, from logits unless it ends in a softmax."""
    from kprune.engines.classifier import ends_in_softmax

    return engine_of(model).keras.losses.SparseCategoricalCrossentropy(
        from_logits=not ends_in_softmax(model))


def _normalised(scores):
    mean = scores.mean()
    return scores / mean if mean > 0 else np.zeros_like(scores)


def _labelled_batches(model, batches, size=64):
    """The calibration examples, ``size`` at a time, with the model's top class for each as
    its label."""
    for batch in batches:
        labels = np.argmax(np.asarray(model(batch, training=False)), axis=-1)
        for start in range(0, len(labels), size):
            x = ({name: part[start:start + size] for name, part in batch.items()}
                 if isinstance(batch, dict) else batch[start:start + size])
            yield x, labels[start:start + size]


def _example_gradients(model, chosen, batches):
    """For each batch of labelled calibration examples: ``{producer name: d loss / d weight
    of each example}`` (weights in ``layer.weights`` order, each ``(examples, *shape)``, or
    None where the signed columns of ``chosen``'s units do not read it)."""
    read = {}  # layer name: the positions in layer.weights its units' columns read
    for group in chosen:
        for member in group.members:
            if member.role in ("out", "heads", "neurons"):
                layer = model.get_layer(member.layer)
                positions = _read_weights(_columns(member, layer, True), layer)
                read[layer.name] = np.union1d(read.get(layer.name, []), positions).astype(int)
    variables = [model.get_layer(name).weights[i] for name, found in read.items()
                 for i in found]
    for grads in engine_of(model).example_gradients(
            model, _loss(model), _labelled_batches(model, batches), variables):
        yield {name: [grads.get(id(v)) for v in model.get_layer(name).weights]
               for name in read}


def _read_weights(unit, layer):
    """The positions in ``layer.weights`` of the weights that ``unit`` (a columns function,
    see :func:`_columns`) lays out: each weight tagged with its position, laid out.

    Example:
        >>> _read_weights(heads.head_outputs, model.get_layer("mha"))   # the output kernel
        array([6])
    """
    tags = [np.full(tuple(v.shape), i) for i, v in enumerate(layer.weights)]
    return np.unique(unit(layer, tags))


def _scores(groups, model, criterion, chosen=None, *, data=None):
    if criterion == "fisher":  # the squared mask gradient of each calibration example
        chosen = _removable(groups, chosen)
        found = {group.id: np.zeros(group.size) for group in chosen}
        for grads in _example_gradients(model, chosen, data):
            for group in chosen:
                found[group.id] += (_taylor(group, model, grads, signed=True) ** 2).sum(0)
        return found
    grads = _kernel_gradients(model, data) if criterion == "taylor" else None
    found = {}
    for group in _removable(groups, chosen):
        total = np.zeros(group.size)
        if criterion == "bn":
            for member in group.members:
                gamma = getattr(model.get_layer(member.layer), "gamma", None)
                if member.role == "channelwise" and gamma is not None:
                    values = np.asarray(gamma.numpy())
                    total += np.abs(values[member.offset:member.offset + group.size])
        if criterion != "bn" or not total.any():
            total += _taylor(group, model, grads, norm=criterion)
        found[group.id] = total
    return found


def _columns(member, layer, signed):
    """``f(layer, weights=None)``: the weights of each of ``member``'s units as one column
    (with ``signed``, only those a mask on the unit's output multiplies)."""
    if member.role == "neurons":  # a KerasHub block's feed-forward neurons
        return hub_blocks.neuron_outputs if signed else hub_blocks.per_neuron
    if member.role == "heads" and layers.spec(layer).role == "block":
        return hub_blocks.head_outputs if signed else hub_blocks.per_head
    if member.role == "heads":
        return heads.head_outputs if signed else heads.per_head
    return rebuild.out_kernel


def _removable(groups, chosen):
    return chosen if chosen is not None else [g for g in groups if g.removable]


def _taylor(group, model, grads=None, *, norm="l1", signed=False):
    """Per channel of ``group``: the norm of its producers' kernels (``w * grad`` with
    ``grads``), or with ``signed`` the plain sum of ``w * grad``: the gradient of a mask on
    the channel (on a head's output: its output rows alone). Gradients with a leading axis
    (one per example, see :func:`_example_gradients`) give ``(examples, channels)``."""
    total = np.zeros(group.size)
    for member in group.members:
        if member.role not in ("out", "heads", "neurons"):
            continue
        layer = model.get_layer(member.layer)
        unit = _columns(member, layer, signed)
        own = unit(layer)  # with grads, first-order Taylor: w * dL/dw
        kernel = own * unit(layer, grads[layer.name]) if grads is not None else own
        examples = kernel.shape[:kernel.ndim - own.ndim]  # () or (examples,)
        kernel = kernel[..., member.offset:member.offset + group.size]
        flat = kernel.reshape(*examples, -1, kernel.shape[-1])
        if signed:
            total = total + flat.sum(axis=-2)
        else:
            flat = np.abs(flat)
            total = total + (flat.sum(axis=-2) if norm != "l2" else
                             np.sqrt((flat**2).sum(-2)))
    return total
