"""Per-layer sensitivity scan: which layers can be pruned more?

For each prunable layer, and for each sparsity of a ladder, prune only that layer
(one-shot magnitude pruning of its kernel, on a copy of the model), evaluate on
validation data and restore it. The table answers "which layers tolerate more
sparsity?" (in the articles: later layers and big dense layers more than early convs)
and :meth:`SensitivityResult.to_plan` turns it into a :class:`~kprune.PruningPlan`
with per-layer targets for a chosen accuracy drop.

Example:
    >>> from kprune import sensitivity
    >>> result = sensitivity.scan(model, x_val[:2000], y_val[:2000])
    sensitivity: 1/3 (fc1, 235,200 weights)
    ...
    >>> print(result)
    >>> plan = result.to_plan(max_drop_pp=0.5)
    >>> fig = result.plot("sensitivity.png")
"""

from dataclasses import asdict, dataclass

import numpy as np

from kprune import progress as _progress_module
from kprune.core import masks
from kprune.core.checks import check_sparsity, did_you_mean
from kprune.core.layers import is_prunable, model_layers, prunable_weights, weight_layers
from kprune.core.plan import LayerRule, PruningPlan
from kprune.core.schedules import Schedule
from kprune.core.table import table
from kprune.engines import pruner
from kprune.engines.wrap import copy_model

__all__ = ["scan", "SensitivityResult", "SensitivityPoint", "DEFAULT_SPARSITIES",
           "prunable_layers"]

