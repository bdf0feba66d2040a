"""Global magnitude allocation: one threshold for the whole model instead of one per layer.

:func:`global_plan` ranks the kernel weights of every prunable layer together by
magnitude, removes the smallest ``target`` fraction of them all, and turns the count
removed from each layer into that layer's target: a plan with one exact name rule per
layer. Big, redundant layers (whose weights are small) take most of the sparsity, as
in Han et al. 2015. The plan carries the :class:`Allocation` table it came from.

Because the sparsities come from the model's current weights, compute the plan on a
trained model; the returned plan then prunes each layer by magnitude to its share.

Example:
    >>> from kprune.methods.allocation import global_plan
    >>> plan = global_plan(trained, 0.92)
    >>> print(plan.allocation)
    layer  type   weights  kept    sparsity
    fc1    Dense  235,200  15,312  0.935
    ...
    >>> pruned = kprune.apply(trained, plan, steps_per_epoch=469, epochs=4)
"""

from dataclasses import asdict, dataclass

import numpy as np

from kprune.core.checks import by_name, check_sparsity, did_you_mean
from kprune.core.layers import prunable_weights
from kprune.core.plan import LayerRule, PruningPlan
from kprune.core.schedules import Schedule
from kprune.core.table import table
from kprune.engines import pruner

__all__ = ["global_plan", "GlobalPlan", "Allocation", "LayerAllocation"]


@dataclass(frozen=True)
class LayerAllocation:
    """One layer's share of a global allocation."""

    name: str
    type: str
    weights: int
    kept: int
    sparsity: float
    excluded: bool = False

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Allocation:
    """The table a global allocation produced.

    Attributes:
        target: the global sparsity asked for, over the layers not excluded.
        threshold: magnitude at the cut (weights at or below it, in rank order, go).
        rows: one :class:`LayerAllocation` per prunable layer, excluded ones included.
    """

    target: float
    threshold: float
    rows: tuple

    @property
    def weights(self):
        """Kernel weights of the layers that take part (not excluded)."""
        return sum(row.weights for row in self.rows if not row.excluded)

    @property
    def kept(self):
        return sum(row.kept for row in self.rows if not row.excluded)

    @property
    def sparsity(self):
        """Achieved global sparsity over the layers that take part."""
        return 1.0 - self.kept / self.weights if self.weights else 0.0

    def __getitem__(self, name):
        return by_name(self.rows, name, what="layer", within="the allocation")

    def to_dict(self):
        return {
            "target": self.target,
            "threshold": self.threshold,
            "weights": self.weights,
            "kept": self.kept,
            "sparsity": self.sparsity,
            "layers": [row.to_dict() for row in self.rows],
        }

    def __str__(self):
        header = ("layer", "type", "weights", "kept", "kept %", "sparsity", "")
        lines = [
            (
                r.name,
                r.type,
                f"{r.weights:,}",
                f"{r.kept:,}",
                f"{100 * r.kept / r.weights:.1f}",
                f"{r.sparsity:.3f}",
                "excluded" if r.excluded else "",
            )
            for r in self.rows
        ]
        total = (
            f"global: {self.kept:,} of {self.weights:,} weights kept (sparsity "
            f"{self.sparsity:.4f}, target {self.target:g}, |w| threshold {self.threshold:.3g})"
        )
        return table(header, lines) + "\n" + total


@dataclass(frozen=True)
class GlobalPlan(PruningPlan):
    """A :class:`PruningPlan` (one name rule per layer) that also carries its :class:`Allocation`.

    It serialises like any plan (the rules only); ``allocation`` is for reading.
    """

    allocation: Allocation | None = None


