"""Data for experiments: any image (or vector) classification data, saying what it loaded.

:func:`load_data` takes one *source* and returns a :class:`Dataset` of NumPy arrays
(training, optional validation, test), checked and, when a model is given, fitted to it:

- ``"mnist"``: the best MNIST available (:func:`kprune.data.load_mnist`, unchanged);
- ``"fashion-mnist"``: Fashion-MNIST from the Keras cache (``~/.keras/datasets/fashion-mnist``);
  a folder of its four IDX files works as any IDX folder below;
- an ``.npz`` file with ``x_train, y_train, x_test, y_test``: images ``(N, H, W)`` or
  ``(N, H, W, C)`` or flat vectors ``(N, D)``, uint8 or float; integer labels, any count;
- a folder of the four MNIST-layout IDX files;
- a folder of images in class subfolders, read with Keras'
  ``image_dataset_from_directory``: with ``train/`` and ``test/`` inside, or one folder
  split ``test_split`` per class (seeded); the image size is the model's input size unless
  given, the colour mode its channel count;
- from Python: a :class:`Dataset`, arrays ``((x_train, y_train), (x_test, y_test))``, or
  two ``tf.data.Dataset`` of ``(x, y)`` (batched or not), ``(train, test)``.

Normalisation is yours: ``scale="auto"`` divides pixel data (uint8 arrays, image files) by
255 unless the model scales its own inputs (a ``Rescaling`` layer); a number divides by it;
``None`` keeps the values. Nothing assumes 28x28 or 10 classes.

Example:
    >>> from kprune.experiments import sources
    >>> data = sources.load_data("my_data.npz", model=model)
    kprune: npz file my_data.npz: 600 train / 200 test examples of 32x32x3 (uint8 / 255), 5 classes
    >>> data = data.subset(300, 100, seed=0).hold_out(0.1, seed=0)
    >>> data.x_train.shape, data.x_val.shape
    ((270, 32, 32, 3), (30, 32, 32, 3))
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from pathlib import Path

import numpy as np

from kprune.experiments.data import error_text, read_npz

__all__ = ["Dataset", "load_data", "NAMED_SOURCES", "IMAGE_SUFFIXES", "check_scale"]

#: Sources given by name rather than by path.
NAMED_SOURCES = ("mnist", "fashion-mnist")
#: Image files ``image_dataset_from_directory`` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_COLOR_MODES = {1: "grayscale", 3: "rgb", 4: "rgba"}
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                    "Shirt", "Sneaker", "Bag", "Ankle boot")
_SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Training, optional validation, and test arrays, with where they came from.

    ``files`` (image folders only) holds each example's file path per split, so a split
    can be checked against another. ``scale`` is the divisor the pixels were divided by.

    Example:
        >>> data = Dataset(x, y, x_test, y_test, source="arrays")
        >>> data.num_classes, data.input_shape
        (5, (32, 32, 3))
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = "arrays"
    class_names: tuple | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    files: dict | None = None
    scale: float | None = None

    @property
    def input_shape(self):
        """One example's shape, e.g. ``(32, 32, 3)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self):
        """The class count: the class names given, else the largest label + 1."""
        if self.class_names:
            return len(self.class_names)
        labels = [y for y in (self.y_train, self.y_val, self.y_test) if y is not None and len(y)]
        return int(max(y.max() for y in labels)) + 1

    @property
    def counts(self):
        """``{"train": n, "validation": n, "test": n}``."""
        return {"train": len(self.x_train),
                "validation": 0 if self.x_val is None else len(self.x_val),
                "test": len(self.x_test)}

    def __str__(self):
        counts = self.counts
        split = f"{counts['train']:,} train / "
        if counts["validation"]:
            split += f"{counts['validation']:,} validation / "
        shape = "x".join(map(str, self.input_shape))
        scale = "" if not self.scale or self.scale == 1 else f" / {self.scale:g}"
        return (f"{self.source}: {split}{counts['test']:,} test examples of {shape} "
                f"({self.x_train.dtype}{scale}), {self.num_classes} classes")

    def to_dict(self):
        """What was loaded, for reports: source, counts, input shape, classes, scale."""
        return {"source": self.source, **self.counts, "input_shape": list(self.input_shape),
                "classes": self.num_classes,
                "class_names": list(self.class_names) if self.class_names else None,
                "scale": self.scale}

    def split_description(self, split="test"):
        """What a report measured on this split says: ``{"source", "split", "classes"}``."""
        return {"source": self.source, "split": split, "classes": self.num_classes}

    def subset(self, n_train=None, n_test=None, *, seed=0):
        """A seeded random sample of the train and test splits (``None``: all of one).

        The same sample as :func:`kprune.data.subset` takes for the same ``seed``.
        """
        from kprune.experiments.data import subset

        n_train = len(self.x_train) if n_train is None else min(n_train, len(self.x_train))
        n_test = len(self.x_test) if n_test is None else min(n_test, len(self.x_test))
        train, test = np.arange(len(self.x_train)), np.arange(len(self.x_test))
        (train, _), (test, _) = subset(((train, train), (test, test)), n_train, n_test,
                                       seed=seed)
        return self._take({"train": train, "test": test})

    def hold_out(self, validation, *, seed=0):
        """Hold a validation split (a fraction or a count) out of the training split.

        Seeded as :func:`kprune.trainer.split_validation`; the test split is untouched.
        """
        from kprune.methods.trainer import validation_indices

        if self.x_val is not None:
            raise ValueError(f"This dataset already holds a validation split. Received: {self}")
        train, val = validation_indices(len(self.x_train), validation, seed=seed)
        return self._take({"train": train, "val": val}, val_from_train=True)

    def _take(self, indices, val_from_train=False):
        arrays = {}
        for split in _SPLITS:
            origin = "train" if split == "val" and val_from_train else split
            x, y = getattr(self, f"x_{origin}"), getattr(self, f"y_{origin}")
            if split in indices and x is not None:
                x, y = x[indices[split]], y[indices[split]]
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        files = None
        if self.files:
            files = {split: (self.files.get("train" if split == "val" and val_from_train
                                            else split))
                     for split in _SPLITS}
            files = {split: (paths if split not in indices or paths is None
                             else paths[indices[split]])
                     for split, paths in files.items()}
        return dataclasses.replace(self, files=files, **arrays)

    def fit_to(self, model):
        """The same data shaped for ``model``, checked before any training.

        Adds a channel axis to ``(N, H, W)`` images for a ``(H, W, 1)`` input and flattens
        images for a flat input (or the reverse) when the sizes agree; refuses an input
        shape or a class count the model cannot take, naming both.
        """
        want, units = _model_io(model)
        got = self.input_shape
        if _fits(want, got):
            shape = None
        elif len(want) == len(got) + 1 and want[-1] == 1 and _fits(want[:-1], got):
            shape = got + (1,)
        elif (1 in (len(want), len(got)) and None not in want
              and math.prod(want) == math.prod(got)):
            shape = want
        else:
            raise ValueError(
                f"The data does not fit the model: {self.source} holds examples of shape "
                f"{_shape_text(got)} but model {model.name!r} takes inputs of shape "
                f"{_shape_text(want)}. Resize the data or use a model built for "
                f"{_shape_text(got)}."
            )
        if self.num_classes > units:
            raise ValueError(
                f"The data does not fit the model: {self.source} has {self.num_classes} "
                f"classes (labels 0..{self.num_classes - 1}) but model {model.name!r} has "
                f"{units} outputs. Use a model with one output per class."
            )
        if shape is None:
            return self
        arrays = {f"x_{split}": x.reshape(len(x), *shape)
                  for split in _SPLITS
                  if (x := getattr(self, f"x_{split}")) is not None}
        return dataclasses.replace(self, **arrays)


