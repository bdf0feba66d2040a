"""kprune.structural importance: Taylor scores and cost-weighted global budgets."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kprune import measure, models, structural
from kprune.engines.tfkeras import loader
from tests.fisher_reference import assert_same_scores, per_example_fisher

from helpers import tiny_cnn

keras = loader.keras
L = keras.layers


def _mlp(classes=2):
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="tanh", name="fc"),
                              L.Dense(classes, name="head")])
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


def test_fisher_scores_are_the_squared_mask_gradient_per_example_on_the_models_own_labels():
    """Per example, d loss / d m of a mask scaling a neuron's kernel column (finite
    differences, the model's top class as the label), squared and summed."""
    model = _mlp()
    x = np.random.default_rng(2).normal(size=(6, 4)).astype("float32")
    kernel, bias = model.get_layer("fc").get_weights()
    eps = 1e-3
    expected = np.zeros(3)
    for row in x:
        one = row[None]
        label = np.argmax(np.asarray(model(one)), axis=-1)
        for j in range(3):
            losses = []
            for scale in (1 + eps, 1 - eps):
                scaled = kernel.copy()
                scaled[:, j] *= scale
                model.get_layer("fc").set_weights([scaled, bias])
                losses.append(_loss(model, one, label))
            model.get_layer("fc").set_weights([kernel, bias])
            expected[j] += ((losses[0] - losses[1]) / (2 * eps)) ** 2
    scores = structural.group_scores(model, "fisher", data=x)["fc"]
    np.testing.assert_allclose(scores, expected, rtol=1e-2, atol=1e-7)


def test_fisher_needs_calibration_inputs_of_the_models_shape_and_leaves_the_model_as_it_was():
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"criterion='fisher' scores channels on calibration "
                                         r"inputs: pass data=x .*Received: data=None"):
        structural.prune(model, 0.5, criterion="fisher")
    with pytest.raises(ValueError, match=r"Argument `calibration` must hold batches shaped "
                                         r"like the model's input .*Received: a batch of "
                                         r"shape \(4, 5\)"):
        structural.prune(model, 0.5, criterion="fisher", data=np.zeros((4, 5), "float32"))
    with pytest.raises(ValueError, match="Argument `data` is only used by criterion='taylor' "
                                         "and 'fisher'"):
        structural.select(model, 0.5, criterion="l1", data=np.zeros((4, 4), "float32"))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


def _keras3_transformer():
    import keras as keras3

    from tests.test_structural_heads import _tokens, text_transformer

    keras3.utils.set_random_seed(0)
    return text_transformer(keras3), _tokens(5)


def _tf_keras_cnn():
    keras.utils.set_random_seed(0)
    return tiny_cnn(), np.random.default_rng(0).random((5, 8, 8, 1)).astype("float32")


def _mlp_one_large_batch():  # a batch of 70 examples of varied labels: taken 64, then 6
    return _mlp(classes=5), [np.random.default_rng(3).normal(size=(70, 4)).astype("float32")]


@pytest.mark.parametrize("build", [_keras3_transformer, _tf_keras_cnn, _mlp_one_large_batch],
                         ids=["keras3-heads-and-neurons", "tf_keras-channels", "large-batch"])
def test_fisher_scores_taken_a_batch_at_a_time_equal_those_taken_one_example_at_a_time(build):
    model, data = build()
    found = structural.group_scores(model, "fisher", data=data)
    x = data[0] if isinstance(data, list) else data
    assert_same_scores(found, per_example_fisher(model, x))


ON_JAX_FISHER = """
import json, sys
import keras, numpy as np
from kprune import structural
from tests.test_structural_heads import patch_transformer

weights = np.load(sys.argv[1])
model = patch_transformer(keras)
model.set_weights([weights[str(i)] for i in range(len(model.weights))])
found = structural.group_scores(model, "fisher", data=weights["x"])
print(json.dumps({"backend": keras.backend.backend(),
                  "found": {k: v.tolist() for k, v in found.items()}}))
"""


@pytest.mark.slow
def test_batched_fisher_scores_on_jax_equal_those_one_example_at_a_time(tmp_path, jax_env):
    """jax.vmap of jax.grad, against TensorFlow's eager gradients example by example (the
    same weights and calibration inputs): heads, neurons and a stream through attention."""
    import keras as keras3

    from tests.test_structural_heads import patch_transformer

    keras3.utils.set_random_seed(0)
    model = patch_transformer(keras3)
    x = np.random.default_rng(0).normal(size=(6, 9, 12)).astype("float32")
    np.savez(tmp_path / "weights.npz", x=x,
             **{str(i): w for i, w in enumerate(model.get_weights())})
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", ON_JAX_FISHER, str(tmp_path / "weights.npz")],
                         capture_output=True, text=True, timeout=300, cwd=root, env=jax_env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    found = {k: np.array(v) for k, v in out["found"].items()}
    assert_same_scores(found, per_example_fisher(model, x))


