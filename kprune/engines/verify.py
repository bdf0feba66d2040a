"""Strip the pruning wrappers and check what sparsity the real weights reached.

Every row measures the weights that are really pruned, as :mod:`kprune.core.layers`
names them (a separable conv's ``pointwise_kernel``, attention's four inner kernels).
The N:M check groups weights along the input-channel axis (the grouping TFLite
uses) and does not count padding as pruned: tfmot's own ``is_pruned_m_by_n`` calls a
one-input-channel conv "2:4" although nothing in it was zeroed. The block check counts
the blocks of the plan's ``block`` that are only partly zero: LiteRT stores a Dense
kernel block-sparse only when its zeros fill whole blocks of 16 inputs.

Example:
    >>> final = kprune.strip(pruned)
    >>> report = kprune.sparsity_report(final, plan=plan, strict=True)
    >>> print(report)
"""

from dataclasses import asdict, dataclass, replace

import numpy as np

from kprune.core import layers, masks
from kprune.core.checks import by_name
from kprune.core.plan import PruningPlan, ResolvedPlan
from kprune.core.table import table
from kprune.engines import distribute, is_keras3
from kprune.engines.tfkeras import loader

__all__ = ["strip", "check_stripped", "sparsity_report", "SparsityReport", "LayerSparsity"]

# How far an unstructured layer's achieved sparsity may be from its target.
TOLERANCE = 0.01


def strip(model):
    """A plain model with the masks applied and the wrappers removed (tf_keras or Keras 3:
    a Keras 3 model goes to :func:`kprune.engines.keras3.verify.strip`).

    The result shares nothing with ``model`` and lives in the same ``tf.distribute``
    strategy, if any. Like tfmot's ``UpdatePruningStep`` at each
    epoch end, it first writes the masks into ``model``'s own kernels. Example:
        >>> final = kprune.strip(pruned)
        >>> final.save("pruned.keras")
    """
    if is_keras3(model):
        from kprune.engines.keras3 import verify as keras3_verify

        return keras3_verify.strip(model)
    from kprune.engines.tfkeras.callbacks import wrapped_layers
    from kprune.engines.wrap import copy_model

    loader.check_model(model)
    # under tf.distribute, weight_mask_op() in cross-replica context fails ('tuple indices
    # must be integers or slices, not MirroredVariable'): write inside the strategy's scope
    with distribute.scope(model):
        for _, wrapper in wrapped_layers(model):
            wrapper.pruning_obj.weight_mask_op()

    def unwrap(path, layer):
        if not isinstance(layer, loader.PruneLowMagnitude):
            return layer
        inner = layer.layer
        if not hasattr(inner, "_batch_input_shape") and hasattr(layer, "_batch_input_shape"):
            inner._batch_input_shape = layer._batch_input_shape
        return inner

    with distribute.scope(model):  # the stripped model stays in the model's strategy
        stripped = copy_model(loader.clone_model(model, unwrap))
    plan = getattr(model, "_kprune_plan", None)
    if plan is not None:
        stripped._kprune_plan = plan
    return stripped


def check_stripped(model):
    """Raise unless ``model`` (tf_keras or Keras 3) is a checked model with no pruning
    wrapper left, as export and quantization-aware training need.

    Example:
        >>> check_stripped(kprune.strip(pruned))
        >>> check_stripped(pruned)
        Traceback (most recent call last):
        ValueError: Argument `model` still has pruning wrappers on layers ['fc1']; ...
    """
    wrapped = [path for path, layer in layers.model_layers(model)
               if layers.unwrap(layer) is not layer]
    if wrapped:
        raise ValueError(
            "Argument `model` still has pruning wrappers on layers "
            f"{wrapped}; call kprune.strip first (final = kprune.strip(pruned)) and "
            f"export the result. Received: model={model.name!r}"
        )


