"""apply(): a wrapped clone that follows the plan and never touches the user's model."""

import numpy as np
import pytest

import kprune
from kprune import LayerRule, PruningPlan
from kprune.engines.tfkeras import loader

from helpers import keras, nested_model, tiny_cnn, tiny_mlp


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_same(before, model):
    after = model.get_weights()
    assert len(before) == len(after)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def wrappers(model):
    return {
        path: layer
        for path, layer in loader.iter_layers(model)
        if isinstance(layer, loader.PruneLowMagnitude)
    }


def test_apply_wraps_as_planned_and_shares_nothing():
    model = tiny_cnn()
    pruned = kprune.apply(model, PruningPlan.default(), steps_per_epoch=5, epochs=1)
    wrapped = wrappers(pruned)
    assert sorted(wrapped) == ["conv_a", "conv_b", "dense_a"]
    assert wrapped["conv_b"].sparsity_m_by_n == (2, 4)
    assert wrapped["conv_a"].sparsity_m_by_n is None
    original_layers = {id(layer) for layer in model.layers}
    for path, layer in loader.iter_layers(pruned):
        inner = getattr(layer, "layer", layer)
        assert id(inner) not in original_layers, path


def test_training_the_pruned_model_leaves_the_original_bit_identical():
    model = tiny_mlp()
    before = weights_of(model)
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    pruned = kprune.apply(model, PruningPlan.default(), steps_per_epoch=4, epochs=1)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=kprune.callbacks())
    assert_same(before, model)
    assert not wrappers(model)


def test_one_four_is_passed_to_tfmot_as_three_zeros_of_four():
    plan = PruningPlan([LayerRule("fc1", method="m_by_n", n=1, m=4)])
    pruned = kprune.apply(tiny_mlp(), plan, steps_per_epoch=2, epochs=1)
    assert wrappers(pruned)["fc1"].sparsity_m_by_n == (3, 4)


def test_nested_models_are_wrapped_inside():
    model = nested_model()
    before = weights_of(model)
    plan = PruningPlan([LayerRule("block/fc", target=0.5), LayerRule("stem", target=0.5)])
    pruned = kprune.apply(model, plan, steps_per_epoch=3, epochs=1)
    assert sorted(wrappers(pruned)) == ["block/fc", "stem"]
    x = np.random.default_rng(1).random((24, 8), dtype=np.float32)
    y = np.zeros(24, dtype=np.int64)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=kprune.callbacks())
    assert_same(before, model)
    report = kprune.sparsity_report(kprune.strip(pruned))
    assert report["block/fc"].achieved == pytest.approx(0.5, abs=0.01)


def test_keras3_model_is_refused_with_advice_where_only_tfmot_prunes():
    import keras as keras3

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match=r"Keras 3 object.*taken by kprune.apply.*"
                                        r"import tf_keras as keras"):
        loader.check_model(model)  # what every tf_keras-only part checks first
    twin = kprune.copy_model(model)  # copy_model takes Keras 3 models
    assert type(twin).__module__.startswith("keras") and twin.layers[0] is not model.layers[0]


def test_subclassed_model_is_rejected_with_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(4)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    before = weights_of(net)
    with pytest.raises(TypeError, match=r"subclassed model.*Sequential or functional"):
        kprune.apply(net, steps_per_epoch=1, epochs=1)
    assert_same(before, net)


@pytest.mark.parametrize("thing", ["model.keras", None, keras.layers.Dense(3)])
def test_not_a_model_is_rejected(thing):
    with pytest.raises(TypeError, match="must be a tf_keras Sequential or functional model"):
        kprune.apply(thing, steps_per_epoch=1, epochs=1)


def test_errors_leave_the_model_unchanged():
    model = tiny_cnn()
    before = weights_of(model)
    bad_plans = [
        (PruningPlan([LayerRule("conv_a", method="m_by_n")]), "cannot take 2:4"),
        (PruningPlan([LayerRule("conv_x")]), "Did you mean 'conv_b' or 'conv_a'"),
        (PruningPlan([LayerRule("conv_b", schedule=kprune.Schedule(end=3))]), "after the last"),
    ]
    for plan, message in bad_plans:
        with pytest.raises(ValueError, match=message):
            kprune.apply(model, plan, steps_per_epoch=1, epochs=1)
    with pytest.raises(TypeError, match="must be a kprune.PruningPlan"):
        kprune.apply(model, {"rules": []}, steps_per_epoch=1, epochs=1)
    assert_same(before, model)
    assert model.layers[0].name == "conv_a"
