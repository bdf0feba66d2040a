"""Sensitivity scan: one layer pruned at a time, on a two-layer model and real MNIST."""

import json

import numpy as np
import pytest

from kprune import LayerRule, PruningPlan, sensitivity
from kprune.engines.tfkeras import loader
from kprune.methods.workflows import Trainer

keras = loader.keras


def two_layer():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="fc"),
            keras.layers.Dense(10, name="head"),
        ],
        name="two_layer",
    )


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_same(before, model):
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.fixture(scope="module")
def trained(mnist_small):
    (x, y), _ = mnist_small
    keras.utils.set_random_seed(0)
    model = two_layer()
    Trainer(x, y, batch_size=64).fit(model, 1)
    return model


@pytest.fixture(scope="module")
def untrained():
    """The two-layer model as built (seeded, never fit): what the fast tier's bad-input
    tests refuse works on, so that tier trains nothing."""
    keras.utils.set_random_seed(0)
    return two_layer()


@pytest.fixture(scope="module")
def validation(mnist_small):
    _, (x_test, y_test) = mnist_small
    return x_test, y_test


@pytest.fixture(scope="module")
def result(trained, validation):
    before = weights_of(trained)
    result = sensitivity.scan(trained, *validation, sparsities=(0.0, 0.5, 0.8, 0.95),
                              progress=False)
    assert_same(before, trained)
    return result


@pytest.mark.slow
def test_extremes_dense_at_zero_and_collapse_near_one(result, trained, validation):
    from kprune.methods.workflows import accuracy

    dense = accuracy(trained, *validation)
    assert result.dense_accuracy == dense
    assert result.layers == ["fc", "head"]
    for layer in result.layers:
        curve = dict(result.curve(layer))
        assert curve[0.0] == dense
        assert curve[0.95] < dense - 0.05, layer
        assert curve[0.5] > curve[0.95], layer
    assert dict(result.curve("head"))[0.95] < dense - 0.3
    assert result.examples == 2000 and result.finetune_epochs == 0


@pytest.mark.slow
def test_table_dict_and_plan(result, trained, tmp_path):
    text = str(result)
    assert text.startswith("accuracy with one layer pruned (dense 0.")
    assert "fc" in text and "head" in text and "0.95" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert len(data["rows"]) == 8
    assert data["rows"][0]["drop_pp"] == 0.0

    plan = result.to_plan(max_drop_pp=100.0)
    assert [r.target for r in plan.rules] == [0.95, 0.95]
    head_drop = {p.sparsity: p.drop_pp for p in result.rows if p.layer == "head"}
    budget = head_drop[0.5] + 1e-9
    chosen = result.to_plan(max_drop_pp=budget).rules[1]
    assert chosen.match == "head" and chosen.target >= 0.5
    assert result.max_sparsity("head", budget) == chosen.target
    # a budget both layers meet at 0.5, one of them exactly (a drop equal to the budget is
    # within it): each resolves to unstructured at a ladder sparsity
    half = {p.layer: p.drop_pp for p in result.rows if p.sparsity == 0.5}
    both = max(*half.values(), 0.0)
    resolved = result.to_plan(max_drop_pp=both).resolve(trained)
    for layer in result.layers:
        assert resolved[layer].method == "unstructured", layer
        assert resolved[layer].target == result.max_sparsity(layer, both), layer
        assert resolved[layer].target in (0.5, 0.8, 0.95), layer
    assert PruningPlan.from_json(plan.to_json()) == plan


@pytest.mark.slow
def test_a_layer_failing_the_budget_at_once_is_skipped(trained, validation):
    result = sensitivity.scan(trained, *validation, sparsities=(0.95,), layers=["head"],
                              progress=False)
    plan = result.to_plan(max_drop_pp=0.5)
    assert plan.rules == (LayerRule("head", method="skip", note=plan.rules[0].note),)
    assert "over 0.5 pp drop" in plan.rules[0].note


@pytest.mark.slow
def test_progress_prints_one_line_per_layer(trained, validation, capsys):
    x, y = validation
    lines = []
    sensitivity.scan(trained, x[:500], y[:500], sparsities=(0.5,), progress=lines.append)
    assert len(lines) == 3
    assert lines[0].startswith("sensitivity: dense accuracy")
    assert lines[1].startswith("sensitivity [1/2] fc (25,088 weights): 0.5 0.")
    assert lines[2].startswith("sensitivity [2/2] head (320 weights)")
    sensitivity.scan(trained, x[:500], y[:500], sparsities=(0.5,), layers="fc")
    printed = capsys.readouterr().err.splitlines()  # kprune.progress: lines on stderr
    assert printed[0] == "sensitivity: 1/1 (fc, 25,088 weights)"


