"""Workflows: one-shot, gradual, iterative and rewind on a tiny MLP and real MNIST images."""

import numpy as np
import pytest

from kprune import LayerRule, PruningPlan, workflows
from kprune.engines.tfkeras import loader
from kprune.methods.workflows import FixedMask, Trainer

from helpers import subclassed_dense

keras = loader.keras


def mlp():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="fc"),
            keras.layers.Dense(10, name="head"),
        ],
        name="mlp",
    )


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_same(before, model):
    after = model.get_weights()
    assert len(before) == len(after)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def kernel(model, name):
    return model.get_layer(name).kernel.numpy()


@pytest.fixture(scope="module")
def trainer(mnist_small):
    (x_train, y_train), (x_test, y_test) = mnist_small
    return Trainer(x_train, y_train, validation_data=(x_test, y_test), batch_size=64)


@pytest.fixture(scope="module")
def trained(trainer):
    keras.utils.set_random_seed(0)
    model = mlp()
    trainer.fit(model, 1)
    return model


@pytest.fixture(scope="module")
def dense_accuracy(trained, trainer):
    return trainer.evaluate(trained)


@pytest.fixture(scope="module")
def untrained():
    """The MLP as built (seeded, never fit): what the fast tier's bad-input tests refuse
    works on, so that tier trains nothing."""
    keras.utils.set_random_seed(0)
    return mlp()


# -- workflows ---------------------------------------------------------------------


@pytest.mark.slow
def test_one_shot_reaches_the_target_and_leaves_the_model_alone(trained, trainer,
                                                                 dense_accuracy):
    before = weights_of(trained)
    result = workflows.one_shot(trained, 0.8, trainer=trainer, finetune_epochs=1)
    assert_same(before, trained)
    assert result.workflow == "one_shot"
    assert [r.stage for r in result.history] == ["dense", "finetune"]
    assert result.dense_accuracy == dense_accuracy
    assert result.sparsity["fc"] == pytest.approx(0.8, abs=0.005)
    assert result.sparsity["head"] == 0.0
    assert np.mean(kernel(result.model, "fc") == 0) == pytest.approx(0.8, abs=0.005)
    assert not any(isinstance(layer, loader.PruneLowMagnitude)
                   for layer in result.model.layers)
    assert result.report().ok
    assert result.accuracy > 0.8


@pytest.mark.slow
def test_gradual_raises_sparsity_on_the_cubic_schedule(trainer):
    keras.utils.set_random_seed(1)
    model = mlp()
    result = workflows.gradual(model, 0.7, trainer=trainer, epochs=2)
    first, second = (r.sparsity["fc"] for r in result.history[1:])
    assert result.history[0].sparsity["fc"] == 0.0
    assert 0.3 < first < 0.7
    assert second == pytest.approx(0.7, abs=0.005)
    assert result.final.overall == pytest.approx(0.7 * 25088 / 25408, abs=0.005)
    assert np.mean(kernel(result.model, "fc") == 0) == pytest.approx(0.7, abs=0.005)
    assert result.accuracy > 0.8


@pytest.mark.slow
def test_gradual_with_recovery_epochs_holds_the_target_at_the_end(trainer):
    keras.utils.set_random_seed(1)
    (x, y), val = (trainer.x[:1024], trainer.y[:1024]), trainer.validation_data
    small = Trainer(x, y, validation_data=val, batch_size=64)
    result = workflows.gradual(mlp(), 0.6, trainer=small, epochs=2, recover_epochs=1)
    assert [r.sparsity["fc"] for r in result.history[1:]] == pytest.approx([0.6, 0.6],
                                                                          abs=0.005)


@pytest.mark.slow
def test_iterative_climbs_the_ladder_to_the_target(trained, trainer):
    before = weights_of(trained)
    result = workflows.iterative(trained, 0.8, trainer=trainer, rounds=2, ladder="linear")
    assert_same(before, trained)
    assert [r.round for r in result.history] == [0, 1, 2]
    assert [r.sparsity["fc"] for r in result.history] == pytest.approx([0, 0.4, 0.8],
                                                                       abs=0.005)
    assert result.stop_round == 2
    assert result.note == "reached the target at round 2 of 2"
    assert np.mean(kernel(result.model, "fc") == 0) == pytest.approx(0.8, abs=0.005)


