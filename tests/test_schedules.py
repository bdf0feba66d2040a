"""Schedules: step -> sparsity maths, derived frequency, and refusal of unreachable targets."""

import pytest

from kprune.core.checks import check_sparsity
from kprune.core.schedules import Schedule


def test_derived_schedule_reaches_target_on_a_firing_step():
    r = Schedule().resolve(0.8, steps_per_epoch=100, epochs=2)
    assert r.begin_step == 1
    assert r.end_step <= r.total_steps == 200
    assert (r.end_step - r.begin_step) % r.frequency == 0
    assert r.fires_at(r.end_step)
    assert r.sparsity_at(r.total_steps) == pytest.approx(0.8)
    assert r.sparsity_at(0) == 0.0


def test_short_finetune_still_prunes():
    # tfmot's default frequency=100 would never fire in 30 steps.
    r = Schedule().resolve(0.5, steps_per_epoch=15, epochs=2)
    assert r.frequency == 1
    assert len(r.fire_steps()) == 30
    assert r.sparsity_at(30) == pytest.approx(0.5)


def test_polynomial_is_cubic_and_monotone():
    r = Schedule(initial_sparsity=0.5).resolve(0.8, steps_per_epoch=50, epochs=4)
    values = [r.scheduled_sparsity(s) for s in range(1, r.total_steps + 1)]
    assert values == sorted(values)
    mid = (r.begin_step + r.end_step) / 2
    assert r.scheduled_sparsity(mid) == pytest.approx(0.8 - 0.3 * 0.5**3, abs=1e-9)


def test_begin_and_end_in_epochs_and_steps():
    r = Schedule(begin=1, end=3).resolve(0.6, steps_per_epoch=10, epochs=4)
    assert (r.begin_step, r.end_step) == (11, 30)
    # In steps: `begin` batches are trained before pruning starts; the target is
    # reached after `end` batches.
    r = Schedule(begin=5, end=21, unit="steps", frequency=5).resolve(
        0.6, steps_per_epoch=10, epochs=4
    )
    assert (r.begin_step, r.end_step, r.frequency) == (6, 21, 5)
    assert r.fire_steps() == [6, 11, 16, 21]


def test_constant_fires_from_begin():
    r = Schedule(kind="constant").resolve(0.7, steps_per_epoch=10, epochs=1)
    assert r.fire_steps()[0] == 1
    assert r.sparsity_at(1) == 0.7


def test_matches_tfmot_schedule_step_by_step():
    from kprune.engines.tfkeras import loader

    for schedule in (Schedule(initial_sparsity=0.2), Schedule(kind="constant", begin=1)):
        r = schedule.resolve(0.75, steps_per_epoch=37, epochs=3)
        tfmot_schedule = r.to_tfmot()
        for step in range(1, r.total_steps + 1):
            fire, sparsity = tfmot_schedule(step)
            assert bool(fire) == r.fires_at(step), step
            if r.fires_at(step):
                assert float(sparsity) == pytest.approx(r.scheduled_sparsity(step), abs=1e-6)
    assert loader.tfmot is not None


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_outside_unit_interval_is_an_error(value):
    with pytest.raises(ValueError, match=r"must be a fraction in \[0, 1\).*Received: target="):
        Schedule().resolve(value, steps_per_epoch=10, epochs=1)


def test_sparsity_must_be_a_number():
    with pytest.raises(TypeError, match="Received: sparsity='0.5'"):
        check_sparsity("0.5")


def test_end_before_begin_is_an_error():
    with pytest.raises(ValueError, match=r"`end` must come after `begin`.*begin=2, end=1"):
        Schedule(begin=2, end=1)


def test_schedule_ending_after_training_is_refused():
    with pytest.raises(ValueError, match="after the last training step"):
        Schedule(end=5).resolve(0.5, steps_per_epoch=10, epochs=2)


def test_frequency_that_misses_the_end_step_is_refused():
    # The tfmot trap: frequency=100 in a 150-step fine-tune never reaches the target.
    with pytest.raises(ValueError, match=r"frequency=100.*never reached"):
        Schedule(frequency=100).resolve(0.5, steps_per_epoch=50, epochs=3)


def test_begin_after_training_is_refused():
    with pytest.raises(ValueError, match="pruning would never happen"):
        Schedule(begin=3).resolve(0.5, steps_per_epoch=10, epochs=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "linear"}, "`kind` must be one of"),
        ({"unit": "batches"}, "`unit` must be one of"),
        ({"frequency": 0}, "`frequency` must be a positive integer"),
        ({"begin": -1}, "`begin` must be a non-negative number"),
        ({"power": float("nan")}, "`power` must be a non-negative number"),
        ({"initial_sparsity": 1.0}, "`initial_sparsity` must be a fraction"),
    ],
)
def test_bad_schedule_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


def test_bad_step_counts():
    with pytest.raises(ValueError, match="`steps_per_epoch` must be a positive integer"):
        Schedule().resolve(0.5, steps_per_epoch=0, epochs=1)


def test_round_trip_and_unknown_key():
    s = Schedule(kind="constant", begin=2, unit="steps", frequency=5)
    assert Schedule.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="Unknown key 'frequncy' in schedule"):
        Schedule.from_dict({"frequncy": 5})


def test_plot_marks_every_firing_step_up_to_the_last(tmp_path):
    r = Schedule().resolve(0.8, steps_per_epoch=30, epochs=2)
    figure = r.plot(tmp_path / "schedule.png")
    line, dots = figure.axes[0].lines
    assert len(dots.get_xdata()) == len(r.fire_steps())
    assert dots.get_xdata()[-1] == r.end_step
    assert line.get_ydata()[-1] == pytest.approx(0.8)
    assert (tmp_path / "schedule.png").stat().st_size > 1000


def test_a_constant_schedule_with_an_end_is_refused():
    with pytest.raises(ValueError, match="A constant schedule has no `end`"):
        Schedule(kind="constant", end=2)
