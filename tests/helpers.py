"""Tiny tf_keras models shared by the core tests."""

import numpy as np

from kprune.engines.tfkeras import loader

keras = loader.keras


def tiny_cnn(channels=1):
    """conv_a (1 input channel) -> conv_b (8 in) -> dense_a (in 72... ) -> head."""
    return keras.Sequential(
        [
            keras.Input((8, 8, channels)),
            keras.layers.Conv2D(8, 3, name="conv_a"),
            keras.layers.Conv2D(8, 3, name="conv_b"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="dense_a"),
            keras.layers.Dense(10, name="head"),
        ],
        name="tiny_cnn",
    )


def tiny_mlp(inputs=784):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="fc1"),
            keras.layers.Dense(32, activation="relu", name="fc2"),
            keras.layers.Dense(10, name="head"),
        ],
        name="tiny_mlp",
    )


def nested_model():
    inner = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(12, activation="relu", name="fc")],
        name="block",
    )
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="stem")(inputs)
    x = inner(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs, name="outer")


def subclassed_dense(k=keras, units=3):
    """A built subclassed model of Keras ``k`` (tf_keras by default) holding one ``Dense``
    called ``fc``: it hides its layer graph."""

    class Net(k.Model):
        def __init__(self):
            super().__init__(name="net")
            self.fc = k.layers.Dense(units, name="fc")

        def call(self, x):
            return self.fc(x)

    model = Net()
    model(np.zeros((1, 3), "float32"))
    return model