#: The default sparsity ladder.
DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class SensitivityPoint:
    """Accuracy with one layer pruned to one sparsity (all others dense)."""

    layer: str
    type: str
    weights: int
    sparsity: float
    accuracy: float
    drop_pp: float

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class SensitivityResult:
    """The scan's table: one :class:`SensitivityPoint` per (layer, sparsity).

    Attributes:
        dense_accuracy: accuracy of the unpruned model on the scan's data.
        sparsities: the ladder.
        rows: the points, layer by layer, sparsity ascending.
        examples: number of validation examples.
        finetune_epochs: fine-tuning epochs after each pruning (0 = none).
    """

    dense_accuracy: float
    sparsities: tuple
    rows: tuple
    examples: int = 0
    finetune_epochs: int = 0

    @property
    def layers(self):
        """The scanned layer paths, in model order."""
        return list(dict.fromkeys(row.layer for row in self.rows))

    def curve(self, layer):
        """``[(sparsity, accuracy), ...]`` of one layer."""
        points = [(row.sparsity, row.accuracy) for row in self.rows if row.layer == layer]
        if not points:
            raise KeyError(f"Layer {layer!r} was not scanned. Scanned: {self.layers}")
        return points

    def max_sparsity(self, layer, max_drop_pp=1.0):
        """The largest ladder sparsity such that it and every lower one stay within budget.

        Requiring all lower sparsities to pass as well keeps one lucky point after a
        collapse from being chosen. Returns 0.0 when even the first one fails.
        """
        _check_budget(max_drop_pp)
        best = 0.0
        for row in (r for r in self.rows if r.layer == layer):
            if row.drop_pp > max_drop_pp:
                break
            best = row.sparsity
        return best

    def to_plan(self, max_drop_pp=1.0, *, schedule=None):
        """A :class:`PruningPlan` with, per scanned layer, the most sparsity the budget allows.

        Each layer's target is :meth:`max_sparsity` for ``max_drop_pp`` percentage points
        of accuracy drop (measured with that layer alone pruned; pruning several layers
        at once usually costs more, so fine-tune and check). Layers that do not stay
        within the budget even at the lowest sparsity get a ``skip`` rule; layers not
        scanned get no rule (left dense).

        Example:
            >>> plan = result.to_plan(max_drop_pp=0.5, schedule=kprune.Schedule(end=2))
        """
        _check_budget(max_drop_pp)
        schedule = Schedule() if schedule is None else schedule
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"Argument `schedule` must be a kprune.Schedule or None. "
                f"Received: schedule={schedule!r}"
            )
        rules = []
        for layer in self.layers:
            target = self.max_sparsity(layer, max_drop_pp)
            if target == 0.0:
                rules.append(LayerRule(
                    layer, method="skip",
                    note=f"sensitivity: over {max_drop_pp:g} pp drop at the lowest sparsity",
                ))
                continue
            drop = next(r.drop_pp for r in self.rows
                        if r.layer == layer and r.sparsity == target)
            rules.append(LayerRule(
                layer, target=target, schedule=schedule,
                note=f"sensitivity: {drop:+.2f} pp drop alone at {target:g}",
            ))
        return PruningPlan(tuple(rules))

    def to_dict(self):
        return {
            "dense_accuracy": self.dense_accuracy,
            "sparsities": list(self.sparsities),
            "examples": self.examples,
            "finetune_epochs": self.finetune_epochs,
            "rows": [row.to_dict() for row in self.rows],
        }

    def __str__(self):
        header = ("layer", "type", "weights", *(f"{s:g}" for s in self.sparsities))
        lines = []
        for layer in self.layers:
            rows = [r for r in self.rows if r.layer == layer]
            lines.append((layer, rows[0].type, f"{rows[0].weights:,}",
                          *(f"{r.accuracy:.4f}" for r in rows)))
        title = (
            f"accuracy with one layer pruned (dense {self.dense_accuracy:.4f} on "
            f"{self.examples:,} examples"
            + (f", {self.finetune_epochs} fine-tune epoch(s)" if self.finetune_epochs else "")
            + ")"
        )
        return title + "\n" + table(header, lines)

    def save(self, out_dir, *, max_drop_pp=1.0, schedule=None):
        """Write the table, the plot and the suggested plan into ``out_dir``; return the paths.

        Files: ``sensitivity.txt`` (the table), ``sensitivity.json`` (:meth:`to_dict`
        with the budget and the plan), ``sensitivity.png`` (:meth:`plot` with the budget
        marked) and ``suggested_plan.yaml`` (:meth:`to_plan`).

        Example:
            >>> paths = result.save("runs/sens", max_drop_pp=0.5)
            >>> kprune.PruningPlan.load(paths["plan"])
        """
        import json
        from pathlib import Path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plan = self.to_plan(max_drop_pp, schedule=schedule)
        paths = {
            "table": out / "sensitivity.txt",
            "json": out / "sensitivity.json",
            "plot": out / "sensitivity.png",
            "plan": out / "suggested_plan.yaml",
        }
        paths["table"].write_text(str(self) + "\n")
        data = dict(self.to_dict(), max_drop_pp=max_drop_pp, plan=plan.to_dict())
        paths["json"].write_text(json.dumps(data, indent=2) + "\n")
        self.plot(paths["plot"], max_drop_pp=max_drop_pp)
        plan.to_yaml(paths["plan"])
        return paths

    def plot(self, path=None, *, title=None, max_drop_pp=None):
        """A matplotlib Figure of accuracy against sparsity, one line per layer.

        With ``max_drop_pp`` the budget is drawn as a dotted line and each layer's
        :meth:`max_sparsity` as a star (what :meth:`to_plan` would choose). With ``path``
        the figure is also written there (through ``kprune.viz``).

        Example:
            >>> fig = result.plot("sensitivity.png", max_drop_pp=1.0)
        """
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        for layer in self.layers:
            xs, ys = zip(*self.curve(layer))
            (line,) = ax.plot(np.array(xs) * 100, np.array(ys) * 100, marker="o", label=layer)
            chosen = 0.0 if max_drop_pp is None else self.max_sparsity(layer, max_drop_pp)
            if chosen > 0:
                accuracy = dict(self.curve(layer))[chosen]
                ax.plot([chosen * 100], [accuracy * 100], marker="*", markersize=16,
                        color=line.get_color(), markeredgecolor="black", linestyle="none")
        ax.axhline(self.dense_accuracy * 100, color="grey", linestyle="--", linewidth=1,
                   label="dense")
        if max_drop_pp is not None:
            ax.axhline(self.dense_accuracy * 100 - max_drop_pp, color="black", linestyle=":",
                       linewidth=1, label=f"budget: -{max_drop_pp:g} pp (star: chosen)")
        ax.set_xlabel("sparsity of the pruned layer (%)")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(title or "Sensitivity: one layer pruned at a time")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        if path is not None:
            from kprune.viz import save_figure

            save_figure(fig, path)
        return fig


