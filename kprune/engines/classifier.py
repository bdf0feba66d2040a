"""A classifier as every kprune method compiles and scores it, on either engine.

:func:`compile_classifier` compiles a tf_keras or a Keras 3 model with the Keras it was built
with (Adam, sparse categorical cross-entropy, accuracy); :func:`ends_in_softmax` says whether a
model outputs probabilities or logits; :func:`accuracy` is ``argmax == label``. They sit beside
the engines, below everything that trains or scores a model (structural pruning, the methods,
PQAT, the recipes), so none of those imports a level above its own.

Example:
    >>> from kprune.engines.classifier import accuracy, compile_classifier
    >>> model = compile_classifier(models.seed_cnn(), learning_rate=1e-3)
    >>> model.fit(x_train, y_train, epochs=1)
    >>> accuracy(model, x_test, y_test)
    0.9871
"""

import numpy as np

from kprune.engines import engine_of

__all__ = ["accuracy", "compile_classifier", "ends_in_softmax"]


def accuracy(model, x, y, *, batch_size=256):
    """Classification accuracy: ``argmax(model.predict(x)) == y`` (integer or one-hot ``y``).

    Example:
        >>> accuracy(model, x_test, y_test, batch_size=512)
        0.9871
    """
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] > 1:
        y = np.argmax(y, axis=-1)
    return float(np.mean(np.argmax(predictions, axis=-1) == y.reshape(-1)))


def compile_classifier(model, *, learning_rate=1e-3, optimizer="adam", from_logits=None):
    """Compile ``model`` (tf_keras or Keras 3) for MNIST-style classification; return it.

    ``optimizer`` (a Keras optimizer name, Adam by default) at ``learning_rate``,
    ``SparseCategoricalCrossentropy`` and accuracy.
    ``from_logits=None`` reads it from the last layer: ``False`` if its
    activation is softmax, else ``True`` (the built-in models return logits).

    Example:
        >>> model = compile_classifier(build("tfmot-cnn"), learning_rate=1e-3)
        >>> model.fit(x_train, y_train, epochs=1)
    """
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, (int, float))
        or not learning_rate > 0
    ):
        raise ValueError(
            "Argument `learning_rate` must be a positive number. "
            f"Received: learning_rate={learning_rate!r}"
        )
    if from_logits is None:
        from_logits = not ends_in_softmax(model)
    keras = engine_of(model).keras
    model.compile(  # keywords only: Keras 3's third positional argument is loss_weights
        optimizer=keras.optimizers.get(
            {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=bool(from_logits)),
        metrics=["accuracy"],
    )
    return model


def ends_in_softmax(model):
    """True when ``model`` outputs probabilities (its last layer is a softmax), not logits.

    Example:
        >>> ends_in_softmax(seed_cnn())     # the head is a plain Dense: logits
        False
    """
    from kprune.core.layers import channel_role

    last = model.layers[-1] if model.layers else None
    if last is not None and channel_role(last) == "mixing":  # Softmax, Activation("softmax")
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"
