"""A subclassed Keras 3 model (layers as attributes, a ``call`` method) pruned with the default
plan on real MNIST, for tests on any Keras 3 backend.

``python -m tests.keras3_subclassed MNIST_DIR N_TRAIN`` runs :func:`run` in the backend that
``KERAS_BACKEND`` selects and prints its facts as JSON on the last line.
"""

import json
import sys

import keras


@keras.saving.register_keras_serializable(package="tests")
class SubclassedCNN(keras.Model):
    """Two convs, a Dense and a head, held as attributes and called in ``call``."""

    def __init__(self, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.conv1 = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")
        self.pool = keras.layers.MaxPooling2D(name="pool")
        self.conv2 = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.fc1 = keras.layers.Dense(64, activation="relu", name="fc1")
        self.head = keras.layers.Dense(classes, name="head")

    def call(self, x):
        x = self.pool(self.conv1(x))
        return self.head(self.fc1(self.flatten(self.pool(self.conv2(x)))))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


def run(mnist_dir, n_train, folder):
    """One epoch of the default plan on ``n_train`` MNIST images: the facts, as a dict."""
    import numpy as np

    import kprune
    from kprune.experiments import data

    (x, y), (x_test, y_test) = data.subset(data.load_mnist(mnist_dir, verbose=False),
                                           n_train, 2000, seed=0)
    keras.utils.set_random_seed(0)
    model = SubclassedCNN()
    model(x[:1])
    batch = 64
    steps = -(-len(x) // batch)
    pruned = kprune.apply(model, steps_per_epoch=steps, epochs=1)
    pruned.compile(optimizer="adam", metrics=["accuracy"],
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=kprune.callbacks())
    final = kprune.strip(pruned)
    report = kprune.sparsity_report(final, strict=True)
    try:
        kprune.save_model(pruned, f"{folder}/mid.keras")
        refused = ""
    except ValueError as err:
        refused = str(err)
    kprune.save_model(final, f"{folder}/final.keras")
    loaded = kprune.load_model(f"{folder}/final.keras")
    predicted = np.asarray(final.predict(x_test, verbose=0))
    return {
        "backend": keras.backend.backend(),
        "type": type(final).__name__,
        "report": {row.name: [row.method, round(row.achieved, 3)] for row in report.rows},
        "accuracy": float(np.mean(predicted.argmax(-1) == y_test)),
        "loaded_difference": float(np.abs(np.asarray(loaded.predict(x_test, verbose=0))
                                          - predicted).max()),
        "mid_save_refused": refused,
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
