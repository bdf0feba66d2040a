"""The pruning plan: ordered, serialisable rules, resolved against a model into one row per layer.

A plan is plain data. Each :class:`LayerRule` selects layers by exact name (or
nested path), regex, layer type or layer kind (``"conv"``, ``"dense"``, ... from
:mod:`kprune.core.layers`), optionally only the first or last layer it
selects, and says how to prune them. The first rule that selects a layer wins.
``plan.resolve(model)`` gives the :class:`ResolvedPlan` table, which ``apply``
then follows.

Example:
    >>> plan = PruningPlan.default()
    >>> print(plan.resolve(model, steps_per_epoch=100, epochs=2))
    >>> PruningPlan.from_yaml(plan.to_yaml()) == plan
    True
"""

import json
import re
import warnings
from dataclasses import asdict, dataclass, field, replace

from kprune.core.checks import by_name, check_choice, check_keys, check_sparsity, did_you_mean
from kprune.core.schedules import ResolvedSchedule, Schedule
from kprune.core.table import table
from kprune.engines import pruner

__all__ = [
    "LayerRule",
    "PruningPlan",
    "LayerPlan",
    "ResolvedPlan",
    "PlanWarning",
    "HEAD_RULE",
    "LITERT_BLOCK",
    "SCHEMA_VERSION",
]

SCHEMA_VERSION = 1
METHODS = ("unstructured", "m_by_n", "block", "skip")
#: The run of consecutive inputs of one output unit that LiteRT's converter stores
#: block-sparse in an int8 FULLY_CONNECTED weight (``block_map`` [1], block size 16), and
#: its builtin int8 kernel runs block-sparse. ``block=16`` on a Dense kernel asks for it.
LITERT_BLOCK = 16
SELECTORS = ("name", "regex", "type", "kind")
WHICH = ("all", "first", "last")
POOLS = ("AVG", "MAX")