def check_scale(scale):
    """Return ``scale`` if it is ``"auto"``, ``None`` or a positive number; else raise.

    ``"none"`` (as a recipe or the command line may spell it) is ``None``.
    """
    scale = None if scale == "none" else scale
    ok = scale in ("auto", None) or (
        isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0)
    if not ok:
        raise ValueError(
            "Argument `scale` must be 'auto', a positive number (the pixels are divided by "
            f"it, e.g. 255) or None (the values as they are). Received: scale={scale!r}"
        )
    return scale


def load_data(source, *, model=None, scale="auto", image_size=None, test_split=0.2, seed=0,
              verbose=True):
    """Load ``source`` (see the module doc) as a :class:`Dataset`, fitted to ``model`` if given.

    Args:
        source: a name in :data:`NAMED_SOURCES`, a path, a :class:`Dataset`, arrays or two
            ``tf.data.Dataset``.
        model: the classifier the data is for: image folders take its input size and
            channels, and the data is checked against its input shape and class count.
        scale: ``"auto"``, a positive divisor, or ``None`` (see the module doc).
        image_size: ``(height, width)`` for image folders when the model does not fix it
            (default: the first image's size).
        test_split: the fraction of each class held out as the test split of an image
            folder without ``train/`` and ``test/`` subfolders.
        seed: the seed of that split.
        verbose: print one line saying what was loaded.

    Example:
        >>> data = load_data("images/", model=model)          # images/<class>/<file>.png
        kprune: image folder images/: 400 train / 100 test examples of 32x32x3 (float32 / 255), 5 classes
    """
    scale = check_scale(scale)
    if isinstance(source, Dataset):
        data = source
    elif isinstance(source, (str, Path)):
        data = _load_named_or_path(source, model, image_size, test_split, seed)
    else:
        data = _load_python(source)
    if scale == "auto":
        pixels = data.x_train.dtype == np.uint8 or data.source.startswith("image folder")
        scale = 255 if pixels and not _rescales(model) else None
    if scale is not None and data.scale is None:
        arrays = {f"x_{split}": x.astype(np.float32) / np.float32(scale)
                  for split in _SPLITS if (x := getattr(data, f"x_{split}")) is not None}
        data = dataclasses.replace(data, scale=float(scale), **arrays)
    if model is not None:
        data = data.fit_to(model)
    if verbose:
        print(f"kprune: {data}")
    return data


