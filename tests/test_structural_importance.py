"""kprune.structural importance: Taylor scores and cost-weighted global budgets."""

import numpy as np
import pytest

from kprune import _compat, measure, models, structural

keras = _compat.keras
L = keras.layers


def _mlp():
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="tanh", name="fc"),
                              L.Dense(2, name="head")])
    model.set_weights([rng.normal(size=w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


def _loss(model, x, y):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return float(loss(y, model(x)))


def test_taylor_scores_are_w_times_the_gradient_checked_by_finite_differences():
    model = _mlp()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 2, 8)
    kernel, bias = model.get_layer("fc").get_weights()
    expected = np.zeros(3)
    eps = 1e-2
    for i in range(4):
        for j in range(3):
            plus, minus = kernel.copy(), kernel.copy()
            plus[i, j] += eps
            minus[i, j] -= eps
            model.get_layer("fc").set_weights([plus, bias])
            up = _loss(model, x, y)
            model.get_layer("fc").set_weights([minus, bias])
            down = _loss(model, x, y)
            expected[j] += abs(kernel[i, j] * (up - down) / (2 * eps))
    model.get_layer("fc").set_weights([kernel, bias])
    scores = structural.group_scores(model, "taylor", data=(x, y))
    np.testing.assert_allclose(scores["fc"], expected, rtol=2e-2)


@pytest.mark.slow
def test_taylor_prunes_an_application_model_to_a_runnable_smaller_one():
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                           weights=None, classes=10)
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 32, 32, 3)).astype("float32"), rng.integers(0, 10, 4)
    smaller = structural.prune(model, 0.5, criterion="taylor", data=(x, y))
    assert smaller.count_params() < 0.6 * model.count_params()
    assert smaller(x).shape == (4, 10)


def test_a_channel_costs_its_share_of_every_layer_it_takes_part_in():
    model = models.build("seed-cnn")
    macs = measure.count_macs(model, by_layer=True)
    costs = structural.channel_costs(model)
    assert costs["conv1"] == pytest.approx(macs["conv1"] / 32 + macs["conv2"] / 32)
    assert costs["conv2"] == pytest.approx(macs["conv2"] / 64 + macs["fc1"] / 64)
    assert costs["fc1"] == pytest.approx(macs["fc1"] / 1024 + macs["head"] / 1024)
    params = structural.channel_costs(model, "params")
    # a share of each layer's whole count, biases included
    assert params["conv1"] == pytest.approx((5 * 5 * 1 * 32 + 32) / 32 + (5 * 5 * 32 * 64 + 64) / 32)


def _seed_cnn_with_spread_neurons():
    """The seed CNN, its fc1 neurons' norms spread widely (as training leaves them)."""
    keras.utils.set_random_seed(0)
    model = models.build("seed-cnn")
    kernel, bias = model.get_layer("fc1").get_weights()
    spread = np.exp(np.random.default_rng(0).normal(0.0, 1.5, kernel.shape[1]))
    model.get_layer("fc1").set_weights([kernel * spread.astype("float32"), bias])
    return model


def test_a_mac_weighted_global_budget_spends_it_where_the_compute_is():
    model = _seed_cnn_with_spread_neurons()
    counted = structural.select(model, 0.5)
    weighted = structural.select(model, 0.5, cost="macs")
    costs = structural.channel_costs(model)
    sizes = {"conv1": 32, "conv2": 64, "fc1": 1024}
    spent = sum((sizes[g] - len(weighted[g])) * costs[g] for g in sizes)
    total = sum(sizes[g] * costs[g] for g in sizes)
    assert abs(spent - 0.5 * total) <= max(costs.values())  # within one channel's cost
    removed = {g: sizes[g] - len(weighted[g]) for g in sizes}
    assert removed["conv2"] > sizes["conv2"] - len(counted["conv2"])
    macs = measure.count_macs
    assert macs(structural.remove_units(model, weighted)) < 0.8 * macs(
        structural.remove_units(model, counted))
    # with scope="layer" every group loses the same fraction whatever the cost
    assert ({g: len(v) for g, v in structural.select(model, 0.5, scope="layer",
                                                     cost="macs").items()}
            == {"conv1": 16, "conv2": 32, "fc1": 512})


def test_bad_criterion_cost_and_data_are_refused_with_the_fix():
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"criterion='taylor'.*pass data=\(x, y\)"):
        structural.prune(model, 0.5, criterion="taylor")
    with pytest.raises(ValueError, match=r"pass data=\(x, y\).*array of shape \(2, 4\)"):
        structural.select(model, 0.5, criterion="taylor", data=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="only used by criterion='taylor'"):
        structural.select(model, 0.5, data=(np.zeros((2, 4)), np.zeros(2)))
    with pytest.raises(ValueError, match=r"cost.*'macs', 'params'"):
        structural.select(model, 0.5, cost="flops")
    with pytest.raises(ValueError, match=r"cost.*'macs', 'params'"):
        structural.channel_costs(model, "latency")
    for before_w, after_w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(before_w, after_w)