def prunable_layers(model):
    """``[(path, layer)]`` of the layers kprune can prune (``kprune.layers.is_prunable``), in a
    tf_keras or Keras 3 model (checked by the engine that owns it; on Keras 3 the layers
    inside custom layers too, see ``kprune.layers.weight_layers``).

    Example:
        >>> [path for path, _ in prunable_layers(model)]
        ['conv1', 'conv2', 'fc1', 'head']
    """
    return [(path, layer) for path, layer in weight_layers(model) if is_prunable(layer)]


def scan(model, x_val, y_val, *, sparsities=DEFAULT_SPARSITIES, layers=None, finetune=None,
         finetune_epochs=1, batch_size=256, progress=True):
    """Prune one layer at a time over a ladder of sparsities and evaluate each.

    Args:
        model: a trained tf_keras or Keras 3 model (never modified; the scan works on a
            copy).
        x_val, y_val: validation data (integer or one-hot labels); a few thousand
            examples are usually enough.
        sparsities: the ladder, fractions in [0, 1).
        layers: layer paths to scan; None = every prunable layer.
        finetune: None (no retraining, the default) or a
            :class:`~kprune.workflows.Trainer` to fine-tune each pruned copy for
            ``finetune_epochs`` with the pruned weights held at zero.
        batch_size: evaluation batch size.
        progress: True shows progress over the layers and the ladder with
            :func:`kprune.progress.track` (a bar on a terminal, one line per layer in a
            log, nothing when :func:`kprune.progress.set_quiet` is on); False shows
            none; a callable gets, instead, a line with the dense accuracy and one line
            per layer with its accuracies.

    Returns:
        a :class:`SensitivityResult`.

    Example:
        >>> result = scan(model, x_val, y_val, sparsities=(0.5, 0.9), layers=["fc1"])
    """
    from kprune.methods.workflows import Trainer, accuracy, fixed_mask

    candidates = prunable_layers(model)  # checks the model, on either engine
    ladder = _check_ladder(sparsities)
    if len(x_val) != len(y_val):
        raise ValueError(
            "Arguments `x_val` and `y_val` must hold the same number of examples. "
            f"Received: len(x_val)={len(x_val)}, len(y_val)={len(y_val)}"
        )
    if len(x_val) == 0:
        raise ValueError("Arguments `x_val` and `y_val` must not be empty. Received: 0 examples")
    if not candidates:
        kinds = sorted({type(layer).__name__ for _, layer in model_layers(model)})
        raise ValueError(
            f"Model {model.name!r} has no prunable layer (no layer with a weight that "
            f"{pruner(model)} can prune); nothing to scan. Received: a model with layer types {kinds}"
        )
    chosen = _choose(candidates, layers)
    if finetune is not None and not isinstance(finetune, Trainer):
        raise TypeError(
            "Argument `finetune` must be None or a kprune.workflows.Trainer. "
            f"Received: finetune={finetune!r}"
        )
    if finetune is not None and (isinstance(finetune_epochs, bool)
                                 or not isinstance(finetune_epochs, int)
                                 or finetune_epochs < 1):
        raise ValueError(
            "Argument `finetune_epochs` must be a positive integer. "
            f"Received: finetune_epochs={finetune_epochs!r}"
        )
    say = _progress(progress)
    show = progress is True

    twin = copy_model(model)
    dense = accuracy(twin, x_val, y_val, batch_size=batch_size)
    say(f"sensitivity: dense accuracy {dense:.4f} on {len(x_val):,} examples, "
        f"{len(chosen)} layer(s) x {len(ladder)} sparsities"
        + (f", {finetune_epochs} fine-tune epoch(s) each" if finetune is not None else ""))
    sizes = {path: sum(int(np.prod(w.variable.shape)) for w in prunable_weights(layer))
             for path, layer in chosen}
    rows = []
    steps = enumerate(chosen, start=1)
    if show:
        steps = _progress_module.track(
            steps, "sensitivity", total=len(chosen), unit="layer",
            label=lambda step: f"{step[1][0]}, {sizes[step[1][0]]:,} weights")
    for index, (path, _) in steps:
        layer = dict(weight_layers(twin))[path]
        # Every weight the layer prunes, each to the same sparsity, as tfmot would.
        weights = prunable_weights(layer)
        originals = {w.label: np.array(w.variable.numpy()) for w in weights}
        size = sum(v.size for v in originals.values())
        points = []
        ladder_steps = (_progress_module.track(ladder, path, unit="sparsity") if show
                        else ladder)
        for sparsity in ladder_steps:
            if sparsity == 0.0 and finetune is None:
                acc = dense
            else:
                keep = {label: masks.magnitude(v, sparsity) for label, v in originals.items()}
                if finetune is None:
                    _assign(weights, originals, keep)
                    acc = accuracy(twin, x_val, y_val, batch_size=batch_size)
                    _assign(weights, originals, None)
                else:
                    tuned = copy_model(model)
                    _assign(prunable_weights(dict(weight_layers(tuned))[path]),
                            originals, keep)
                    finetune.fit(tuned, finetune_epochs, [fixed_mask(tuned, {path: keep})])
                    acc = accuracy(tuned, x_val, y_val, batch_size=batch_size)
            points.append(SensitivityPoint(
                layer=path, type=type(layer).__name__, weights=int(size),
                sparsity=sparsity, accuracy=acc, drop_pp=(dense - acc) * 100.0,
            ))
        rows.extend(points)
        say(f"sensitivity [{index}/{len(chosen)}] {path} ({size:,} weights): "
            + ", ".join(f"{p.sparsity:g} {p.accuracy:.4f}" for p in points))
    return SensitivityResult(dense, ladder, tuple(rows), examples=len(x_val),
                             finetune_epochs=finetune_epochs if finetune is not None else 0)