@dataclass(frozen=True)
class LayerSparsity:
    """Achieved sparsity of the weights one layer prunes, and how it compares with the plan.

    ``weight`` names them (``kernel``, ``pointwise_kernel``, or ``4 weights`` for
    attention); ``weights``/``nonzero`` are their totals and ``parts`` holds
    ``(label, size, nonzero)`` for each. ``block_violations`` (block rows) counts the
    blocks of ``block`` that are partly zero.
    """

    name: str
    type: str
    weight: str
    weights: int
    nonzero: int
    achieved: float
    method: str = ""
    target: float | None = None
    n: int | None = None
    m: int | None = None
    n_m_violations: int | None = None
    ok: bool | None = None
    parts: tuple = ()
    block: tuple | None = None
    block_violations: int | None = None

    def to_dict(self):
        data = asdict(self)
        data["parts"] = [list(part) for part in self.parts]
        data["block"] = None if self.block is None else list(self.block)
        return data


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer achieved sparsity; ``ok`` is False for any layer that missed its plan."""

    rows: tuple

    @property
    def ok(self):
        return all(row.ok is not False for row in self.rows)

    @property
    def mismatches(self):
        return [row for row in self.rows if row.ok is False]

    @property
    def weights(self):
        return sum(row.weights for row in self.rows)

    @property
    def nonzero(self):
        return sum(row.nonzero for row in self.rows)

    @property
    def sparsity(self):
        return 1.0 - self.nonzero / self.weights if self.weights else 0.0

    def __getitem__(self, name):
        return by_name(self.rows, name, what="layer", within="the report")

    def to_dict(self):
        return {
            "weights": self.weights,
            "nonzero": self.nonzero,
            "sparsity": self.sparsity,
            "ok": self.ok,
            "layers": [row.to_dict() for row in self.rows],
        }

    def __str__(self):
        header = ("layer", "type", "weight", "weights", "nonzero", "achieved", "method", "target",
                  "check")
        lines = [
            (
                r.name,
                r.type,
                r.weight,
                f"{r.weights:,}",
                f"{r.nonzero:,}",
                f"{r.achieved:.3f}",
                r.method,
                "" if r.target is None else f"{r.target:.3f}",
                _check_label(r),
            )
            for r in self.rows
        ]
        total = (
            f"total: {self.nonzero:,} of {self.weights:,} prunable weights non-zero "
            f"(sparsity {self.sparsity:.3f}, {self.weights / max(self.nonzero, 1):.2f}x fewer)"
        )
        return table(header, lines) + "\n" + total


def sparsity_report(model, plan=None, *, strict=False):
    """Per-layer achieved sparsity of ``model`` (wrapped or stripped), checked against a plan.

    Args:
        model: a tf_keras or Keras 3 model, wrapped by ``kprune.apply`` or stripped.
        plan: a :class:`PruningPlan` or :class:`ResolvedPlan` to compare with; None uses
            the plan ``kprune.apply`` attached (kept by ``strip`` and by
            ``kprune.save_model``/``load_model``), if any.
        strict: raise ValueError when a layer misses its target (unstructured: by more
            than 1 percentage point; N:M: any group with too few zeros; blocks: also any
            block only partly zero), or when there
            is no plan to compare with (a strict check of nothing would always pass).
    """
    model_layers = layers.weight_layers(model)  # either engine's model, checked; nested too
    plan = getattr(model, "_kprune_plan", None) if plan is None else plan
    if strict and plan is None:
        raise ValueError(
            "A strict sparsity report needs a plan to compare with, and this model "
            f"carries none ({model.name!r} was not made by kprune.apply, or was cloned or "
            "loaded without kprune.load_model). Pass plan=... (the PruningPlan you "
            "applied), or load the model with kprune.load_model, which restores it."
        )
    if isinstance(plan, PruningPlan):
        plan = plan.resolve(model)
    if plan is not None and not isinstance(plan, ResolvedPlan):
        raise TypeError(
            "Argument `plan` must be a kprune.PruningPlan, a resolved plan or None. "
            f"Received: plan={plan!r}"
        )
    planned = {} if plan is None else {row.name: row for row in plan}
    rows = []
    for path, layer in model_layers:
        weights = layers.effective_weights(layer)
        if weights:
            rows.append(_layer_row(path, layer, weights, planned.get(path)))
    report = SparsityReport(tuple(rows))
    if strict and not report.ok:
        missed = "; ".join(
            f"{r.name}: {_check_label(r)} (achieved {r.achieved:.3f}, target {r.target})"
            for r in report.mismatches
        )
        raise ValueError(f"Sparsity does not match the plan: {missed}")
    return report


def _layer_row(path, layer, weights, planned):
    inner = layers.unwrap(layer)
    parts = tuple((label, int(v.size), int(np.count_nonzero(v))) for label, v in weights)
    size = sum(part[1] for part in parts)
    nonzero = sum(part[2] for part in parts)
    base = dict(
        name=path,
        type=type(inner).__name__,
        weight=parts[0][0] if len(parts) == 1 else f"{len(parts)} weights",
        weights=size,
        nonzero=nonzero,
        achieved=1.0 - nonzero / size if size else 0.0,
        parts=parts,
    )
    if planned is None:
        return LayerSparsity(**base)
    if planned.method == "m_by_n":
        violations = sum(masks.n_m_violations(v, planned.n, planned.m, axis=layers.n_m_axis(layer))
                         for _, v in weights)
        return LayerSparsity(
            **base,
            method=planned.method_label,
            target=planned.target,
            n=planned.n,
            m=planned.m,
            n_m_violations=violations,
            ok=violations == 0,
        )
    if planned.method not in ("unstructured", "block"):
        return LayerSparsity(**base, method="skip")
    # A small weight cannot land closer to the target than one block (or value) in its size.
    grain = int(np.prod(planned.block))
    ok = all(abs((1.0 - nz / n) - planned.target) <= max(TOLERANCE, grain / n)
             for _, n, nz in parts)
    row = LayerSparsity(**base, method=planned.method_label, target=planned.target, ok=ok)
    if planned.block == (1, 1):
        return row
    violations = sum(masks.block_violations(v, planned.block) for _, v in weights)
    return replace(row, block=planned.block, block_violations=violations,
                   ok=ok and violations == 0)


def _check_label(row):
    if row.ok is None:
        return ""
    if row.n_m_violations is not None:
        if row.ok:
            return f"{row.n}:{row.m} ok"
        return f"{row.n_m_violations} groups not {row.n}:{row.m}"
    if row.block_violations:
        return f"{row.block_violations} blocks partly zero"
    if row.block is not None and row.ok:
        return f"{row.block[0]}x{row.block[1]} blocks ok"
    return "ok" if row.ok else "missed target"
