"""Allocation, sensitivity and the workflows on Keras 3 models: the same answers as on the
tf_keras twin with the same weights, and Keras 3 models back."""

import keras
import numpy as np
import pytest

import kprune
from kprune import _compat
from kprune.methods import allocation
from tests import keras3_models

tf_keras = _compat.keras


def _twins():
    """small_cnn in Keras 3 and in tf_keras, with the same (random) weights."""
    tf_model = keras3_models.small_cnn(tf_keras)
    k3_model = keras3_models.small_cnn(keras)
    k3_model.set_weights(tf_model.get_weights())
    return tf_model, k3_model


def test_global_plan_is_the_same_as_for_the_tf_keras_twin():
    tf_model, k3_model = _twins()
    before = [np.array(w) for w in k3_model.get_weights()]
    ours = allocation.global_plan(k3_model, 0.8, exclude=["head"])
    theirs = allocation.global_plan(tf_model, 0.8, exclude=["head"])
    assert ours == theirs
    assert ours.allocation == theirs.allocation
    assert str(ours.allocation) == str(theirs.allocation)
    assert [row.name for row in ours.allocation.rows] == ["conv_a", "conv_b", "dense_a",
                                                          "dense_b", "head"]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, k3_model.get_weights()))
    # the plan prunes the Keras 3 model to its shares
    pruned = kprune.apply(k3_model, ours, steps_per_epoch=4, epochs=1)
    assert pruned._kprune_plan["dense_a"].target == ours.allocation["dense_a"].sparsity


def test_global_plan_refuses_a_subclassed_keras3_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="subclassed Keras 3 model"):
        allocation.global_plan(net, 0.5)
