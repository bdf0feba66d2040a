"""Pruning schedules: ``step -> sparsity`` written once, validated, with one adapter to tfmot.

tfmot's schedules fire only when ``(step - begin_step) % frequency == 0`` and
``step <= end_step``; with the default ``frequency=100`` a short fine-tune prunes
nothing, and the final sparsity is only reached if a firing step lands exactly on
``end_step``. kprune derives ``frequency`` and ``end_step`` from the real number of
training steps so that the target is reached, and refuses a schedule that cannot.

Steps are counted as tfmot counts them: the wrapper increments its step before each
training batch, so the batches of a fit are steps ``1 .. steps_per_epoch * epochs``.

Example:
    >>> s = Schedule(kind="polynomial", begin=0, end=None)
    >>> r = s.resolve(0.8, steps_per_epoch=100, epochs=2)
    >>> r.begin_step, r.end_step, r.frequency
    (1, 199, 9)
    >>> r.sparsity_at(r.end_step)
    0.8
"""

from dataclasses import asdict, dataclass

from kprune.core.checks import check_choice, check_int, check_keys, check_number, check_sparsity

__all__ = ["Schedule", "ResolvedSchedule"]

KINDS = ("polynomial", "constant")
UNITS = ("epochs", "steps")
# How many mask updates a derived frequency aims for over the pruning span.
_TARGET_UPDATES = 20
_MAX_FREQUENCY = 100