# -- sources ---------------------------------------------------------------------------


def _load_named_or_path(source, model, image_size, test_split, seed):
    from kprune.experiments import data as mnist

    if source == "mnist":
        (train, test), found = mnist.load_mnist_with_source(normalize=False, verbose=False)
        return _from_arrays(train, test, found.origin, class_names=tuple("0123456789"))
    if source == "fashion-mnist":
        folder = Path("~/.keras/datasets/fashion-mnist").expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Fashion-MNIST is not in the Keras cache ({folder}) and kprune does not "
                "download at run time. Give the folder of its four IDX files instead "
                "(train-images-idx3-ubyte.gz, ...). Received: source='fashion-mnist'"
            )
        train, test = mnist.read_idx_folder(folder)
        return _from_arrays(train, test, f"Fashion-MNIST from {folder}",
                            class_names=_FASHION_CLASSES)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(
                "Argument `source` must be 'mnist', 'fashion-mnist', an .npz file or a "
                f"folder. Received: source={str(source)!r} (a {path.suffix or 'suffix-less'} "
                "file)"
            )
        return _load_npz(path)
    if path.is_dir():
        if any((path / name).exists() or (path / f"{name}.gz").exists()
               for name in mnist.IDX_FILES.values()):
            train, test = mnist.read_idx_folder(path)
            return _from_arrays(train, test, f"IDX files in {path}")
        return _load_image_folder(path, model, image_size, test_split, seed)
    raise FileNotFoundError(
        "Argument `source` must be 'mnist', 'fashion-mnist', an existing .npz file or an "
        f"existing folder. Received: source={str(source)!r} (nothing at this path)"
    )


def _load_npz(path):
    try:
        arrays = read_npz(path, _NPZ_KEYS)
    except ValueError as err:
        raise ValueError(f"{path}: {err}.") from None
    return _from_arrays((arrays["x_train"], arrays["y_train"]),
                        (arrays["x_test"], arrays["y_test"]), f"npz file {path}")


