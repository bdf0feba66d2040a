"""Models built the same way with either Keras (``tf_keras`` or Keras 3), and the seed-CNN
MNIST run that tests/test_keras3.py runs on the TensorFlow backend in-process and on JAX in
a subprocess (``KERAS_BACKEND=jax python -m tests.keras3_models MNIST_DIR [N_TRAIN]``),
which prints its results as JSON; :func:`methods_run` is the same for seeded trainers,
workflow checkpoints, late rewinding and PruningStepper (tests/test_keras3_methods.py).
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


def small_cnn(keras, *, dropout=None):
    """conv_a (1 input channel) -> conv_b (8 in) -> dense_a -> dense_b -> head (with a
    Dropout of rate ``dropout`` after dense_a if given)."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, name="conv_a"),
            layers.Conv2D(8, 3, name="conv_b"),
            layers.Flatten(name="flatten"),
            layers.Dense(32, activation="relu", name="dense_a"),
            *([layers.Dropout(dropout, name="dropout")] if dropout else []),
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
    """Dense epoch, then the default plan for one epoch, strip, report, and the exported
    files' outputs against Keras's (every variant on TensorFlow): the facts to check."""
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
    if keras.backend.backend() == "tensorflow":
        export = tflite_agreement(final, x_train[:200], x_test[:500], predictions[:500])
    else:
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


def tflite_agreement(final, calibration, x, logits):
    """Every TFLite variant of ``final`` (TensorFlow backend) run in LiteRT on ``x``: per
    variant, the share of images given Keras's class (``logits``: Keras's outputs) and the
    largest difference from Keras's logits."""
    import shutil

    import numpy as np

    import kprune

    folder = Path(tempfile.mkdtemp())
    try:
        results = kprune.export.export_variants(final, folder, representative_data=calibration)
        found = {}
        for name, result in results.items():
            got = kprune.measure.predict_tflite(result.path, x)
            found[name] = {"agreement": float(np.mean(got.argmax(-1) == logits.argmax(-1))),
                           "max_difference": float(np.abs(got - logits).max())}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return found


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


def methods_run(folder):
    """Seeded trainers, an interrupted and resumed checkpointed workflow, rewinding to an
    epoch and a custom loop with PruningStepper, on small_cnn with Dropout and random
    8x8 data, in the Keras 3 backend of this process: the facts to check, as JSON."""
    import keras
    import numpy as np

    import kprune
    from kprune.methods import workflows

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = x.reshape(64, -1)[:, :10].argmax(1)

    class Interrupt(keras.callbacks.Callback):
        """Stops the run (as a kill would) at the end of its first epoch."""

        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    def gradual(seed, checkpoint_dir=None, callbacks=()):
        keras.utils.set_random_seed(0)  # the same initial weights every time
        trainer = workflows.Trainer(x, y, batch_size=16, seed=seed, callbacks=callbacks)
        return workflows.gradual(small_cnn(keras, dropout=0.3), 0.8, trainer=trainer,
                                 epochs=2, checkpoint_dir=checkpoint_dir)

    def same(a, b):
        return all(np.array_equal(u, v) for u, v in zip(a, b))

    def same_masks(a, b):
        return a.keys() == b.keys() and all(same(a[k].values(), b[k].values()) for k in a)

    first, again, other = gradual(0), gradual(0), gradual(1)
    try:
        gradual(0, folder, [Interrupt()])
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    resumed = gradual(0, folder)

    keras.utils.set_random_seed(0)
    late = workflows.rewind(small_cnn(keras, dropout=0.3), 0.8, epochs=2, to=1,
                            trainer=workflows.Trainer(x, y, batch_size=16, seed=0))
    kept = np.asarray(late.model.get_layer("dense_a").kernel) != 0

    pruned = kprune.apply(small_cnn(keras), steps_per_epoch=4, epochs=2)
    optimizer = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fired = []
    with kprune.PruningStepper(pruned) as stepper:
        for _ in range(2):
            for start in range(0, 64, 16):
                fired.append(stepper.step())
                train_step(pruned, optimizer, loss_fn, x[start:start + 16], y[start:start + 16])
            stepper.end_epoch()
    stepped = kprune.sparsity_report(kprune.strip(pruned), strict=True)
    return {
        "backend": keras.backend.backend(),
        "seeded_twice_same": same(first.model.get_weights(), again.model.get_weights()),
        "other_seed_differs": not same(first.model.get_weights(), other.model.get_weights()),
        "interrupted": interrupted,
        "checkpoints": sorted(p.name.split("-", 1)[1] for p in folder.iterdir()),
        "resumed_same_masks": same_masks(resumed.masks, first.masks),
        "resumed_same_weights": same(resumed.model.get_weights(), first.model.get_weights()),
        "rewind_note": late.history[-3].note if len(late.history) > 2 else "",
        "rewind_ok": kprune.sparsity_report(late.model, plan=late.plan, strict=True).ok,
        "rewind_zeros_are_the_mask": bool((kept == late.masks["dense_a"]["kernel"]).all()),
        "stepper_fired": [i + 1 for i, f in enumerate(fired) if f],
        "stepper_report": {row.name: [row.method, row.achieved] for row in stepped.rows},
    }


def train_step(model, optimizer, loss_fn, x, y):
    """One gradient step of ``model`` in a custom loop (no ``fit``), on the TensorFlow or
    the JAX backend."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss_of(values):
            outputs, _ = model.stateless_call(values, frozen, x, training=True)
            return loss_fn(y, outputs)

        grads = jax.grad(loss_of)(trainable)
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)


if __name__ == "__main__":  # MNIST_DIR [N_TRAIN]
    print(json.dumps(seed_run(sys.argv[1], **({"n_train": int(sys.argv[2])}
                                                if len(sys.argv) > 2 else {}))))