class PlanWarning(UserWarning):
    """A plan rule that selects nothing, or a layer pruned differently from what was asked."""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LayerRule:
    """How to prune the layers one selector picks.

    Args:
        match: a layer name (or nested path ``outer/inner``), a regex, a layer class
            name such as ``"Dense"``, or a kind such as ``"conv"`` (Conv1D/2D/3D,
            Conv2DTranspose, SeparableConv1D/2D; see ``kprune.layers.KINDS``), as ``by`` says.
        by: ``"name"``, ``"regex"``, ``"type"`` or ``"kind"``.
        method: ``"unstructured"`` (magnitude), ``"m_by_n"`` (keep ``n`` of every
            ``m`` consecutive weights along the input-channel axis), ``"block"`` (whole
            blocks of ``block`` weights, the ones with the smallest pooled magnitude) or
            ``"skip"``.
        target: final sparsity of an unstructured or block layer, in [0, 1) (for
            ``"block"``: the fraction of blocks zeroed).
        n, m: for ``m_by_n``: keep ``n`` of every ``m`` (2:4 keeps half, 1:4 a quarter).
        schedule: how sparsity grows (unstructured only: tfmot computes an N:M mask
            once, at the first training step, so an N:M rule takes a schedule only for
            the layers it lets fall back to unstructured).
        which: ``"all"`` the selected layers, or only the ``"first"`` or ``"last"`` of those
            in the model's graph (a layer inside a custom layer, such as a KerasHub block's
            ``feedforward_output_dense``, is never a model's first or last layer).
        fallback: ``"unstructured"`` to prune a layer that cannot take N:M or blocks
            without them (with the reason in the table); None makes that an error.
        block: the block of weights pruned together, tfmot's ``block_size``: (rows,
            columns) of a 2-D weight, which on a Dense kernel ``[inputs, outputs]`` is
            (inputs, outputs). An int ``k`` means ``(k, 1)``: ``k`` consecutive inputs of
            one output unit. ``block=16`` (:data:`LITERT_BLOCK`) is the block LiteRT
            stores block-sparse and runs fast in an int8 ``.tflite``; a Dense block with
            another number of inputs gets a :class:`PlanWarning` (the file will not be
            block-sparse). Convolutions cannot take blocks (tfmot: 2-D weights only).
        pool: ``"AVG"`` or ``"MAX"``, how a block's magnitude is pooled.
        note: why this rule exists, shown in the resolved table.

    Example:
        >>> LayerRule("fc1", method="m_by_n", n=1, m=4)
        >>> LayerRule("fc1", method="block", block=16, target=0.95)
        >>> LayerRule(r"fc\\d", by="regex", target=0.7, block=(4, 4))
    """

    match: str
    by: str = "name"
    method: str = "unstructured"
    target: float = 0.5
    n: int = 2
    m: int = 4
    schedule: Schedule = field(default_factory=Schedule)
    which: str = "all"
    fallback: str | None = None
    block: tuple = (1, 1)
    pool: str = "AVG"
    note: str = ""

    def __post_init__(self):
        check_choice(self.by, SELECTORS, "by")
        check_choice(self.method, METHODS, "method")
        check_choice(self.which, WHICH, "which")
        check_choice(self.pool, POOLS, "pool")
        if self.fallback not in (None, "unstructured"):
            raise ValueError(
                "Argument `fallback` must be None or 'unstructured'. "
                f"Received: fallback={self.fallback!r}"
            )
        if not isinstance(self.match, str) or not self.match:
            raise ValueError(
                f"Argument `match` must be a non-empty string. Received: match={self.match!r}"
            )
        if self.by == "kind":
            from kprune.core.layers import KINDS

            check_choice(self.match, KINDS, "match")
        if self.by == "regex":
            try:
                re.compile(self.match)
            except re.error as err:
                raise ValueError(
                    f"Argument `match` is not a valid regex ({err}). "
                    f"Received: match={self.match!r}"
                ) from None
        check_sparsity(self.target, argument="target")
        for name in ("n", "m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Argument `{name}` must be a positive integer. Received: {name}={value!r}"
                )
        if self.n >= self.m:
            raise ValueError(
                "Argument `n` (weights kept per group) must be smaller than `m` (group "
                f"size). Received: n={self.n}, m={self.m}"
            )
        block = (self.block, 1) if _is_int(self.block) else self.block
        block = tuple(block) if isinstance(block, (tuple, list)) else (block,)
        if len(block) != 2 or not all(isinstance(b, int) and b >= 1 for b in block):
            raise ValueError(
                "Argument `block` must be two positive integers (rows, columns), or one "
                f"(inputs of one output unit). Received: block={self.block!r}"
            )
        if self.method == "block" and block == (1, 1):
            raise ValueError(
                "A block rule needs a block of more than one weight: block=16 prunes runs "
                "of 16 consecutive inputs of one output unit (the blocks LiteRT stores "
                f"block-sparse in int8). Received: method='block', block={self.block!r}"
            )
        object.__setattr__(self, "block", block)
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                "Argument `schedule` must be a kprune.Schedule. "
                f"Received: schedule={self.schedule!r}"
            )
        if self.method == "m_by_n" and self.fallback is None and self.schedule != Schedule():
            raise ValueError(
                "An N:M rule takes no `schedule`: tfmot computes the N:M mask once, at "
                "the first training step, and ignores any schedule (with "
                "fallback='unstructured' the schedule is used by the layers that fall "
                "back). Remove `schedule`, or use method='unstructured'. "
                f"Received: schedule={self.schedule!r}"
            )

    def selects(self, path, layer):
        """True when this rule's selector (before ``which``) picks the layer."""
        if self.by == "type":
            return type(layer).__name__ == self.match
        if self.by == "kind":
            from kprune.core.layers import kind

            return kind(layer) == self.match
        if self.by == "regex":
            return re.fullmatch(self.match, path) is not None
        return self.match in (path, layer.name)

    def to_dict(self):
        data = asdict(self)
        data["schedule"] = self.schedule.to_dict()
        data["block"] = list(self.block)
        return data

    @classmethod
    def from_dict(cls, data):
        check_keys(data, cls, what="rule")
        data = dict(data)
        if "schedule" in data:
            data["schedule"] = Schedule.from_dict(data["schedule"])
        if isinstance(data.get("block"), list):
            data["block"] = tuple(data["block"])
        return cls(**data)