def test_heads_and_channels_each_get_their_own_budget():
    import keras as keras3

    from tests.test_structural_heads import _tokens, text_transformer

    keras3.utils.set_random_seed(0)
    model = text_transformer(keras3)
    keep = structural.select(model, {"heads": 0.5, "channels": 0.25}, criterion="fisher",
                             data=_tokens(8))
    kept_heads = [len(keep[g]) for g in ("mha_1/heads", "mha_2/heads")]
    assert sum(kept_heads) == 4 and min(kept_heads) >= 1  # raw Fisher: [1, 3] here
    assert len(keep["ffn_up_1"]) + len(keep["ffn_up_2"]) == 256 - 64
    text = str(keep)
    assert "fraction 0.25 (global) of the prunable budget: removed 64 of 256 prunable " \
           "channels (25.0%)" in text
    assert "fraction 0.5 (global) of the prunable budget: removed 4 of 8 prunable heads " \
           "(50.0%)" in text
    only_heads = structural.select(model, {"heads": 0.5}, scope="layer")
    assert len(only_heads["ffn_up_1"]) == 128 and len(only_heads["mha_1/heads"]) == 2


@pytest.mark.parametrize("fraction, message", [
    ({"head": 0.5}, r"Argument `fraction` as a dict gives a fraction per kind of unit, keys "
                    r"\['channels', 'heads'\]\. Did you mean 'heads'\?"),
    ({}, r"Argument `fraction` as a dict .*Received: fraction=\{\}"),
    ({"heads": 1.5}, r"Argument `fraction\['heads'\]` must be a fraction in \[0, 1\)"),
])
def test_bad_fractions_per_unit_are_refused(fraction, message):
    with pytest.raises(ValueError, match=message):
        structural.select(_mlp(), fraction)


def test_fisher_ranks_globally_by_the_raw_loss_change_so_a_layer_that_matters_little_loses_most():
    """Kwon et al. 2022: Fisher scores estimate the loss change, comparable across layers,
    so the global budget is not spread by per-layer normalisation."""
    rng = np.random.default_rng(0)
    x = keras.Input((4,))
    branches = []
    for name in ("a", "b"):  # branch b barely reaches the output
        hidden = L.Dense(6, activation="tanh", name=name)(x)
        branches.append(L.Dense(3, name=f"{name}_out")(hidden))
    model = keras.Model(x, L.Add(name="logits")(branches))
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    kernel, bias = model.get_layer("b_out").get_weights()
    model.get_layer("b_out").set_weights([kernel * 1e-3, bias])
    data = rng.normal(size=(16, 4)).astype("float32")
    keep = structural.select(model, 0.5, criterion="fisher", data=data)
    # b keeps only the one it must; the one more it cannot give comes from a: the budget
    # (6 of 12) is met
    assert (len(keep["a"]), len(keep["b"])) == (5, 1)
    assert "removed 6 of 12 prunable channels (50.0%)" in str(keep)
    normed = structural.select(model, 0.5, criterion="l1")  # norms: each layer its share
    assert len(normed["b"]) > 1


def test_fisher_with_a_macs_budget_splits_it_between_heads_and_channels_keeping_most_importance():
    """Kwon et al. 2022's mask search: of every (heads kept, channels kept) within the MACs
    budget, each the most important first, the split keeping the most Fisher importance."""
    import keras as keras3

    from tests.test_structural_heads import _tokens, text_transformer

    keras3.utils.set_random_seed(0)
    model = text_transformer(keras3)
    x = _tokens(8)
    keep = structural.select(model, 0.5, criterion="fisher", data=x, cost="macs")
    scores = structural.group_scores(model, "fisher", data=x)
    costs = structural.channel_costs(model, "macs")
    kinds = {kind: [g for g in scores if g.endswith("/heads") == (kind == "heads")]
             for kind in ("heads", "channels")}
    values = {kind: np.sort(np.concatenate([scores[g] for g in groups]))[::-1]
              for kind, groups in kinds.items()}
    unit = {kind: costs[groups[0]] for kind, groups in kinds.items()}  # one cost per kind here
    budget = 0.5 * sum(len(values[k]) * unit[k] for k in values)
    best = max((values["heads"][:h].sum() + values["channels"][:c].sum(), h, c)
               for h in range(len(values["heads"]) + 1)
               for c in range(len(values["channels"]) + 1)
               if h * unit["heads"] + c * unit["channels"] <= budget * (1 + 1e-12))
    kept = {kind: sum(len(keep[g]) for g in groups) for kind, groups in kinds.items()}
    assert (kept["heads"], kept["channels"]) == best[1:] == (5, 93)  # 3 heads of 8 go
