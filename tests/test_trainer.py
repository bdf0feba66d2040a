"""split_validation: a seeded validation split held out of the training data."""

import numpy as np
import pytest

from kprune.methods.trainer import split_validation


def data(n=100):
    x = np.arange(n * 4, dtype="float32").reshape(n, 2, 2)  # row i holds 4i..4i+3
    y = np.arange(n) % 10
    return x, y


def row_ids(x):
    return set((x[:, 0, 0] // 4).astype(int).tolist())


@pytest.mark.parametrize("validation, n_val", [(0.1, 10), (0.25, 25), (0.001, 1), (30, 30),
                                               (np.int64(7), 7), (np.float32(0.5), 50)])
def test_sizes(validation, n_val):
    x, y = data()
    (x_train, y_train), (x_val, y_val) = split_validation(x, y, validation)
    assert len(x_val) == len(y_val) == n_val
    assert len(x_train) == len(y_train) == 100 - n_val
    assert x_train.shape[1:] == x_val.shape[1:] == (2, 2)


def test_the_splits_are_disjoint_cover_everything_and_keep_pairs():
    x, y = data()
    (x_train, y_train), (x_val, y_val) = split_validation(x, y, 0.2, seed=3)
    train, val = row_ids(x_train), row_ids(x_val)
    assert not train & val
    assert train | val == set(range(100))
    for xs, ys in ((x_train, y_train), (x_val, y_val)):
        np.testing.assert_array_equal((xs[:, 0, 0] // 4).astype(int) % 10, ys)


def test_a_seed_gives_the_same_split_and_another_seed_another():
    x, y = data()
    first = split_validation(x, y, 0.2, seed=1)
    again = split_validation(x, y, 0.2, seed=1)
    other = split_validation(x, y, 0.2, seed=2)
    np.testing.assert_array_equal(first[1][0], again[1][0])
    np.testing.assert_array_equal(first[0][1], again[0][1])
    assert row_ids(first[1][0]) != row_ids(other[1][0])
    assert row_ids(split_validation(x, y, 0.2)[1][0]) == row_ids(
        split_validation(x, y, 0.2, seed=0)[1][0])


def test_a_shuffled_sample_not_the_first_rows():
    x, y = data()
    (_, _), (x_val, _) = split_validation(x, y, 10)
    assert row_ids(x_val) != set(range(10))


def test_lists_are_accepted():
    (x_train, y_train), (x_val, y_val) = split_validation(list(range(10)), list(range(10)), 3)
    assert sorted(x_train.tolist() + x_val.tolist()) == list(range(10))
    np.testing.assert_array_equal(x_val, y_val)


@pytest.mark.parametrize(
    "validation, error, message",
    [
        (0.0, ValueError, r"must be a fraction in \(0, 1\) when it is a float.*"
                          r"Received: validation=0.0"),
        (1.0, ValueError, r"fraction in \(0, 1\).*Received: validation=1.0"),
        (-0.1, ValueError, r"Received: validation=-0.1"),
        (0, ValueError, r"must be a positive integer count.*Received: validation=0"),
        (-5, ValueError, r"Received: validation=-5"),
        (100, ValueError, r"must leave training examples: it holds out 100 of 100.*"
                          r"Received: validation=100 for 100 examples"),
        (250, ValueError, r"holds out 250 of 100"),
        (0.9999, ValueError, r"holds out 100 of 100"),
        ("0.1", TypeError, r"Argument `validation` must be a fraction in \(0, 1\) or a "
                           r"positive integer count. Received: validation='0.1' of type str"),
        (True, TypeError, r"Received: validation=True of type bool"),
        (None, TypeError, r"Received: validation=None"),
    ],
)
def test_bad_validation(validation, error, message):
    x, y = data()
    with pytest.raises(error, match=message):
        split_validation(x, y, validation)


def test_bad_seed_and_mismatched_lengths():
    x, y = data()
    with pytest.raises(ValueError, match=r"Argument `seed` must be an integer >= 0. "
                                         r"Received: seed=-1"):
        split_validation(x, y, 0.1, seed=-1)
    with pytest.raises(ValueError, match=r"Received: seed=None"):
        split_validation(x, y, 0.1, seed=None)
    with pytest.raises(ValueError, match=r"same number of examples. "
                                         r"Received: len\(x\)=100, len\(y\)=99"):
        split_validation(x, y[:99], 0.1)
