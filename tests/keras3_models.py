"""Models built the same way with either Keras (``tf_keras`` or Keras 3), and the seed-CNN
MNIST run that tests/test_keras3.py runs on the TensorFlow backend in-process and on JAX in
a subprocess (``KERAS_BACKEND=jax python -m tests.keras3_models MNIST_DIR [N_TRAIN]``),
which prints its results as JSON.
"""

import json
import math
import sys
import tempfile
from pathlib import Path


def seed_cnn(keras):
    """kprune.experiments.models.seed_cnn, built with the given Keras module."""
    from kprune.experiments import models

    return models.seed_cnn(keras=keras)


def small_cnn(keras):
    """conv_a (1 input channel) -> conv_b (8 in) -> dense_a -> dense_b -> head."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, name="conv_a"),
            layers.Conv2D(8, 3, name="conv_b"),
            layers.Flatten(name="flatten"),
            layers.Dense(32, activation="relu", name="dense_a"),
            layers.Dense(16, activation="relu", name="dense_b"),
            layers.Dense(10, name="head"),
        ],
        name="small_cnn",
    )


def compile_classifier(keras, model, learning_rate=1e-3):
    """Adam and sparse cross-entropy on logits; keywords only (Keras 3's third positional
    argument of ``compile`` is ``loss_weights``)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def seed_run(mnist_dir, *, n_train=6000, n_test=2000, batch_size=64):
    """Dense epoch, then the default plan for one epoch, strip, report: the facts to check."""
    import keras
    import numpy as np

    import kprune
    from kprune.experiments import data

    (x_train, y_train), (x_test, y_test) = data.subset(
        data.load_mnist(mnist_dir, verbose=False), n_train, n_test, seed=0
    )
    keras.utils.set_random_seed(0)
    baseline = compile_classifier(keras, seed_cnn(keras))
    baseline.fit(x_train, y_train, batch_size=batch_size, epochs=1, verbose=0)
    before = [np.array(w) for w in baseline.get_weights()]

    plan = kprune.PruningPlan.default()
    steps = math.ceil(len(x_train) / batch_size)
    pruned = compile_classifier(keras, kprune.apply(baseline, plan, steps_per_epoch=steps,
                                                    epochs=1))
    history = pruned.fit(x_train, y_train, batch_size=batch_size, epochs=1, verbose=0,
                         callbacks=kprune.callbacks(pruned))
    final = kprune.strip(pruned)
    report = kprune.sparsity_report(final, plan=plan, strict=True)
    groups_ok = {}
    for name in ("conv2", "fc1"):
        kernel = np.asarray(final.get_layer(name).kernel)
        groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)  # along the input channels
        groups_ok[name] = bool((np.sum(groups == 0, axis=1) >= 2).all())
    head_pruned = np.asarray(pruned.get_layer("head").kernel)
    predictions = np.asarray(final.predict(x_test, batch_size=512, verbose=0))
    export = None  # on TensorFlow, tests/test_keras3.py exports every variant
    if keras.backend.backend() != "tensorflow":
        export = jax_export(final, x_test)
    return {
        "export": export,
        "backend": keras.backend.backend(),
        "final_type": f"{type(final).__module__}.{type(final).__name__}",
        "input_unchanged": all(np.array_equal(a, np.asarray(b))
                               for a, b in zip(before, baseline.get_weights())),
        "conv1_method": report["conv1"].method,
        "conv1_achieved": report["conv1"].achieved,
        "n_m_along_inputs": groups_ok,
        "head_dense": report["head"].achieved == 0.0,
        "head_unchanged": bool(np.array_equal(np.asarray(final.get_layer("head").kernel),
                                              head_pruned)),
        "fc1_logged": history.history["sparsity/fc1"][-1],
        "report_ok": report.ok,
        "accuracy": float(np.mean(np.argmax(predictions, -1) == y_test)),
    }


def jax_export(final, x_test):
    """Off TensorFlow: the seed CNN (Dropout: random state in its export) gets the message
    naming the TensorFlow backend; a CNN without such layers exports, same predictions."""
    import keras
    import numpy as np

    import kprune

    folder = Path(tempfile.mkdtemp())
    try:
        kprune.export.to_tflite(final, folder / "seed.tflite", sparse=True)
        seed = "exported"
    except ValueError as err:
        seed = str(err)
    x = x_test[:16, 10:18, 10:18]  # 8x8 crops, for the small CNN
    pruned = compile_classifier(keras, kprune.apply(small_cnn(keras), steps_per_epoch=2,
                                                    epochs=1))
    pruned.fit(x, np.arange(16) % 10, batch_size=8, verbose=0,
               callbacks=kprune.callbacks(pruned))
    small = kprune.strip(pruned)
    path = kprune.export.to_tflite(small, folder / "small.tflite", sparse=True).path
    difference = np.abs(kprune.measure.predict_tflite(path, x)
                        - np.asarray(small.predict(x, verbose=0))).max()
    return {"seed_cnn": seed, "small_cnn_max_difference": float(difference),
            "small_cnn_sparse_storage": kprune.flatbuffer.tflite_tensors(path).sparse_storage}


if __name__ == "__main__":  # MNIST_DIR [N_TRAIN]
    print(json.dumps(seed_run(sys.argv[1], **({"n_train": int(sys.argv[2])}
                                                if len(sys.argv) > 2 else {}))))