@pytest.mark.slow
def test_iterative_stops_at_the_floor_and_keeps_the_last_good_round(trained, trainer,
                                                                    dense_accuracy):
    floor = dense_accuracy - 0.02
    result = workflows.iterative(trained, 0.99, trainer=trainer, rounds=2,
                                 ladder=(0.1, 1.0), accuracy_floor=floor)
    assert result.stop_round == 2
    assert result.note.startswith("stopped at round 2 of 2: validation accuracy")
    assert "below the floor" in result.note and "kept round 1" in result.note
    assert result.history[-2].sparsity["fc"] == pytest.approx(0.99, abs=0.005)
    assert result.history[-2].val_accuracy < floor
    kept = result.final
    assert kept.stage == "kept" and kept.round == 1
    assert kept.sparsity["fc"] == pytest.approx(0.099, abs=0.005)
    assert kept.val_accuracy >= floor
    assert np.mean(kernel(result.model, "fc") == 0) == pytest.approx(0.099, abs=0.005)


@pytest.mark.slow
def test_rewind_to_init_keeps_the_mask_exact_through_retraining(trainer):
    keras.utils.set_random_seed(2)
    fresh = mlp()
    init = weights_of(fresh)
    result = workflows.rewind(fresh, 0.75, trainer=trainer, epochs=1)
    assert_same(init, fresh)
    assert [r.stage for r in result.history] == ["dense", "prune", "rewind", "retrain"]
    assert sorted(result.masks) == ["fc"] and sorted(result.masks["fc"]) == ["kernel"]
    keep = result.masks["fc"]["kernel"]
    assert 1 - keep.mean() == pytest.approx(0.75, abs=0.005)
    final = kernel(result.model, "fc")
    assert np.all(final[~keep] == 0.0)
    assert np.count_nonzero(final[keep]) == keep.sum()
    assert not np.array_equal(final[keep], init[0][keep])  # retrained
    rewound = result.history[2]
    assert rewound.sparsity["fc"] == pytest.approx(0.75, abs=0.005)
    assert result.final.sparsity["fc"] == rewound.sparsity["fc"]
    assert result.accuracy > 0.7


@pytest.mark.slow
def test_rewind_to_an_early_epoch_and_to_a_checkpoint(trainer):
    (x, y), val = (trainer.x[:1024], trainer.y[:1024]), trainer.validation_data
    small = Trainer(x, y, validation_data=val, batch_size=64)
    keras.utils.set_random_seed(3)
    fresh = mlp()
    late = workflows.rewind(fresh, 0.5, trainer=small, epochs=2, to=1, retrain_epochs=1)
    assert "weights after epoch 1" in late.note
    assert np.all(kernel(late.model, "fc")[~late.masks["fc"]["kernel"]] == 0.0)
    checkpoint = [np.full_like(w, 0.01) for w in fresh.get_weights()]
    given = workflows.rewind(fresh, 0.5, trainer=small, epochs=1, to=checkpoint)
    assert given.history[2].note == "rewound to the given checkpoint, mask kept"
    assert np.all(kernel(given.model, "fc")[~given.masks["fc"]["kernel"]] == 0.0)


@pytest.mark.slow
def test_a_fit_callable_drives_the_same_workflow(mnist_small):
    (x_train, y_train), (x_test, y_test) = mnist_small
    calls = []

    def fit(model, epochs, callbacks):
        calls.append(epochs)
        return model.fit(x_train[:640], y_train[:640], batch_size=64, epochs=epochs,
                         callbacks=callbacks, verbose=0)

    trainer = Trainer(fit=fit, steps_per_epoch=10, validation_data=(x_test, y_test))
    keras.utils.set_random_seed(4)
    result = workflows.one_shot(mlp(), 0.5, trainer=trainer, finetune_epochs=2)
    assert calls == [2]
    assert [r.epoch for r in result.history] == [0, 1, 2]
    assert result.sparsity["fc"] == pytest.approx(0.5, abs=0.005)