@dataclass(frozen=True)
class Schedule:
    """How sparsity grows over training, in epochs or steps; targets live on plan rules.

    Args:
        kind: ``"polynomial"`` (Zhu & Gupta's automated gradual pruning; cubic by
            default) or ``"constant"`` (the target at once, from ``begin``).
        initial_sparsity: polynomial only: sparsity at ``begin``.
        begin: how much training (in ``unit``) comes before pruning starts
            (0 = from the first batch).
        end: how much training (in ``unit``) has been done when the target is
            reached; None = the end of training.
        unit: ``"epochs"`` or ``"steps"``.
        power: polynomial exponent (3 = cubic).
        frequency: steps between mask updates; None derives it from the span.

    Example:
        >>> Schedule(kind="constant").resolve(0.5, steps_per_epoch=10, epochs=1).fire_steps()
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        >>> Schedule(end=1).resolve(0.5, steps_per_epoch=10, epochs=1).end_step
        10
    """

    kind: str = "polynomial"
    initial_sparsity: float = 0.0
    begin: float = 0
    end: float | None = None
    unit: str = "epochs"
    power: float = 3.0
    frequency: int | None = None

    def __post_init__(self):
        check_choice(self.kind, KINDS, "kind")
        check_choice(self.unit, UNITS, "unit")
        check_sparsity(self.initial_sparsity, argument="initial_sparsity")
        check_number(self.begin, "begin")
        if self.end is not None:
            check_number(self.end, "end")
            if self.kind == "constant":
                raise ValueError(
                    "A constant schedule has no `end`: it prunes to the target at `begin` "
                    "and holds it. Remove `end`, or use kind='polynomial' to reach the "
                    f"target by `end`. Received: kind='constant', end={self.end!r}"
                )
            if self.end <= self.begin:
                raise ValueError(
                    "Argument `end` must come after `begin`. "
                    f"Received: begin={self.begin!r}, end={self.end!r} ({self.unit})"
                )
        check_number(self.power, "power")
        if self.frequency is not None:
            check_int(self.frequency, "frequency")

    def resolve(self, target, *, steps_per_epoch, epochs):
        """Turn this schedule into concrete tfmot steps for ``target`` over a fit.

        Raises ValueError when the target can never be reached in the steps given.
        """
        target = check_sparsity(target, argument="target")
        check_int(steps_per_epoch, "steps_per_epoch")
        check_int(epochs, "epochs")
        total = steps_per_epoch * epochs
        scale = steps_per_epoch if self.unit == "epochs" else 1
        begin_step = int(round(self.begin * scale)) + 1
        end_step = total if self.end is None else int(round(self.end * scale))
        where = (
            f"Received: begin={self.begin!r}, end={self.end!r} ({self.unit}), "
            f"steps_per_epoch={steps_per_epoch}, epochs={epochs} ({total} steps)"
        )
        if begin_step > total:
            raise ValueError(
                f"Schedule starts at step {begin_step}, after the last training step "
                f"({total}): pruning would never happen. {where}"
            )
        if end_step > total:
            raise ValueError(
                f"Schedule ends at step {end_step}, after the last training step "
                f"({total}): the target {target} would never be reached. Train longer "
                f"or end earlier. {where}"
            )
        if self.kind == "constant":
            frequency = self.frequency or _derived_frequency(total - begin_step)
            return ResolvedSchedule(
                "constant", target, target, begin_step, total, frequency, 1.0, total
            )
        span = end_step - begin_step
        if span < 1:
            raise ValueError(
                "A polynomial schedule needs at least 2 training steps between begin "
                f"and end; it would start at step {begin_step} and end at {end_step}. "
                f"{where}"
            )
        if self.frequency is None:
            frequency = _derived_frequency(span)
            end_step = begin_step + frequency * (span // frequency)
        else:
            frequency = self.frequency
            if span % frequency:
                last = begin_step + frequency * (span // frequency)
                raise ValueError(
                    f"With frequency={frequency} the mask is updated at steps "
                    f"{begin_step}, {begin_step + frequency}, ... {last}; none is the "
                    f"end step {end_step}, so the target {target} is never reached "
                    "(tfmot only prunes to the final sparsity on a firing step). Use "
                    "frequency=None to derive one, or a frequency dividing "
                    f"{span}. {where}"
                )
        return ResolvedSchedule(
            "polynomial",
            self.initial_sparsity,
            target,
            begin_step,
            end_step,
            frequency,
            float(self.power),
            total,
        )

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        check_keys(data, cls, what="schedule")
        return cls(**data)

    def describe(self):
        end = "end of training" if self.end is None else f"{self.end:g}"
        if self.kind == "constant":
            return f"constant from {self.begin:g} ({self.unit})"
        return (
            f"poly^{self.power:g} {self.initial_sparsity:g}->target, "
            f"{self.begin:g}..{end} ({self.unit})"
        )


@dataclass(frozen=True)
class ResolvedSchedule:
    """A schedule pinned to tfmot steps: the maths of ``step -> sparsity`` lives here."""

    kind: str
    initial_sparsity: float
    target: float
    begin_step: int
    end_step: int
    frequency: int
    power: float
    total_steps: int

    @property
    def final_step(self):
        """The firing step at which the mask first reaches the target."""
        return self.begin_step if self.kind == "constant" else self.end_step

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        check_keys(data, cls, what="resolved schedule")
        return cls(**data)

    def fires_at(self, step):
        """True when tfmot updates the mask at ``step``."""
        return (
            self.begin_step <= step <= self.end_step
            and (step - self.begin_step) % self.frequency == 0
        )

    def fire_steps(self):
        """Every step at which the mask is updated during the fit."""
        last = min(self.end_step, self.total_steps)
        return list(range(self.begin_step, last + 1, self.frequency))

    def scheduled_sparsity(self, step):
        """The sparsity tfmot's schedule asks for at ``step`` (whether or not it fires)."""
        if self.kind == "constant":
            return self.target
        clipped = min(max(step, self.begin_step), self.end_step)
        progress = (clipped - self.begin_step) / (self.end_step - self.begin_step)
        decay = (1.0 - progress) ** self.power
        return self.target + (self.initial_sparsity - self.target) * decay

    def sparsity_at(self, step):
        """The mask's sparsity after training step ``step``: 0 before the first update."""
        fired = [s for s in self.fire_steps() if s <= step]
        return self.scheduled_sparsity(fired[-1]) if fired else 0.0

    def plot(self, path=None):
        """The mask's sparsity over the fit (steps 0 .. total), firing steps marked.

        Example:
            >>> Schedule().resolve(0.8, steps_per_epoch=100, epochs=2).plot("schedule.png")
        """
        from kprune import viz

        steps = range(self.total_steps + 1)
        return viz.plot_schedule([self.sparsity_at(step) for step in steps],
                                 total_steps=len(steps), fire_steps=self.fire_steps(), path=path)

    def to_tfmot(self):
        """The equivalent ``tfmot.sparsity.keras`` schedule object."""
        from kprune.engines.tfkeras.loader import tfmot

        sparsity = tfmot.sparsity.keras
        if self.kind == "constant":
            return sparsity.ConstantSparsity(
                self.target, self.begin_step, end_step=-1, frequency=self.frequency
            )
        return sparsity.PolynomialDecay(
            initial_sparsity=self.initial_sparsity,
            final_sparsity=self.target,
            begin_step=self.begin_step,
            end_step=self.end_step,
            power=self.power,
            frequency=self.frequency,
        )

    def describe(self):
        if self.kind == "constant":
            return f"constant {self.target:.2f} from step {self.begin_step}"
        return (
            f"poly^{self.power:g} {self.initial_sparsity:.2f}->{self.target:.2f} "
            f"steps {self.begin_step}..{self.end_step} every {self.frequency}"
        )


def _derived_frequency(span):
    return max(1, min(_MAX_FREQUENCY, span // _TARGET_UPDATES))