@pytest.mark.slow
def test_plot_is_a_figure_and_writes_a_png(result, tmp_path):
    fig = result.plot(tmp_path / "sens.png")
    assert (tmp_path / "sens.png").read_bytes()[:4] == b"\x89PNG"
    axis = fig.axes[0]
    assert [line.get_label() for line in axis.get_lines()] == ["fc", "head", "dense"]


@pytest.mark.slow
def test_plot_marks_the_budget_and_the_chosen_sparsities(result):
    budget = 2.0
    lines = result.plot(max_drop_pp=budget).axes[0].get_lines()
    stars = [line for line in lines if line.get_marker() == "*"]
    chosen = {layer: result.max_sparsity(layer, budget) for layer in result.layers}
    assert sorted(star.get_xdata()[0] for star in stars) == pytest.approx(
        sorted(100 * s for s in chosen.values() if s > 0))
    budget_line = next(line for line in lines if line.get_label().startswith("budget"))
    assert budget_line.get_ydata()[0] == pytest.approx(100 * result.dense_accuracy - budget)


@pytest.mark.slow
def test_save_writes_table_json_plot_and_plan(result, tmp_path):
    paths = result.save(tmp_path / "out", max_drop_pp=2.0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "sensitivity.json", "sensitivity.png", "sensitivity.txt", "suggested_plan.yaml"]
    assert PruningPlan.load(paths["plan"]) == result.to_plan(2.0)
    data = json.loads(paths["json"].read_text())
    assert data["max_drop_pp"] == 2.0 and len(data["plan"]["rules"]) == 2
    assert paths["table"].read_text() == str(result) + "\n"


@pytest.mark.slow
def test_optional_finetune_keeps_the_layer_pruned(trained, validation, mnist_small):
    (x, y), _ = mnist_small
    before = weights_of(trained)
    tuned = sensitivity.scan(trained, *validation, sparsities=(0.95,), layers=["head"],
                             finetune=Trainer(x[:1000], y[:1000], batch_size=64),
                             progress=False)
    plain = sensitivity.scan(trained, *validation, sparsities=(0.95,), layers=["head"],
                             progress=False)
    assert tuned.finetune_epochs == 1
    assert tuned.rows[0].accuracy > plain.rows[0].accuracy
    assert_same(before, trained)


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize("ladder", [(0.5, 1.0), (-0.1, 0.5), (0.5, "x")])
def test_a_ladder_outside_zero_one_is_refused(untrained, validation, ladder):
    before = weights_of(untrained)
    with pytest.raises(ValueError, match=r"`sparsities` must hold fractions in \[0, 1\)"):
        sensitivity.scan(untrained, *validation, sparsities=ladder, progress=False)
    assert_same(before, untrained)


def test_a_model_without_prunable_layers_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU(name="relu")], name="bare")
    x, y = np.zeros((3, 4), np.float32), np.zeros(3)
    with pytest.raises(ValueError, match=r"Model 'bare' has no prunable layer.*\['ReLU'\]"):
        sensitivity.scan(model, x, y, progress=False)


def test_other_bad_input(untrained, validation):
    x, y = validation
    before = weights_of(untrained)
    with pytest.raises(ValueError, match=r"names 'fc1'.*Did you mean 'fc'"):
        sensitivity.scan(untrained, x, y, layers=["fc1"], progress=False)
    with pytest.raises(ValueError, match="must not be empty"):
        sensitivity.scan(untrained, x, y, sparsities=(), progress=False)
    with pytest.raises(ValueError, match="same number of examples"):
        sensitivity.scan(untrained, x, y[:10], progress=False)
    with pytest.raises(TypeError, match="`progress` must be True, False or a callable"):
        sensitivity.scan(untrained, x, y, progress="yes")
    with pytest.raises(TypeError, match="`finetune` must be None or a kprune"):
        sensitivity.scan(untrained, x, y, finetune=(x, y), progress=False)
    assert_same(before, untrained)
    result = sensitivity.SensitivityResult(0.9, (0.5,), ())
    with pytest.raises(ValueError, match="`max_drop_pp` must be a non-negative"):
        result.to_plan(max_drop_pp=-1)
