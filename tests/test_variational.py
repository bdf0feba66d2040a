"""kprune.methods.variational: sparse variational dropout on real tf_keras layers."""

import numpy as np
import pytest

from kprune.engines.tfkeras import loader
from kprune.methods import variational
from kprune.methods.trainer import Trainer

keras = loader.keras
tf = loader.tf


def small_model():
    """conv (valid) -> pool -> flatten -> fc (relu) -> dropout -> head."""
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(6, activation="relu", name="fc")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="small")


def test_neg_kl_is_zero_for_pure_noise_and_grows_with_precision():
    values = variational.neg_kl(tf.constant([-10.0, -3.0, 0.0, 3.0, 10.0])).numpy()
    assert np.all(values <= 0)
    assert np.all(np.diff(values) > 0)              # more noise, less KL
    assert values[-1] == pytest.approx(0, abs=1e-4)  # log_alpha -> inf: free
    # log_alpha -> -inf: -KL ~ 0.5 * log_alpha - k1 (the log-uniform prior's limit)
    assert values[0] == pytest.approx(0.5 * -10.0 - 0.63576, abs=0.01)


def test_lrt_mean_and_variance_are_those_of_the_deterministic_layer(seeded):
    layer = variational.VariationalDense(5, threshold=9.9)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 7)), tf.float32)
    layer(x)
    layer.set_log_sigma2(tf.fill(layer.kernel.shape, np.log(0.01)))
    deterministic = (x @ layer.kernel + layer.bias).numpy()
    assert np.allclose(layer(x, training=False).numpy(), deterministic, atol=1e-5)
    draws = layer(tf.tile(x, [3000, 1]), training=True).numpy().reshape(3000, 4, 5)
    assert np.allclose(draws.mean(axis=0), deterministic, atol=0.02)
    expected_var = (x.numpy() ** 2) @ np.full((7, 5), 0.01)
    assert np.allclose(draws.var(axis=0), expected_var, rtol=0.15)


def test_conv_lrt_with_tiny_noise_is_the_plain_convolution():
    layer = variational.VariationalConv2D(3, 3, activation="relu")
    plain = keras.layers.Conv2D(3, 3, activation="relu")
    x = tf.random.normal((2, 6, 6, 2), seed=1)
    layer(x), plain(x)
    plain.set_weights([layer.kernel.numpy(), np.full(3, 0.1, np.float32)])
    layer.bias.assign(np.full(3, 0.1, np.float32))
    layer.set_log_sigma2(tf.fill(layer.kernel.shape, -40.0))
    assert np.allclose(layer(x, training=True), plain(x), atol=1e-3)  # sqrt(1e-8) noise
    assert np.allclose(layer(x, training=False), plain(x), atol=1e-5)


def test_inference_drops_the_weights_whose_log_alpha_reaches_the_threshold():
    layer = variational.VariationalDense(2, use_bias=False, threshold=3.0)
    x = tf.ones((1, 2))
    layer(x)
    layer.kernel.assign([[1.0, 0.1], [0.5, 2.0]])
    # log_alpha = log_sigma2 - log(theta^2): 4 - 0 = 4 (dropped), 0 - log(0.01) = 4.6
    # (dropped), 2 - log(0.25) = 3.39 (dropped), -5 - log(4) = -6.4 (kept)
    layer.set_log_sigma2([[4.0, 0.0], [2.0, -5.0]])
    assert layer.keep_mask().numpy().tolist() == [[0, 0], [0, 1]]
    assert layer(x, training=False).numpy().tolist() == [[0.0, 2.0]]
    layer.set_log_sigma2([[2.9, 0.0], [2.0, -5.0]])   # log_alpha 2.9 < 3: kept
    assert layer.keep_mask().numpy()[0, 0] == 1