#: The classifier head (the last Dense) stays dense: every built-in plan starts from this.
HEAD_RULE = LayerRule("dense", by="kind", which="last", method="skip", note="classifier head")


@dataclass(frozen=True)
class LayerPlan:
    """One row of a resolved plan: what happens to one layer, and why."""

    name: str
    type: str
    params: int
    method: str
    weights: tuple = ()
    target: float | None = None
    n: int | None = None
    m: int | None = None
    schedule: object = None
    block: tuple = (1, 1)
    pool: str = "AVG"
    reason: str = ""

    @property
    def pruned(self):
        return self.method != "skip"

    @property
    def method_label(self):
        if self.method == "m_by_n":
            return f"{self.n}:{self.m}"
        if self.block != (1, 1) and self.method in ("unstructured", "block"):
            return f"block {self.block[0]}x{self.block[1]}"
        return self.method

    @property
    def weights_label(self):
        """The pruned weights in a few words: ``kernel``, or ``4 weights`` for attention."""
        if len(self.weights) <= 1:
            return "".join(self.weights)
        return f"{len(self.weights)} weights"

    def to_dict(self):
        data = asdict(self)
        data["schedule"] = None if self.schedule is None else self.schedule.to_dict()
        data["block"] = list(self.block)
        data["weights"] = list(self.weights)
        return data

    @classmethod
    def from_dict(cls, data):
        check_keys(data, cls, what="resolved plan row")
        data = dict(data)
        schedule = data.get("schedule")
        if isinstance(schedule, dict):  # resolved (pinned to steps) when it has an end step
            kind = ResolvedSchedule if "end_step" in schedule else Schedule
            data["schedule"] = kind.from_dict(schedule)
        data["block"] = tuple(data.get("block", (1, 1)))
        data["weights"] = tuple(data.get("weights", ()))
        return cls(**data)


@dataclass(frozen=True)
class ResolvedPlan:
    """The plan applied to one model: a row per layer, printable as a table."""

    rows: tuple

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, name):
        return by_name(self.rows, name, what="layer", within="the plan")

    @property
    def pruned(self):
        return [row for row in self.rows if row.pruned]

    def to_dict(self):
        return {"schema_version": SCHEMA_VERSION, "layers": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, data):
        """Read back :meth:`to_dict` (as ``kprune.load_model`` does for a saved model's plan)."""
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise TypeError(
                "A resolved plan must be a mapping with a 'layers' list. "
                f"Received: {str(data)[:200]}"
            )
        _check_schema_version(data)
        return cls(tuple(LayerPlan.from_dict(row) for row in data["layers"]))

    def __str__(self):
        header = ("layer", "type", "params", "prunes", "method", "target", "schedule", "why")
        lines = [
            (
                r.name,
                r.type,
                f"{r.params:,}",
                r.weights_label if r.pruned else "",
                r.method_label,
                "" if r.target is None else f"{r.target:.2f}",
                "" if r.schedule is None else r.schedule.describe(),
                r.reason,
            )
            for r in self.rows
        ]
        return table(header, lines)


