"""The seed CNN through the default plan on real MNIST: apply -> fit -> strip -> verify."""

import math

import numpy as np
import pytest

import kprune
from kprune import models


@pytest.mark.slow
def test_seed_cnn_default_plan_on_real_mnist(mnist_dir):
    from kprune import data

    (x_train, y_train), (x_test, y_test) = data.subset(
        data.load_mnist(mnist_dir, verbose=False), 6000, 2000, seed=0
    )
    models.loader.keras.utils.set_random_seed(0)
    baseline = models.compile_classifier(models.seed_cnn())
    baseline.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    before = [w.copy() for w in baseline.get_weights()]

    plan = kprune.PruningPlan.default()
    steps = math.ceil(len(x_train) / 64)
    pruned = models.compile_classifier(kprune.apply(baseline, plan, steps_per_epoch=steps, epochs=1))
    history = pruned.fit(
        x_train, y_train, batch_size=64, epochs=1, verbose=0, callbacks=kprune.callbacks()
    )
    final = kprune.strip(pruned)

    assert all(np.array_equal(a, b) for a, b in zip(before, baseline.get_weights()))
    report = kprune.sparsity_report(final, plan=plan, strict=True)
    assert report["conv1"].method == "unstructured"
    assert report["conv1"].achieved == pytest.approx(0.5, abs=0.01)
    for name in ("conv2", "fc1"):
        kernel = final.get_layer(name).kernel.numpy()
        groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)
        assert (np.sum(groups == 0, axis=1) >= 2).all(), name
    np.testing.assert_array_equal(
        final.get_layer("head").kernel.numpy(), pruned.get_layer("head").kernel.numpy()
    )
    assert report["head"].achieved == 0.0
    assert history.history["sparsity/fc1"][-1] == 0.5
    predictions = final.predict(x_test, batch_size=512, verbose=0)
    accuracy = float(np.mean(np.argmax(predictions, -1) == y_test))
    assert accuracy > 0.95