def test_folding_constant_units_keeps_the_outputs_and_zeroes_their_biases():
    keras.utils.set_random_seed(0)
    model = small_model()
    weights = model.get_weights()
    weights[0][..., 1] = weights[0][..., 3] = 0
    weights[1][1] = 0.7            # conv channel 1: relu(0.7) everywhere
    weights[1][3] = 0.4            # conv channel 3: 0.4
    weights[2][:, 2] = 0
    weights[3][2] = -0.3           # fc unit 2: relu(-0.3) = 0
    weights[2][:, 4] = 0
    weights[3][4] = 0.2            # fc unit 4: 0.2
    weights[4][5] = 0              # fc unit 5: nobody reads it
    model.set_weights(weights)
    x = np.random.default_rng(0).random((5, 12, 12, 1)).astype("float32")
    before, (_, nonzero_before) = model(x).numpy(), variational.nonzero_params(model)

    assert variational.fold_constant_units(model) == 5
    after = model.get_weights()
    assert np.allclose(model(x).numpy(), before, atol=1e-5)
    assert after[1][1] == after[1][3] == 0 and after[3][2] == after[3][4] == 0
    assert not after[2][np.arange(100) % 4 % 2 == 1].any()   # channels 1, 3 after flatten
    assert not after[4][[2, 4, 5]].any() and not after[2][:, 5].any() and after[3][5] == 0
    assert variational.nonzero_params(model)[1] < nonzero_before - 150
    assert variational.fold_constant_units(model) == 0     # nothing left to fold


def test_a_same_padded_consumer_is_not_folded_into():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", name="b")(x))
    weights = model.get_weights()
    weights[0][..., 0], weights[1][0] = 0, 0.5
    model.set_weights(weights)
    assert variational.fold_constant_units(model) == 0   # the border sees the padding
    assert model.get_weights()[1][0] == 0.5