def test_fixed_mask_keeps_pruned_weights_exactly_zero():
    keras.utils.set_random_seed(5)
    model = mlp()
    rng = np.random.default_rng(0)
    keep = rng.random((784, 32)) > 0.6
    x = rng.random((128, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = kernel(model, "fc")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[FixedMask({"fc": keep})])
    after = kernel(model, "fc")
    assert np.all(after[~keep] == 0.0)
    assert not np.array_equal(after[keep], start[keep])
    with pytest.raises(ValueError, match=r"mask for layer 'fc' \(kernel\) has shape \(3, 3\)"):
        FixedMask({"fc": np.ones((3, 3))}).set_model(model)
    with pytest.raises(ValueError, match="which has no prunable weight"):
        FixedMask({"flatten": np.ones(3)}).set_model(model)
    with pytest.raises(ValueError, match="mask for weight 'bias' of layer 'fc'"):
        FixedMask({"fc": {"bias": np.ones(32)}}).set_model(model)


def test_fixed_mask_refuses_a_subclassed_tf_keras_model_saying_what_to_do():
    model = subclassed_dense()
    with pytest.raises(ValueError, match=r"^FixedMask cannot mask model 'net': tfmot cannot "
                       r"prune a subclassed tf_keras model\. Build it with the Sequential or "
                       r"functional API, or with Keras 3 \(import keras\)[^\n]*class Net$"):
        FixedMask({"fc": np.ones((3, 3))}).set_model(model)


# -- plans -------------------------------------------------------------------------


def test_a_float_target_prunes_everything_but_the_head():
    resolved = workflows.target_plan(0.9).resolve(mlp())
    assert resolved["fc"].method == "unstructured" and resolved["fc"].target == 0.9
    assert resolved["head"].method == "skip" and resolved["head"].reason == "classifier head"
    plan = PruningPlan([LayerRule("head", target=0.3)])
    assert workflows.as_plan(plan) is plan
    assert sorted(workflows.WORKFLOWS) == ["gradual", "iterative", "one_shot", "rewind"]


# -- bad input: clear errors, model unchanged -------------------------------------


def test_accuracy_floor_above_the_dense_accuracy_is_refused(untrained, trainer):
    before = weights_of(untrained)
    floor = min(1.0, trainer.evaluate(untrained) + 0.01)
    with pytest.raises(ValueError, match=r"`accuracy_floor` \(0\.\d+\) is above the dense "
                                         r"model's validation accuracy"):
        workflows.iterative(untrained, 0.5, trainer=trainer, rounds=2, accuracy_floor=floor)
    assert_same(before, untrained)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rounds=0), r"`rounds` must be a positive integer.*Received: rounds=0"),
        (dict(rounds=2, ladder=(0.5, 1.5)), r"`ladder` must be non-decreasing fractions"),
        (dict(rounds=2, ladder=(1.0,)), r"one fraction per round \(2\)"),
        (dict(rounds=2, ladder="steep"), r"`ladder` must be 'cubic', 'linear'"),
        (dict(rounds=2, accuracy_floor=1.5), r"`accuracy_floor` must be a validation"),
        (dict(rounds=2, epochs_per_round=0), r"`epochs_per_round` must be a positive"),
    ],
)
def test_iterative_bad_arguments(untrained, trainer, kwargs, message):
    before = weights_of(untrained)
    with pytest.raises(ValueError, match=message):
        workflows.iterative(untrained, 0.5, trainer=trainer, **kwargs)
    assert_same(before, untrained)


def test_accuracy_floor_needs_validation_data(untrained, mnist_small):
    (x, y), _ = mnist_small
    with pytest.raises(ValueError, match="needs a trainer with `validation_data`"):
        workflows.iterative(untrained, 0.5, trainer=Trainer(x, y), rounds=1,
                            accuracy_floor=0.5)