@dataclass(frozen=True)
class PruningPlan:
    """Ordered rules; the first rule that selects a layer decides how it is pruned.

    Layers no rule selects are left dense. See :meth:`default` for the seed recipe.

    Example:
        >>> plan = PruningPlan([LayerRule("Dense", by="type", target=0.8)])
        >>> plan.to_json()
    """

    rules: tuple = ()

    def __post_init__(self):
        rules = tuple(self.rules)
        for index, rule in enumerate(rules):
            if not isinstance(rule, LayerRule):
                raise TypeError(
                    "Argument `rules` must hold kprune.LayerRule objects. "
                    f"Received: rules[{index}]={rule!r}"
                )
        object.__setattr__(self, "rules", rules)

    @classmethod
    def default(cls, *, target=0.5, n=2, m=4, schedule=None):
        """The seed recipe: first conv unstructured, later convs and Dense N:M, head skipped.

        "Conv" is every layer of kind ``conv`` (Conv1D/2D/3D, Conv2DTranspose and the
        pointwise kernel of SeparableConv1D/2D). Layers that cannot take N:M (too few
        input channels, a count that is not a multiple of ``m``, a kernel rank tfmot
        cannot group) fall back to unstructured at ``target``, and the table says why.
        """
        schedule = schedule or Schedule()
        n_m = dict(method="m_by_n", n=n, m=m, fallback="unstructured", target=target,
                   schedule=schedule)
        return cls(
            (
                LayerRule("conv", by="kind", which="first", method="unstructured",
                          target=target, schedule=schedule,
                          note="first conv: few input channels"),
                HEAD_RULE,
                # Only the layers that fall back to unstructured use the schedule.
                LayerRule("conv", by="kind", **n_m),
                LayerRule("dense", by="kind", **n_m),
            )
        )

    @classmethod
    def uniform(cls, target, *, schedule=None):
        """Unstructured magnitude pruning at ``target`` for every prunable layer but the head.

        Example:
            >>> print(PruningPlan.uniform(0.9).resolve(model))
        """
        check_sparsity(target, argument="target")
        return cls((HEAD_RULE, LayerRule(".*", by="regex", method="unstructured",
                                         target=target, schedule=schedule or Schedule())))

    @classmethod
    def block_sparse(cls, target, *, block=LITERT_BLOCK, schedule=None):
        """Block sparsity at ``target`` (fraction of blocks zeroed) on every Dense but the head.

        The default ``block=16`` prunes runs of 16 consecutive inputs of one output
        unit: the blocks LiteRT stores block-sparse in an int8 ``.tflite``
        (``kprune.tflite.export`` with ``quantize="int8", sparse=True``) and runs with its
        builtin block-sparse kernel. Other layers stay dense; add rules with
        :meth:`with_rule` to prune them.

        Example:
            >>> plan = PruningPlan.block_sparse(0.95)
            >>> print(plan.resolve(model))  # fc1: block 16x1, target 0.95
        """
        check_sparsity(target, argument="target")
        return cls((HEAD_RULE, LayerRule("dense", by="kind", method="block", block=block,
                                         target=target, schedule=schedule or Schedule())))

    def with_rule(self, rule, *, first=True):
        """A new plan with ``rule`` added (first by default, so it wins)."""
        rules = (rule,) + self.rules if first else self.rules + (rule,)
        return replace(self, rules=rules)

    def resolve(self, model, *, steps_per_epoch=None, epochs=None):
        """One :class:`LayerPlan` per layer of ``model``; schedules pinned to steps if given.

        Raises ValueError for a name rule that matches no layer (suggesting close
        names) and for an explicit N:M rule on a layer that cannot take it.
        """
        from kprune.core.layers import shared_weights, tied_note, weight_layers

        found = weight_layers(model)  # tf_keras or Keras 3, checked; nested layers too
        chosen = self._choose(found)
        shared = shared_weights(found)
        rows = []
        for path, layer in found:
            rule = chosen.get(path)
            row = _resolve_layer(path, layer, rule, steps_per_epoch=steps_per_epoch, epochs=epochs)
            tied = tied_note(layer)
            if tied:
                row = replace(row, reason=_join(row.reason, tied))
            if path in shared:
                row = LayerPlan(name=path, type=row.type, params=row.params, weights=row.weights,
                                method="skip", reason=shared[path])
            rows.append(row)
        return ResolvedPlan(tuple(rows))

    def _choose(self, layers):
        """Map each layer path to the first rule that selects it (respecting ``which``)."""
        chosen = {}
        owners = {path for path, _ in layers}
        in_graph = {path for path, _ in layers
                    if not any(path.startswith(owner + "/") for owner in owners)}
        for rule in self.rules:
            picked = [path for path, layer in layers if rule.selects(path, layer)]
            if not picked:
                self._no_match(rule, layers)
                continue
            if rule.which != "all":
                ends = [path for path in picked if path in in_graph]
                picked = ends[:1] if rule.which == "first" else ends[-1:]
            for path in picked:
                chosen.setdefault(path, rule)
        return chosen

    @staticmethod
    def _no_match(rule, layers):
        if rule.by == "name":
            names = [path for path, _ in layers]
            hint = did_you_mean(rule.match, names)
            raise ValueError(
                f"A plan rule names layer {rule.match!r}, which is not in the model.{hint} "
                f"Layers: {names}"
            )
        if rule.by == "regex":
            warnings.warn(
                f"Plan rule regex {rule.match!r} matches no layer; it has no effect.",
                PlanWarning,
                stacklevel=4,
            )

    def to_dict(self):
        return {"schema_version": SCHEMA_VERSION, "rules": [r.to_dict() for r in self.rules]}

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise TypeError(f"A plan must be a mapping. Received: {data!r}")
        unknown = sorted(set(data) - {"schema_version", "rules"})
        if unknown:
            raise ValueError(
                f"Unknown key {unknown[0]!r} in plan. Known keys: ['rules', "
                f"'schema_version']. Received keys: {sorted(data)}"
            )
        _check_schema_version(data)
        rules = data.get("rules", [])
        if not isinstance(rules, list):
            raise TypeError(f"Plan key 'rules' must be a list. Received: rules={rules!r}")
        return cls(tuple(LayerRule.from_dict(r) for r in rules))

    def to_json(self, path=None):
        text = json.dumps(self.to_dict(), indent=2)
        return _write(path, text)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def to_yaml(self, path=None):
        import yaml

        return _write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, text):
        import yaml

        return cls.from_dict(yaml.safe_load(text))

    @classmethod
    def load(cls, path):
        """Read a plan from a ``.json``, ``.yaml`` or ``.yml`` file."""
        from pathlib import Path

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Plan file not found. Received: path={str(path)!r}")
        text = path.read_text()
        if path.suffix == ".json":
            return cls.from_json(text)
        if path.suffix in (".yaml", ".yml"):
            return cls.from_yaml(text)
        raise ValueError(
            f"A plan file must end in .json, .yaml or .yml. Received: path={str(path)!r}"
        )

    def __str__(self):
        header = ("#", "select", "which", "method", "target", "schedule", "note")
        lines = [
            (
                str(i),
                f"{r.by}={r.match}",
                r.which,
                _rule_method_label(r),
                f"{r.target:.2f}" if r.method in ("unstructured", "block") else "",
                r.schedule.describe() if r.method in ("unstructured", "block") else "",
                r.note,
            )
            for i, r in enumerate(self.rules)
        ]
        return table(header, lines)