def test_bad_inputs_are_refused_with_the_reason():
    model = small_model()
    data = (np.zeros((4, 12, 12, 1), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="`threshold` must be a number in"):
        variational.sparsify(model, data, epochs=1, threshold=12)
    with pytest.raises(ValueError, match="`threshold` must be a number in"):
        variational.sparsify(model, data, epochs=1, threshold="3")
    with pytest.raises(ValueError, match="`epochs` must be a positive integer"):
        variational.sparsify(model, data, epochs=0)
    with pytest.raises(ValueError, match="`kl_weight` must be a non-negative number"):
        variational.sparsify(model, data, epochs=1, kl_weight=float("nan"))
    with pytest.raises(ValueError, match=r"names \['fc9'\].*Those are: \['conv', 'fc', "
                                         r"'head'\]"):
        variational.sparsify(model, data, epochs=1, layers=["fc9"])
    with pytest.raises(TypeError, match="kprune Trainer or a pair"):
        variational.sparsify(model, data[0], epochs=1)
    for share in (1, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match=r"`distill` must be a fraction in \[0, 1\) "
                                             r"\(the dense model's share of the targets\)"):
            variational.sparsify(model, data, epochs=1, distill=share)
    for temperature in (0.5, 0, True, float("inf"), "2"):
        with pytest.raises(ValueError, match=r"`temperature` must be a number >= 1 \(1: the "
                                             r"teacher's probabilities as they are\)"):
            variational.sparsify(model, data, epochs=1, distill=0.5, temperature=temperature)
    with pytest.raises(TypeError, match=r"`teacher` must be a Keras classifier \(or None: "
                                        r"the dense `model`\). Received: teacher='model.keras'"):
        variational.sparsify(model, data, epochs=1, distill=0.5, teacher="model.keras")
    with pytest.raises(ValueError, match=r"`finetune_temperature` must be a number >= 1"):
        variational.sparsify(model, data, epochs=1, distill=0.5, finetune_temperature=0.5)
    with pytest.raises(TypeError, match=r"`finetune_teacher` must be a Keras classifier \(or "
                                        r"None: the variational stage's\)"):
        variational.sparsify(model, data, epochs=1, distill=0.5, finetune_teacher="x.keras")
    for extra in ({"finetune_teacher": model}, {"finetune_temperature": 4}):
        with pytest.raises(ValueError, match=r"`finetune_teacher` and `finetune_temperature` "
                                             r"distil in the fine-tune.*Received: distill=0"):
            variational.sparsify(model, data, epochs=1, **extra)
    own_fit = Trainer(fit=lambda model, epochs, callbacks: None, steps_per_epoch=1)
    with pytest.raises(ValueError, match="`distill` needs a trainer on arrays"):
        variational.sparsify(model, own_fit, epochs=1, distill=0.5)
    no_layer = keras.Sequential([keras.Input((4,)), keras.layers.Activation("relu")])
    with pytest.raises(ValueError, match="has no layer for variational sparsification"):
        variational.sparsify(no_layer, (np.zeros((2, 4)), np.zeros(2)), epochs=1)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    with pytest.raises(TypeError, match="subclassed model cannot be rebuilt"):
        variational.sparsify(Subclassed(), data, epochs=1)


def test_a_keras3_model_is_refused():
    from kprune.engines.keras3 import helpers

    model = helpers.keras.Sequential([helpers.keras.Input((4,)), helpers.keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="trains tf_keras models; this is a Keras 3 model"):
        variational.sparsify(model, (np.zeros((2, 4)), np.zeros(2)), epochs=1)


@pytest.mark.slow
def test_sparsity_grows_during_training_and_the_input_is_untouched(mnist_small, seeded):
    from kprune.experiments import models

    (x, y), (x_test, y_test) = mnist_small
    dense = models.compile_classifier(models.build("lenet-300-100"))
    dense.fit(x[:3000], y[:3000], epochs=1, batch_size=100, verbose=0)
    before = [w.copy() for w in dense.get_weights()]
    trainer = Trainer(x[:3000], y[:3000], validation_data=(x[3000:], y[3000:]),
                      batch_size=100, seed=0)

    result = variational.sparsify(dense, trainer, epochs=3, layers=["fc1", "fc2"],
                                  finetune_epochs=1)

    assert all(np.array_equal(a, b) for a, b in zip(before, dense.get_weights()))
    kept = [row["kept"] for row in result.history if row["stage"] == "variational"]
    assert kept[0] > kept[1] > kept[2] and kept[2] < 0.5
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["stage"] == "finetune"
    assert set(result.kept) == {"fc1", "fc2"}
    assert not any(isinstance(layer, variational.VariationalDense)
                   for layer in result.model.layers)
    fc1 = result.model.get_layer("fc1").get_weights()[0]
    assert result.kept["fc1"] == pytest.approx(np.count_nonzero(fc1) / fc1.size)
    assert np.count_nonzero(result.model.get_layer("head").get_weights()[0]) == 1000
    params, nonzero = variational.nonzero_params(result.model)
    assert params == 266_610 and nonzero == result.nonzero < params / 2
    accuracy = (result.model.predict(x_test, verbose=0).argmax(1) == y_test).mean()
    assert accuracy > 0.7   # the KL term weighs 3,000 images heavily: far above chance (0.1)


@pytest.mark.slow
def test_distill_trains_towards_the_dense_models_predictions(seeded):
    """Labels that always contradict a confident dense model: without distillation the
    sparse copy learns them and leaves the dense model's answers; with ``distill=0.9`` it
    keeps them."""
    x = np.random.default_rng(0).random((512, 12, 12, 1), dtype=np.float32)
    teacher = confident(small_model(), x)
    answers = teacher.predict(x, verbose=0).argmax(1)
    wrong = (answers + 1) % 3
    trainer = Trainer(x, wrong, batch_size=32, seed=0,
                      compile=dict(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"],
                                   loss=keras.losses.SparseCategoricalCrossentropy(True)))

    def agreement(distill, start=teacher, **options):
        model = variational.sparsify(start, trainer, epochs=4, distill=distill,
                                     **options).model
        return float((model.predict(x, verbose=0).argmax(1) == answers).mean())

    assert agreement(0.0) < 0.2 and agreement(0.9) > 0.8
    # from an untrained start, distilling the confident model given as `teacher`
    assert agreement(0.9, small_model(), teacher=teacher) > 0.8


@pytest.mark.slow
def test_the_finetune_distils_its_own_teacher(seeded):
    """The variational stage distils the model it starts from; ``finetune_teacher`` is
    what the fine-tune (with the zeros held) learns from instead."""
    x = np.random.default_rng(0).random((512, 12, 12, 1), dtype=np.float32)
    first, second = confident(small_model(), x), confident(small_model(), x)
    answers = [m.predict(x, verbose=0).argmax(1) for m in (first, second)]
    assert (answers[0] == answers[1]).mean() < 0.6  # two teachers that disagree
    trainer = Trainer(x, answers[0], batch_size=32, seed=0,
                      compile=dict(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"],
                                   loss=keras.losses.SparseCategoricalCrossentropy(True)))

    def agreement(**options):
        model = variational.sparsify(first, trainer, epochs=2, finetune_epochs=6,
                                     distill=0.9, **options).model
        return [float((model.predict(x, verbose=0).argmax(1) == a).mean()) for a in answers]

    plain, own = agreement(), agreement(finetune_teacher=second, finetune_temperature=2)
    assert plain[0] > 0.8 and plain[1] < 0.3
    assert own[1] > 0.7 and own[0] < 0.3


def confident(model, x):
    """``model`` with its head scaled up: its softmax is near one-hot on ``x``."""
    model.predict(x[:1], verbose=0)
    head = model.get_layer("head")
    head.kernel.assign(head.kernel * 50)
    return model


@pytest.mark.slow
def test_distillation_loss_is_hintons_at_any_temperature(seeded, tmp_path):
    """The compiled loss is ``(1 - d) * CE(labels, p) + d * T**2 * CE(q_T, p_T)``, the
    teacher's and the model's probabilities softened by ``T`` (checked in numpy), and the
    model comes back compiled with the caller's loss, so that it saves and loads."""
    from kprune.engines.saving import load_model, save_model

    x = np.random.default_rng(1).random((64, 12, 12, 1), dtype=np.float32)
    labels = np.random.default_rng(2).integers(0, 3, 64)
    teacher, student = small_model(), small_model()  # logits, two different inits

    def softmax(z, t=1.0):
        e = np.exp(z / t - (z / t).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    z_t, z_s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    share = 0.7
    for t in (1.0, 4.0):  # 1: Keras's cross-entropy towards mixed targets; 4: Hinton's loss
        trainer = variational._distilling(Trainer(x, labels, batch_size=64), teacher, share, t)
        trainer.compile(student)
        hard = -np.log(softmax(z_s)[np.arange(64), labels])
        soft = -(softmax(z_t, t) * np.log(softmax(z_s, t))).sum(1)
        expected = ((1 - share) * hard + share * t**2 * soft).mean()
        assert float(student.evaluate(x, trainer.y, verbose=0)[0]) == pytest.approx(
            expected, rel=1e-4)

    result = variational.sparsify(student, Trainer(x, labels, batch_size=32, seed=0), epochs=1,
                                  finetune_epochs=1, distill=share, temperature=4,
                                  teacher=teacher)
    path = save_model(result.model, tmp_path / "distilled.keras")
    np.testing.assert_allclose(load_model(path).predict(x, verbose=0),
                               result.model.predict(x, verbose=0), atol=1e-6)


class _Kill(keras.callbacks.Callback):
    """Raises after the ``after``-th epoch end of all fits (after that epoch's checkpoint:
    the trainer's own callbacks run last), and counts the epochs begun."""

    def __init__(self, after=None):
        super().__init__()
        self.after, self.ended, self.begun = after, 0, []

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.ended += 1
        if self.ended == self.after:
            raise RuntimeError("killed")


@pytest.mark.parametrize("killed_after, resumed", [
    (2, [2, 0, 1]),   # in the variational stage: its last epoch, then the fine-tune
    (4, [1]),         # in the fine-tune: only its last epoch
])
@pytest.mark.slow
def test_sparsify_resumes_from_its_epoch_checkpoints(seeded, tmp_path, killed_after, resumed):
    x = np.random.default_rng(0).random((128, 12, 12, 1), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 3, 128)
    options = dict(epochs=3, finetune_epochs=2, kl_weight=2.0, checkpoint_dir=tmp_path)

    def run(kill):
        trainer = Trainer(x, y, batch_size=32, seed=0, callbacks=[kill])
        return variational.sparsify(small_model(), trainer, **options)

    with pytest.raises(RuntimeError, match="killed"):
        run(_Kill(after=killed_after))
    counted = _Kill()
    result = run(counted)
    assert counted.begun == resumed
    assert [(row["stage"], row["epoch"]) for row in result.history] == [
        ("variational", 1), ("variational", 2), ("variational", 3), ("finetune", 4),
        ("finetune", 5)]
    assert all("loss" in row for row in result.history)
    # the zeros the variational stage left are still zeros after the resumed fine-tune
    from kprune.methods.checkpoints import Checkpoints

    zeroed = Checkpoints(tmp_path).find("variational-done").arrays("model")
    assert sum(int((w == 0).sum()) for w in zeroed) > 0
    for before, after in zip(zeroed, result.model.get_weights()):
        assert not after[before == 0].any()

    with pytest.raises(ValueError, match="were written by another run"):
        variational.sparsify(small_model(), (x, y), **{**options, "epochs": 4})
