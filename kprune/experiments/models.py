"""Built-in ``tf_keras`` MNIST models, by name or from a file.

Every builder returns a fresh, uncompiled ``Sequential`` model taking
(28, 28, 1) images and returning 10 logits, or another ``input_shape`` and
``num_classes`` (the same layers on your data's shape); ``compile_classifier``
compiles any of them the same way (Adam, sparse categorical cross-entropy,
accuracy).

Example:
    >>> from kprune import models
    >>> model = models.compile_classifier(models.build("lenet-300-100"))
    >>> model.count_params()
    266610
    >>> model = models.load("my_model.keras")
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from kprune.engines.classifier import compile_classifier
from kprune.engines.tfkeras import loader

__all__ = [
    "MODELS",
    "build",
    "compile_classifier",
    "lenet_5",
    "lenet_300_100",
    "load",
    "seed_cnn",
    "tfmot_tutorial_cnn",
]

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def seed_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, *, keras=None):
    """The seed CNN: two 5x5 convs (the second with batch norm), a 1024 dense layer.

    3,274,890 parameters. Layers: conv1, pool1, conv2, bn2, relu2, pool2,
    flatten, fc1, dropout, head. ``keras``: the Keras module to build it with (default
    tf_keras; pass ``keras`` itself for a Keras 3 model).

    Example:
        >>> seed_cnn().count_params()
        3274890
        >>> import keras; type(seed_cnn(keras=keras)).__module__
        'keras.src.models.sequential'
    """
    keras = keras or loader.keras
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="image"),
            layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(64, 5, padding="same", name="conv2"),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(name="relu2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(1024, activation="relu", name="fc1"),
            layers.Dropout(0.4, name="dropout"),
            layers.Dense(num_classes, name="head"),
        ],
        name="seed_cnn",
    )


def tfmot_tutorial_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """The CNN of tfmot's ``pruning_with_keras`` tutorial (20,410 parameters).

    Layers: reshape, conv1 (12 3x3), pool1, flatten, head. The tutorial's
    ``Reshape`` is kept (a no-op on image input) so the layer list
    matches it.

    Example:
        >>> tfmot_tutorial_cnn().count_params()
        20410
    """
    layers = loader.keras.layers
    return loader.keras.Sequential(
        [
            loader.keras.Input(shape=input_shape, name="image"),
            layers.Reshape(target_shape=input_shape, name="reshape"),
            layers.Conv2D(12, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Flatten(name="flatten"),
            layers.Dense(num_classes, name="head"),
        ],
        name="tfmot_tutorial_cnn",
    )


def lenet_300_100(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """LeNet-300-100 as in Han et al. 2015 (266,610 parameters, "267K").

    Layers: flatten, fc1 (300), fc2 (100), head.

    Example:
        >>> lenet_300_100().count_params()
        266610
    """
    layers = loader.keras.layers
    return loader.keras.Sequential(
        [
            loader.keras.Input(shape=input_shape, name="image"),
            layers.Flatten(name="flatten"),
            layers.Dense(300, activation="relu", name="fc1"),
            layers.Dense(100, activation="relu", name="fc2"),
            layers.Dense(num_classes, name="head"),
        ],
        name="lenet_300_100",
    )


def lenet_5(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """LeNet-5, the Caffe variant of Han et al. 2015 (431,080 parameters, "431K").

    Layers: conv1 (20 5x5, valid), pool1, conv2 (50 5x5), pool2, flatten,
    fc1 (500, relu), head. As in Caffe's LeNet the convs have no activation.

    Example:
        >>> lenet_5().count_params()
        431080
    """
    layers = loader.keras.layers
    return loader.keras.Sequential(
        [
            loader.keras.Input(shape=input_shape, name="image"),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(num_classes, name="head"),
        ],
        name="lenet_5",
    )


#: Built-in model names and their builders.
MODELS = {
    "seed-cnn": seed_cnn,
    "tfmot-cnn": tfmot_tutorial_cnn,
    "lenet-300-100": lenet_300_100,
    "lenet-5": lenet_5,
}


def build(name, *, input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """Build a fresh, uncompiled built-in model by name (see ``MODELS``).

    ``input_shape`` and ``num_classes`` fit it to other data than MNIST.

    Example:
        >>> build("lenet-5").name
        'lenet_5'
        >>> build("seed-cnn", input_shape=(32, 32, 3), num_classes=5).output_shape
        (None, 5)
    """
    builder = MODELS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise ValueError(_unknown_name_message(name))
    return builder(tuple(input_shape), int(num_classes))


def load(path_or_name, *, custom_objects=None):
    """A built-in model by name, or a model loaded from a ``.keras``/``.h5`` file.

    A built-in name (``MODELS``) builds a fresh model; a ``.keras``/``.h5`` file
    is read with :func:`kprune.load_model` (a damaged or truncated file raises a
    ``ValueError`` that names it), a SavedModel folder with
    ``keras.models.load_model``; ``custom_objects`` is passed through.

    Example:
        >>> load("lenet-300-100").name
        'lenet_300_100'
        >>> model = load("runs/pruned.keras")
    """
    if isinstance(path_or_name, str) and path_or_name in MODELS:
        return build(path_or_name)
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise TypeError(
            "Argument `path_or_name` must be a built-in model name or a path. "
            f"Received: path_or_name={path_or_name!r} of type "
            f"{type(path_or_name).__name__}"
        )
    path = Path(path_or_name)
    if path.is_dir():
        return loader.keras.models.load_model(path, custom_objects=custom_objects)
    if path.exists():
        from kprune.engines.saving import load_model

        return load_model(path, custom_objects=custom_objects)
    if path.suffix in _MODEL_SUFFIXES or len(path.parts) > 1:
        raise FileNotFoundError(
            "Argument `path_or_name` must be a built-in model name or an existing "
            f"model file. Received: path_or_name={str(path_or_name)!r} (no such file)"
        )
    raise ValueError(
        _unknown_name_message(path_or_name, arg="path_or_name", or_path=True)
    )


def _unknown_name_message(name, *, arg="name", or_path=False):
    known = sorted(MODELS)
    close = difflib.get_close_matches(str(name).lower().replace("_", "-"), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    what = (
        "a built-in model name or a path to a model file" if or_path else "a model name"
    )
    return (
        f"Argument `{arg}` must be {what} in {known}. Received: {arg}={name!r}.{hint}"
    )