def _load_image_folder(folder, model, image_size, test_split, seed):
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        names = _class_folders(folder / "train")
        if _class_folders(folder / "test") != names:
            raise ValueError(
                f"Image folder {folder}: train/ and test/ must hold the same class "
                f"subfolders. Received: train/ {list(names)}, test/ "
                f"{list(_class_folders(folder / 'test'))}"
            )
        size, mode = _image_size_and_mode(folder / "train", model, image_size)
        (x_train, y_train, f_train), (x_test, y_test, f_test) = (
            _read_images(folder / split, names, size, mode) for split in ("train", "test"))
        text = f"image folder {folder} (train/, test/)"
    else:
        if (isinstance(test_split, bool) or not isinstance(test_split, float)
                or not 0 < test_split < 1):
            raise ValueError("Argument `test_split` must be a fraction in (0, 1). "
                             f"Received: test_split={test_split!r}")
        names = _class_folders(folder)
        size, mode = _image_size_and_mode(folder, model, image_size)
        x, y, files = _read_images(folder, names, size, mode)
        test = _stratified_sample(y, test_split, seed)
        train = np.setdiff1d(np.arange(len(y)), test)
        x_train, y_train, f_train = x[train], y[train], files[train]
        x_test, y_test, f_test = x[test], y[test], files[test]
        text = f"image folder {folder} (test split {test_split:g} per class, seed {seed})"
    data = _from_arrays((x_train, y_train), (x_test, y_test), text, class_names=names)
    return dataclasses.replace(data, files={"train": f_train, "val": None, "test": f_test})


def _class_folders(folder):
    names = tuple(sorted(p.name for p in folder.iterdir()
                         if p.is_dir() and not p.name.startswith(".")))
    if len(names) < 2:
        found = f"one class subfolder ({names[0]!r})" if names else "no class subfolders"
        raise ValueError(
            f"Image folder {folder} has {found}; a classifier needs images in at least two "
            "class subfolders (folder/<class>/<image>), or train/ and test/ holding them."
        )
    return names


def _image_size_and_mode(folder, model, image_size):
    """``((height, width), color_mode)`` from the model, ``image_size``, or the first image."""
    channels = None
    if model is not None:
        want, _ = _model_io(model)
        if len(want) == 3:
            channels = want[-1]
            if image_size is None and None not in want[:2]:
                image_size = want[:2]
    if image_size is None:
        image_size, found = _first_image_shape(folder)
        channels = channels or found
    if (not isinstance(image_size, (list, tuple)) or len(image_size) != 2
            or not all(isinstance(d, int) and d > 0 for d in image_size)):
        raise ValueError("Argument `image_size` must be (height, width) in pixels. "
                         f"Received: image_size={image_size!r}")
    channels = channels or 3
    if channels not in _COLOR_MODES:
        raise ValueError(
            f"The model takes {channels} channels; image folders give 1 (grayscale), 3 (RGB) "
            f"or 4 (RGBA). Received: model input with {channels} channels"
        )
    return tuple(image_size), _COLOR_MODES[channels]


def _first_image_shape(folder):
    from kprune.engines.tfkeras import loader

    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                image = loader.tf.io.decode_image(loader.tf.io.read_file(str(path)),
                                                   expand_animations=False)
            except (loader.tf.errors.OpError, ValueError) as err:
                raise ValueError(f"{path}: not a readable image ({error_text(err)}).") from None
            height, width, channels = image.shape
            return (int(height), int(width)), int(channels)
    raise ValueError(f"Image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")


def _read_images(folder, names, size, mode):
    """All images under ``folder/<class>/`` as ``(x float32, y int32, file paths)``."""
    from kprune.engines.tfkeras import loader

    for name in names:
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in (folder / name).rglob("*")):
            raise ValueError(f"Class folder {folder / name} holds no images "
                             f"({', '.join(IMAGE_SUFFIXES)}).")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its "Found N files": we say more
            dataset = loader.keras.utils.image_dataset_from_directory(
                str(folder), labels="inferred", label_mode="int", class_names=list(names),
                color_mode=mode, batch_size=256, image_size=size, shuffle=False)
        xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    except (loader.tf.errors.OpError, ValueError) as err:
        raise ValueError(f"Image folder {folder}: an image could not be read "
                         f"({error_text(err)}).") from None
    return np.concatenate(xs), np.concatenate(ys).astype(np.int32), np.asarray(
        dataset.file_paths)


