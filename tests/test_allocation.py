"""Global magnitude allocation: one threshold across layers, per-layer targets that add up."""

import numpy as np
import pytest

import kprune
from kprune import PruningPlan
from kprune.engines.tfkeras import loader
from kprune.methods.allocation import GlobalPlan, global_plan

keras = loader.keras


def model3(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="fc"),
            keras.layers.Dense(10, name="head"),
        ],
        name="model3",
    )


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def by_count(allocation):
    rows = [r for r in allocation.rows if not r.excluded]
    return sum(r.sparsity * r.weights for r in rows) / sum(r.weights for r in rows)


@pytest.mark.parametrize("target", [0.0, 0.3, 0.8, 0.92, 0.97])
def test_per_layer_sparsities_add_up_to_the_target_by_weight_count(target):
    model = model3()
    before = weights_of(model)
    plan = global_plan(model, target)
    assert isinstance(plan, GlobalPlan) and isinstance(plan, PruningPlan)
    allocation = plan.allocation
    total = allocation.weights
    assert total == 36 + 2704 * 32 + 320
    assert by_count(allocation) == pytest.approx(target, abs=1 / total)
    assert allocation.sparsity == pytest.approx(target, abs=1 / total)
    assert [r.match for r in plan.rules] == ["conv", "fc", "head"]
    for rule, row in zip(plan.rules, allocation.rows):
        if rule.method == "unstructured":
            assert rule.target == row.sparsity
        else:
            assert row.sparsity == 0.0
    np.testing.assert_equal(before, model.get_weights())


def test_one_threshold_big_redundant_layers_take_most():
    model = model3()
    plan = global_plan(model, 0.9)
    a = plan.allocation
    assert a["fc"].sparsity > a["head"].sparsity
    kernels = {name: np.abs(model.get_layer(name).kernel.numpy()) for name in ("conv", "fc",
                                                                               "head")}
    for name, values in kernels.items():
        kept = np.sort(values.ravel())[::-1][: a[name].kept]
        if a[name].kept < values.size:
            assert kept.min() >= a.threshold
            assert np.sum(values <= a.threshold) >= values.size - a[name].kept
    text = str(a)
    assert "global:" in text and "kept %" in text
    assert a.to_dict()["layers"][1]["name"] == "fc"


def test_excluded_layers_stay_dense_and_out_of_the_count():
    plan = global_plan(model3(), 0.8, exclude=["head"])
    a = plan.allocation
    assert a["head"].excluded and a["head"].sparsity == 0.0
    assert plan.rules[-1].method == "skip"
    assert by_count(a) == pytest.approx(0.8, abs=1e-4)
    assert a.weights == 36 + 2704 * 32


def test_the_plan_serialises_like_any_plan():
    plan = global_plan(model3(), 0.7, schedule=kprune.Schedule(kind="constant"))
    again = PruningPlan.from_json(plan.to_json())
    assert again.rules == plan.rules
    assert all(r.schedule.kind == "constant" for r in plan.rules if r.method != "skip")


@pytest.mark.slow
def test_apply_and_fit_reach_the_allocated_sparsities(mnist_small):
    (x, y), _ = mnist_small
    model = model3()
    plan = global_plan(model, 0.85)
    pruned = kprune.apply(model, plan, steps_per_epoch=16, epochs=1)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x[:1024], y[:1024], batch_size=64, epochs=1, verbose=0,
               callbacks=kprune.callbacks())
    report = kprune.sparsity_report(kprune.strip(pruned), plan=plan, strict=True)
    for row in plan.allocation.rows:
        assert report[row.name].achieved == pytest.approx(row.sparsity, abs=1e-3)
    assert report.sparsity == pytest.approx(0.85, abs=1e-3)


# -- bad input --------------------------------------------------------------------


def test_bad_input_is_refused_and_the_model_unchanged():
    model = model3()
    before = weights_of(model)
    with pytest.raises(ValueError, match=r"`target` must be a fraction in \[0, 1\)"):
        global_plan(model, 1.0)
    with pytest.raises(ValueError, match=r"names 'haed'.*Did you mean 'head'"):
        global_plan(model, 0.5, exclude=["haed"])
    with pytest.raises(ValueError, match="leaves no layer to prune"):
        global_plan(model, 0.5, exclude=["conv", "fc", "head"])
    with pytest.raises(TypeError, match="`schedule` must be a kprune.Schedule"):
        global_plan(model, 0.5, schedule="cubic")
    bare = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()], name="bare")
    with pytest.raises(ValueError, match="Model 'bare' has no prunable layer"):
        global_plan(bare, 0.5)
    np.testing.assert_equal(before, model.get_weights())


def test_a_target_that_empties_a_layer_is_refused():
    model = model3()
    head = model.get_layer("head")
    head.kernel.assign(np.full(head.kernel.shape, 1e-9, np.float32))
    with pytest.raises(ValueError, match=r"removes every weight of layer\(s\) \['head'\]"):
        global_plan(model, 0.99)