def _assign(weights, originals, keep):
    """Set each weight to its original values, times its keep-mask when ``keep`` is given."""
    for w in weights:
        values = originals[w.label]
        w.variable.assign(values if keep is None else values * keep[w.label])


def _check_ladder(sparsities):
    if isinstance(sparsities, (str, bytes)) or not hasattr(sparsities, "__iter__"):
        raise TypeError(
            "Argument `sparsities` must be a sequence of fractions in [0, 1). "
            f"Received: sparsities={sparsities!r}"
        )
    values = list(sparsities)
    if not values:
        raise ValueError("Argument `sparsities` must not be empty. Received: sparsities=[]")
    for value in values:
        try:
            check_sparsity(value, argument="sparsities")
        except (TypeError, ValueError):
            raise ValueError(
                "Argument `sparsities` must hold fractions in [0, 1) (0.9 means 90% of a "
                f"layer's weights set to zero); {value!r} is not. "
                f"Received: sparsities={sparsities!r}"
            ) from None
    return tuple(sorted({float(v) for v in values}))


def _choose(candidates, layers):
    if layers is None:
        return candidates
    if isinstance(layers, str):
        layers = [layers]
    by_path = dict(candidates)
    chosen = []
    for name in layers:
        if name not in by_path:
            hint = did_you_mean(str(name), list(by_path))
            raise ValueError(
                f"Argument `layers` names {name!r}, which is not a prunable layer of the "
                f"model.{hint} Prunable layers: {list(by_path)}"
            )
        chosen.append((name, by_path[name]))
    if not chosen:
        raise ValueError(f"Argument `layers` must name at least one layer. Received: {layers!r}")
    return chosen


def _progress(progress):
    """Where scan's text lines go: to a callable ``progress``, else nowhere."""
    if progress is True or progress is False or progress is None:
        return lambda line: None
    if callable(progress):
        return progress
    raise TypeError(
        "Argument `progress` must be True, False or a callable taking one line of text. "
        f"Received: progress={progress!r}"
    )


def _check_budget(max_drop_pp):
    if (isinstance(max_drop_pp, bool) or not isinstance(max_drop_pp, (int, float))
            or max_drop_pp < 0):
        raise ValueError(
            "Argument `max_drop_pp` must be a non-negative number of percentage points of "
            f"accuracy. Received: max_drop_pp={max_drop_pp!r}"
        )
