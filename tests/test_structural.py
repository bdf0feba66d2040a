"""kprune.structural: physical removal of neurons and filters, with coupled layers."""

import numpy as np
import pytest

import kprune
from kprune import export, models, structural
from kprune.core.checks import did_you_mean
from kprune.engines.tfkeras import loader
from kprune.engines.wrap import copy_model

keras = loader.keras


def _zero_units(model, name, units):
    """Zero the kernel slices and biases of ``units`` in layer ``name`` (in place)."""
    kernel, bias = model.get_layer(name).get_weights()
    kernel[..., units] = 0.0
    bias[units] = 0.0
    model.get_layer(name).set_weights([kernel, bias])


def _images(n=8, shape=(28, 28, 1)):
    return np.random.default_rng(0).random((n, *shape)).astype("float32")


def _bn_cnn():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Conv2D(6, 3, padding="same", name="conv_b"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(4, name="head"),
    ], name="bn_cnn")


def test_removing_zero_units_leaves_the_outputs_unchanged_through_flatten():
    model = models.lenet_5()
    _zero_units(model, "conv2", [1, 5, 7])
    _zero_units(model, "fc1", list(range(0, 500, 5)))
    before = [w.copy() for w in model.get_weights()]
    keep = structural.nonzero_units(model)
    assert sorted(keep) == ["conv2", "fc1"]
    assert len(keep["conv2"]) == 47 and 1 not in keep["conv2"] and len(keep["fc1"]) == 400
    smaller = structural.remove_units(model, keep)
    assert smaller.get_layer("conv2").filters == 47 and smaller.get_layer("fc1").units == 400
    # fc1's rows follow conv2's kept channels through the 4x4x50 flatten
    assert smaller.get_layer("fc1").get_weights()[0].shape == (4 * 4 * 47, 400)
    # conv2 filters (501 each), fc1 rows (16 per filter, 500 wide), fc1 units (752 + 1),
    # head rows (10 wide)
    assert smaller.count_params() == 431_080 - 3 * 501 - 3 * 16 * 500 - 100 * 753 - 100 * 10
    x = _images()
    np.testing.assert_allclose(smaller(x).numpy(), model(x).numpy(), atol=1e-5)
    for old, now in zip(before, model.get_weights()):  # the input model is untouched
        np.testing.assert_array_equal(old, now)


def test_batch_norm_and_global_pooling_are_sliced_with_their_producer():
    model = _bn_cnn()
    model(_images(2, (8, 8, 3)), training=True)  # move BN statistics off their defaults
    bn = model.get_layer("bn")
    bn.set_weights([np.random.default_rng(1).random(8).astype("float32") + 0.5 for _ in range(4)])
    kept = [0, 2, 3, 6]
    smaller = structural.remove_units(model, {"conv": kept, "conv_b": [1, 4]})
    for old, new in zip(bn.get_weights(), smaller.get_layer("bn").get_weights()):
        np.testing.assert_array_equal(new, old[kept])
    np.testing.assert_array_equal(smaller.get_layer("conv_b").get_weights()[0],
                                  model.get_layer("conv_b").get_weights()[0][:, :, kept][..., [1, 4]])
    np.testing.assert_array_equal(smaller.get_layer("head").get_weights()[0],
                                  model.get_layer("head").get_weights()[0][[1, 4]])
    # Same function as the original with the removed channels' consumers zeroed.
    reference = copy_model(model)
    kernel, bias = reference.get_layer("conv_b").get_weights()
    kernel[:, :, [1, 4, 5, 7]] = 0.0
    reference.get_layer("conv_b").set_weights([kernel, bias])
    kernel, bias = reference.get_layer("head").get_weights()
    kernel[[0, 2, 3, 5]] = 0.0
    reference.get_layer("head").set_weights([kernel, bias])
    x = _images(4, (8, 8, 3))
    np.testing.assert_allclose(smaller(x).numpy(), reference(x).numpy(), atol=1e-5)


def test_select_units_keeps_the_highest_norms():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, name="fc"),
                              keras.layers.Dense(2, name="head")])
    kernel = np.array([[1, -4, 0, 2, 3], [0, 0, 0, 2, -3], [1, 0, 0.5, 0, 0]], "float32")
    model.get_layer("fc").set_weights([kernel, np.zeros(5, "float32")])
    np.testing.assert_allclose(structural.unit_scores(model.get_layer("fc")), [2, 4, 0.5, 4, 6])
    np.testing.assert_allclose(structural.unit_scores(model.get_layer("fc"), "l2"),
                               np.sqrt([2, 16, 0.25, 8, 18]))
    assert structural.select_units(model, {"fc": 0.4})["fc"].tolist() == [1, 3, 4]
    assert structural.select_units(model, {"fc": 0.0})["fc"].tolist() == [0, 1, 2, 3, 4]
    assert structural.select_units(model, {"fc": 0.99})["fc"].tolist() == [4]  # one stays
    # l2 breaks the l1 tie between units 1 and 3 (16 > 8)
    assert structural.select_units(model, {"fc": 0.6}, criterion="l2")["fc"].tolist() == [1, 4]