def global_plan(model, target, *, exclude=(), schedule=None):
    """A plan that prunes the smallest ``target`` fraction of all prunable kernels at once.

    Args:
        model: a (trained) tf_keras or Keras 3 model; only read.
        target: global sparsity in [0, 1) over the kernels of the layers taking part.
        exclude: layer names (or nested paths) to leave dense and out of the ranking.
            Nothing is excluded by default: as in Han et al. 2015, the classifier head
            takes part too.
        schedule: the :class:`~kprune.Schedule` for every layer's rule (default:
            cubic over the whole fit).

    Returns:
        a :class:`GlobalPlan`: one rule per prunable layer, in model order, with the
        layer's exact share as its target (``skip`` for excluded layers and for layers
        the threshold does not reach), and the ``allocation`` table. Weighted by the
        layers' weight counts, the targets add up to ``target`` (to one weight).

    Example:
        >>> plan = global_plan(trained, 0.9, exclude=["head"])
        >>> plan.allocation["fc1"].sparsity
        0.93...
    """
    from kprune.methods.sensitivity import prunable_layers

    layers = prunable_layers(model)  # checks the model, on either engine
    target = check_sparsity(target, argument="target")
    schedule = Schedule() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"Argument `schedule` must be a kprune.Schedule or None. Received: schedule={schedule!r}"
        )
    if not layers:
        raise ValueError(
            f"Model {model.name!r} has no prunable layer (no weight {pruner(model)} can prune); "
            "there is nothing to allocate."
        )
    excluded = _check_exclude(exclude, layers)
    taking_part = [(path, layer) for path, layer in layers if path not in excluded]
    if not taking_part:
        raise ValueError(
            "Argument `exclude` leaves no layer to prune. "
            f"Received: exclude={sorted(excluded)}, prunable layers: {[p for p, _ in layers]}"
        )
    # A layer that prunes several weights (attention, recurrent) is ranked on all of them.
    kernels = [np.concatenate([np.abs(np.asarray(w.variable.numpy())).ravel()
                               for w in prunable_weights(layer)])
               for _, layer in taking_part]
    sizes = np.array([k.size for k in kernels])
    flat = np.concatenate(kernels)
    owner = np.repeat(np.arange(len(kernels)), sizes)
    count = int(round(target * flat.size))
    # A stable sort gives an exact count per layer even where magnitudes tie.
    order = np.argsort(flat, kind="stable")[:count]
    removed = np.bincount(owner[order], minlength=len(kernels))
    threshold = float(flat[order[-1]]) if count else 0.0

    shares = {path: (int(n), int(r)) for (path, _), n, r in zip(taking_part, sizes, removed)}
    full = [path for path, (n, r) in shares.items() if r >= n]
    if full:
        raise ValueError(
            f"A global target of {target:g} removes every weight of layer(s) {full}; a layer "
            "with no weights left cuts the network. Exclude them or lower the target. "
            f"Received: target={target!r}"
        )
    rows, rules = [], []
    for path, layer in layers:
        kind = type(layer).__name__
        size = sum(w.size for w in prunable_weights(layer))
        if path in excluded:
            rows.append(LayerAllocation(path, kind, size, size, 0.0, excluded=True))
            rules.append(LayerRule(path, method="skip", note="excluded from global allocation"))
            continue
        n, r = shares[path]
        sparsity = r / n
        rows.append(LayerAllocation(path, kind, n, n - r, sparsity))
        if r == 0:
            rules.append(LayerRule(path, method="skip", note="global threshold prunes none"))
        else:
            rules.append(LayerRule(
                path, target=sparsity, schedule=schedule,
                note=f"global {target:g}: keeps {100 * (n - r) / n:.1f}%",
            ))
    allocation = Allocation(target=target, threshold=threshold, rows=tuple(rows))
    return GlobalPlan(tuple(rules), allocation=allocation)


def _check_exclude(exclude, layers):
    if isinstance(exclude, str):
        exclude = [exclude]
    paths = [path for path, _ in layers]
    path_by_name = {layer.name: path for path, layer in layers}
    out = set()
    for name in exclude:
        if name in paths:
            out.add(name)
        elif name in path_by_name:
            out.add(path_by_name[name])
        else:
            hint = did_you_mean(str(name), paths)
            raise ValueError(
                f"Argument `exclude` names {name!r}, which is not a prunable layer of the "
                f"model.{hint} Prunable layers: {paths}"
            )
    return out