def test_rewinding_to_a_checkpoint_of_other_shapes_is_refused(untrained, trainer):
    before = weights_of(untrained)
    wrong = [np.zeros((784, 16), np.float32)] + weights_of(untrained)[1:]
    with pytest.raises(ValueError, match=r"does not match the model: array 0 \(fc/kernel.*"
                                         r"shape \(784, 16\), the model expects \(784, 32\)"):
        workflows.rewind(untrained, 0.5, trainer=trainer, epochs=1, to=wrong)
    with pytest.raises(ValueError, match=r"holds 1 arrays but model 'mlp' has 4 weights"):
        workflows.rewind(untrained, 0.5, trainer=trainer, epochs=1, to=wrong[:1])
    with pytest.raises(ValueError, match=r"epoch number must be in \[0, epochs\)"):
        workflows.rewind(untrained, 0.5, trainer=trainer, epochs=1, to=1)
    with pytest.raises(ValueError, match="must be 'init', an epoch number"):
        workflows.rewind(untrained, 0.5, trainer=trainer, epochs=1, to="start")
    assert_same(before, untrained)


def test_other_bad_arguments(untrained, trainer, mnist_small):
    (x, y), _ = mnist_small
    before = weights_of(untrained)
    with pytest.raises(ValueError, match=r"`target` must be a fraction in \[0, 1\)"):
        workflows.one_shot(untrained, 1.0, trainer=trainer)
    with pytest.raises(TypeError, match="must be a kprune.PruningPlan or a target"):
        workflows.gradual(untrained, "0.5", trainer=trainer, epochs=1)
    with pytest.raises(TypeError, match="must be a kprune.workflows.Trainer"):
        workflows.one_shot(untrained, 0.5, trainer=(x, y))
    with pytest.raises(ValueError, match="`finetune_epochs` must be a positive integer"):
        workflows.one_shot(untrained, 0.5, trainer=trainer, finetune_epochs=0)
    with pytest.raises(ValueError, match="`recover_epochs` must leave at least one epoch"):
        workflows.gradual(untrained, 0.5, trainer=trainer, epochs=2, recover_epochs=2)
    with pytest.raises(ValueError, match="`recover_epochs` applies to a float target"):
        workflows.gradual(untrained, workflows.target_plan(0.5), trainer=trainer, epochs=2,
                          recover_epochs=1)
    with pytest.raises(ValueError, match="The plan prunes no layer"):
        workflows.one_shot(untrained, PruningPlan(), trainer=trainer)
    assert_same(before, untrained)


def test_trainer_bad_arguments(mnist_small):
    (x, y), _ = mnist_small
    with pytest.raises(ValueError, match="either training arrays"):
        Trainer(x, y, fit=lambda m, e, c: None, steps_per_epoch=1)
    with pytest.raises(ValueError, match="`steps_per_epoch` is required"):
        Trainer(fit=lambda m, e, c: None)
    with pytest.raises(ValueError, match="Give training arrays `x` and `y`"):
        Trainer(x)
    with pytest.raises(ValueError, match="same number of examples"):
        Trainer(x, y[:10])
    with pytest.raises(ValueError, match="`validation_data` must be a pair"):
        Trainer(x, y, validation_data=x)
    with pytest.raises(TypeError, match="`compile` must be None, a dict"):
        Trainer(x, y, compile="adam")
    assert Trainer(x, y, batch_size=64).steps_per_epoch == 63


@pytest.mark.slow
def test_rewind_keeps_the_mask_on_a_separable_pointwise_kernel():
    # The weight tfmot prunes in a SeparableConv2D is pointwise_kernel, not depthwise_kernel:
    # rewinding must hold that mask through retraining (it used to retrain it dense).
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.SeparableConv2D(8, 3, name="sep")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    rng = np.random.default_rng(0)
    x_train, y_train = rng.random((64, 8, 8, 4), np.float32), rng.integers(0, 3, 64)
    small = Trainer(x_train, y_train, validation_data=(x_train, y_train), batch_size=16)
    result = workflows.rewind(model, 0.5, trainer=small, epochs=1)
    keep = result.masks["sep"]["pointwise_kernel"]
    pointwise = result.model.get_layer("sep").pointwise_kernel.numpy()
    assert 1 - keep.mean() == pytest.approx(0.5, abs=0.02)
    assert np.all(pointwise[~keep] == 0.0) and np.all(pointwise[keep] != 0.0)
    assert result.final.sparsity["sep"] == pytest.approx(0.5, abs=0.02)