def test_summary_lists_units_and_parameters():
    model = models.lenet_300_100()
    smaller = structural.remove_units(model, structural.select_units(model, {"fc1": 0.5}))
    text = structural.summary(model, smaller)
    assert "fc1    Dense  300    150" in text
    assert f"{model.count_params():,} -> {smaller.count_params():,} parameters" in text


@pytest.mark.slow
def test_on_real_mnist_a_half_width_model_fine_tunes_back_and_exports_smaller(mnist_small,
                                                                              tmp_path):
    (x, y), (x_test, y_test) = mnist_small
    model = models.compile_classifier(models.lenet_300_100())
    model.fit(x, y, batch_size=128, epochs=2, verbose=0)
    dense_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    smaller = structural.remove_units(
        model, structural.select_units(model, {"fc1": 0.5, "fc2": 0.5}))
    assert smaller.count_params() < 0.52 * model.count_params()
    models.compile_classifier(smaller).fit(x, y, batch_size=128, epochs=1, verbose=0)
    accuracy = smaller.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy > dense_accuracy - 0.03, (accuracy, dense_accuracy)
    dense_bytes = len(export.convert(model))
    small_bytes = len(export.convert(smaller))
    assert small_bytes < 0.55 * dense_bytes


def test_bad_input_is_refused_and_the_model_unchanged():
    model = models.lenet_300_100()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"Layer 'fc3' is not in the model\. Did you mean"):
        structural.remove_units(model, {"fc3": [0]})
    with pytest.raises(ValueError, match="its outputs are the model's outputs"):
        structural.remove_units(model, {"head": [0, 1]})
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 300\)"):
        structural.remove_units(model, {"fc1": [0, 300]})
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 300\)"):
        structural.remove_units(model, {"fc1": [2, 2]})
    with pytest.raises(ValueError, match="non-empty list of integer indices"):
        structural.remove_units(model, {"fc1": []})
    with pytest.raises(TypeError, match="must be a dict of layer name"):
        structural.remove_units(model, [0, 1])
    with pytest.raises(ValueError, match="removes output units of Dense and Conv1D/2D/3D"):
        structural.remove_units(model, {"flatten": [0]})
    with pytest.raises(ValueError, match=r"fractions\['fc1'\]"):
        structural.select_units(model, {"fc1": 1.0})
    with pytest.raises(ValueError, match="non-empty dict"):
        structural.select_units(model, {})
    with pytest.raises(ValueError, match="criterion"):
        structural.select_units(model, {"fc1": 0.5}, criterion="l3")
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)


def test_models_it_cannot_rewire_are_refused_with_the_reason():
    inputs = keras.Input((4,))
    functional = keras.Model(inputs, keras.layers.Dense(2, name="d")(
        keras.layers.Dense(3, name="c")(inputs)))
    assert len(structural.select_units(functional, {"c": 0.5})["c"]) == 2  # graphs too
    assert structural.remove_units(functional, {"c": [0]}).get_layer("c").units == 1
    reshaping = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="a"),
                                  keras.layers.Reshape((2, 3), name="reshape"),
                                  keras.layers.Flatten(), keras.layers.Dense(2, name="b")])
    with pytest.raises(ValueError, match=r"'reshape' \(Reshape\), is not one structural"):
        structural.remove_units(reshaping, {"a": [0, 1]})
    softmax = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="a"),
                                keras.layers.Activation("softmax", name="sm"),
                                keras.layers.Dense(2, name="b")])
    with pytest.raises(ValueError, match="the softmax of layer 'sm' normalises over all units"):
        structural.remove_units(softmax, {"a": [0, 1]})
    relu = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="a"),
                             keras.layers.Activation("relu", name="act"),
                             keras.layers.Dense(2, name="b")])
    assert structural.remove_units(relu, {"a": [0, 1]}).get_layer("b").get_weights()[0].shape == (2, 2)
    depthwise = keras.Sequential([keras.Input((6, 6, 2)),
                                  keras.layers.DepthwiseConv2D(3, name="dw"),
                                  keras.layers.Flatten(), keras.layers.Dense(2, name="out")])
    with pytest.raises(ValueError, match="DepthwiseConv2D"):
        structural.select_units(depthwise, {"dw": 0.5})
    from kprune import plan, wrap

    wrapped = wrap.apply(models.lenet_300_100(), plan.PruningPlan.default(),
                         steps_per_epoch=1, epochs=1)
    with pytest.raises(TypeError, match="Strip pruning wrappers first"):
        structural.nonzero_units(wrapped)


def test_did_you_mean_suggests_close_names_only():
    assert did_you_mean("haed", ["conv1", "head"]) == " Did you mean 'head'?"
    assert did_you_mean("fc", ["fc1", "fc2", "conv"]) == " Did you mean 'fc2' or 'fc1'?"  # difflib's order
    assert did_you_mean("zzz", ["conv1", "head"]) == ""


def test_reachable_from_the_package():
    assert kprune.structural.remove_units is structural.remove_units