def _stratified_sample(y, fraction, seed):
    """Indices of ``fraction`` of each class (at least one), seeded, sorted."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < 2:
            raise ValueError(f"Class {label} has {len(members)} image; each class needs at "
                             "least two to appear in both the train and the test split.")
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        picked.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(picked))


def _load_python(source):
    from kprune.engines.tfkeras import loader

    try:
        train, test = source
    except (TypeError, ValueError):
        train = test = None
    if isinstance(train, loader.tf.data.Dataset) and isinstance(test, loader.tf.data.Dataset):
        return _from_arrays(_materialise(train, "train"), _materialise(test, "test"),
                            "tf.data datasets")
    try:
        (x_train, y_train), (x_test, y_test) = source
    except (TypeError, ValueError):
        raise TypeError(
            "Argument `source` must be a name, a path, a kprune Dataset, arrays "
            "((x_train, y_train), (x_test, y_test)) or two tf.data.Dataset (train, test). "
            f"Received: source of type {type(source).__name__}"
        ) from None
    return _from_arrays((x_train, y_train), (x_test, y_test), "arrays")


def _materialise(dataset, split):
    """Read a ``tf.data.Dataset`` of ``(x, y)`` (batched or not) into two arrays."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise TypeError(f"The {split} tf.data.Dataset must yield (x, y) pairs. "
                        f"Received: element_spec={spec}")
    batched = spec[1].shape.rank == 1  # a label per element: unbatched; a vector: batched
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        xs.append(x if batched else x[None])
        ys.append(y if batched else np.reshape(y, 1))
    if not xs:
        raise ValueError(f"The {split} tf.data.Dataset is empty.")
    return np.concatenate(xs), np.concatenate(ys)


def _from_arrays(train, test, source, *, class_names=None):
    """Check arrays from any source and build the :class:`Dataset`."""
    checked = []
    for split, (x, y) in (("train", train), ("test", test)):
        x, y = np.asarray(x), np.asarray(y)
        where = f"{source}, {split} split"
        if x.ndim not in (2, 3, 4) or x.dtype.kind not in "iuf" or len(x) == 0:
            raise ValueError(
                f"x_{split} must be a non-empty numeric array of images (N, H, W) or "
                f"(N, H, W, C), or of vectors (N, D). Received: shape={x.shape}, "
                f"dtype={x.dtype} ({where})"
            )
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(x):
            hint = " (one-hot labels: pass y.argmax(axis=1))" if y.ndim == 2 else ""
            raise ValueError(
                f"y_{split} must hold one integer label per example{hint}. Received: "
                f"y.shape={y.shape} for x.shape={x.shape} ({where})"
            )
        if y.dtype.kind not in "iuf" or not np.all((y >= 0) & (y == np.round(y))):
            raise ValueError(
                f"y_{split} must hold integer class labels 0, 1, 2, ... Received: "
                f"dtype={y.dtype}, values such as {y[:5].tolist()} ({where})"
            )
        checked.append((x, y.astype(np.int32)))
    (x_train, y_train), (x_test, y_test) = checked
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"x_train and x_test must hold examples of one shape. Received: "
            f"{_shape_text(x_train.shape[1:])} and {_shape_text(x_test.shape[1:])} ({source})"
        )
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"The training split has a single class ({int(y_train[0])}); a "
                         f"classifier needs at least two ({source}).")
    return Dataset(x_train, y_train, x_test, y_test, source=source, class_names=class_names)


# -- model checks ----------------------------------------------------------------------


def _model_io(model):
    """``(input shape without the batch axis, output units)`` of a one-input classifier."""
    inputs, outputs = model.input_shape, model.output_shape
    if isinstance(inputs, list) or isinstance(outputs, list):
        raise ValueError(f"Model {model.name!r} has several inputs or outputs; kprune "
                         "experiments take one input and one class-score output.")
    units = outputs[-1]
    if len(outputs) != 2 or units is None or units < 2:
        raise ValueError(
            f"Model {model.name!r} must output one score per class, shape (batch, classes) "
            f"with at least 2 classes. Received: output shape {outputs}"
        )
    return tuple(inputs[1:]), int(units)


def _fits(want, got):
    return len(want) == len(got) and all(w in (None, g) for w, g in zip(want, got))


def _rescales(model):
    from kprune.core.layers import rescales_inputs

    return model is not None and rescales_inputs(model)


def _shape_text(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
