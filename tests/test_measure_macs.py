"""kprune.measure.count_macs: multiply-accumulates at batch 1, from layer shapes."""

import pytest

from kprune import measure, models
from kprune.engines.tfkeras import loader

keras = loader.keras
layers = keras.layers


def test_seed_cnn_by_hand():
    # conv1 5x5x1 -> 32 on 28x28 (same), conv2 5x5x32 -> 64 on 14x14, fc1 3136 -> 1024,
    # head 1024 -> 10.
    per_layer = measure.count_macs(models.build("seed-cnn"), by_layer=True)
    assert per_layer == {"conv1": 28 * 28 * 25 * 32, "conv2": 14 * 14 * 25 * 32 * 64,
                         "fc1": 3136 * 1024, "head": 1024 * 10}
    assert measure.count_macs(models.build("seed-cnn")) == sum(per_layer.values())


def test_every_conv_kind_and_nested_models():
    inner = keras.Sequential([layers.Dense(4, input_shape=(3, 8), name="dense")], name="inner")
    x = inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(6, 3, padding="valid", name="conv")(x)                   # 6x6 out
    b = layers.Conv2D(6, 1, groups=3, name="grouped")(x)                        # 8x8 out
    c = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    d = layers.SeparableConv2D(5, 3, depth_multiplier=2, strides=2, padding="same",
                               name="sep")(x)                                   # 4x4 out
    e = layers.Conv2DTranspose(2, 3, strides=2, name="up")(a)                   # from 6x6
    f = layers.BatchNormalization(name="bn")(b)
    g = inner(layers.Reshape((3, 8))(layers.Dense(24, name="fc")(
        layers.GlobalAveragePooling2D()(f))))
    model = keras.Model(inputs, [layers.Flatten()(t) for t in (c, d, e)] + [g])
    per_layer = measure.count_macs(model, by_layer=True)
    assert per_layer == {
        "conv": 6 * 6 * 9 * 3 * 6,
        "grouped": 8 * 8 * 1 * 1 * 6,
        "dw": 8 * 8 * 9 * 3 * 2,
        "sep": 4 * 4 * 9 * 6 + 4 * 4 * 6 * 5,
        "up": 6 * 6 * 9 * 6 * 2,
        "fc": 6 * 24,
        "inner/dense": 3 * 8 * 4,
    }
    assert measure.count_macs(model) == sum(per_layer.values())


def test_unknown_spatial_size_is_refused():
    model = keras.Sequential([layers.Conv2D(4, 3, input_shape=(None, None, 3))])
    with pytest.raises(ValueError, match="every input dimension"):
        measure.count_macs(model)