def _resolve_layer(path, layer, rule, *, steps_per_epoch, epochs):
    from kprune.core import layers

    params = int(layer.count_params()) if layer.built else 0
    weights = tuple(w.label for w in layers.prunable_weights(layer))
    base = dict(name=path, type=type(layer).__name__, params=params, weights=weights)
    if not weights:
        reason = layers.not_pruned_reason(layer)
        if rule is not None and rule.method != "skip" and rule.by == "name":
            raise ValueError(
                f"Layer {path!r} ({type(layer).__name__}) has nothing {pruner(layer)} can prune "
                f"({reason}); remove the rule or set method='skip'. Received: rule={rule!r}"
            )
        return LayerPlan(method="skip", reason=reason, **dict(base, weights=()))
    if rule is None:
        return LayerPlan(method="skip", reason="no rule selects it", **base)
    if rule.method == "skip":
        return LayerPlan(method="skip", reason=rule.note or "skipped by rule", **base)
    method, reason = rule.method, rule.note
    block = rule.block
    if block != (1, 1) and method in ("unstructured", "block"):
        why_not = layers.block_problem(layer, block)
        if why_not and (method == "unstructured" or rule.fallback is None):
            fix = ("fallback='unstructured' on the rule" if method == "block"
                   else "block=(1, 1)")
            raise ValueError(
                f"Layer {path!r} cannot take blocks of {block[0]}x{block[1]}: {why_not}. "
                f"Leave it out of the rule, or use {fix}. Received: rule={rule!r}"
            )
        if why_not:
            method, block = "unstructured", (1, 1)
            reason = f"blocks impossible ({why_not})"
        else:
            reason = _join(reason, _litert_block_note(path, layer, block))
    if method == "m_by_n":
        why_not = layers.n_m_problem(layer, rule.n, rule.m)
        if why_not and rule.fallback is None:
            raise ValueError(
                f"Layer {path!r} cannot take {rule.n}:{rule.m} sparsity: {why_not}. Use "
                "method='unstructured' for it, or fallback='unstructured' on the rule. "
                f"Received: rule={rule!r}"
            )
        if why_not:
            method, reason = "unstructured", f"{rule.n}:{rule.m} impossible ({why_not})"
    if method == "m_by_n":
        return LayerPlan(
            method="m_by_n",
            target=(rule.m - rule.n) / rule.m,
            n=rule.n,
            m=rule.m,
            reason=reason,
            **base,
        )
    schedule = rule.schedule
    if steps_per_epoch is not None and epochs is not None:
        schedule = schedule.resolve(rule.target, steps_per_epoch=steps_per_epoch, epochs=epochs)
    return LayerPlan(
        method=method,
        target=rule.target,
        schedule=schedule,
        block=block,
        pool=rule.pool,
        reason=reason,
        **base,
    )


def _litert_block_note(path, layer, block):
    """"" or, for a Dense kernel that LiteRT will not store (or run) right block-sparse, a
    short note for the plan table and a :class:`PlanWarning` with the whole story.

    LiteRT's converter stores an int8 FULLY_CONNECTED weight block-sparse when its zeros
    come in runs of 16 consecutive inputs of one output unit; a Dense kernel is
    ``[inputs, outputs]``, so the block's first size must be a multiple of 16. And when
    the number of inputs is not a multiple of 16, the converter drops the weights of the
    last, partial block of every output unit (measured: wrong outputs in LiteRT).
    """
    from kprune.core import layers

    if layers.kind(layer) != "dense":
        return ""
    inputs = layers.prunable_weights(layer)[0].shape[0]
    if block[0] % LITERT_BLOCK:
        story = (f"blocks of {block[0]}x{block[1]} ({block[0]} input(s) x {block[1]} "
                 f"output(s) of the Dense kernel) are not runs of {LITERT_BLOCK} consecutive "
                 "inputs of one output unit, so LiteRT's converter will not store this layer "
                 "block-sparse in an int8 .tflite (it falls back to unstructured sparse "
                 f"storage, which XNNPACK refuses, or to dense). Use block={LITERT_BLOCK}, "
                 f"i.e. ({LITERT_BLOCK}, 1), for the block-sparse int8 file")
        note = f"not block-sparse in int8 .tflite (needs {LITERT_BLOCK} inputs per block)"
    elif inputs % LITERT_BLOCK:
        story = (f"its {inputs} inputs are not a multiple of {LITERT_BLOCK}: when LiteRT's "
                 "converter stores the kernel block-sparse (int8 with sparse storage) it "
                 f"drops the weights of the last {inputs % LITERT_BLOCK} inputs of every "
                 "output unit (the partial block), and the file computes wrong outputs. "
                 "Export it without sparse storage, or leave this layer out of the rule")
        note = f"{inputs} inputs: int8 sparse file loses the partial last block"
    else:
        return ""
    warnings.warn(f"Layer {path!r}: {story}. Received: block={block}", PlanWarning,
                  stacklevel=4)
    return note


def _join(*notes):
    return "; ".join(note for note in notes if note)


def _rule_method_label(rule):
    if rule.method == "m_by_n":
        return f"{rule.n}:{rule.m}"
    if rule.method == "block" or (rule.method == "unstructured" and rule.block != (1, 1)):
        return f"block {rule.block[0]}x{rule.block[1]}"
    return rule.method


def _check_schema_version(data):
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"This kprune reads plan schema version {SCHEMA_VERSION}. "
            f"Received: schema_version={version!r}"
        )


def _write(path, text):
    if path is not None:
        from pathlib import Path

        Path(path).write_text(text)
    return text
