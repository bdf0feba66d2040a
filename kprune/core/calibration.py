"""Calibration data: unlabeled model inputs, checked against the model and cut in batches.

Post-training pruning and calibration-based importance take the same calibration sets: an
array, a dict of arrays (keyed by the model's input names), a ``tf.data.Dataset`` or any
iterable of batches (a generator); ``(x, y)`` or ``(x, y, weights)`` elements give their
``x`` (labels are ignored). Every batch is checked before any work starts: the model's
input shape and dtype, finite values, at least one example.

Example:
    >>> batches = calibration_batches(model, x_train[:512], batch_size=128)
    >>> len(batches), batches[0].shape
    (4, (128, 28, 28, 1))
"""

from __future__ import annotations

import numpy as np

from kprune.core.checks import check_int

__all__ = ["calibration_batches", "example_count"]


def _specs(model):
    """``[(name, shape, dtype)]`` of the model's inputs (shape without the batch axis)."""
    specs = []
    for tensor in model.inputs:
        name = str(getattr(tensor, "name", "input")).split(":")[0]
        shape = tuple(None if d is None else int(d) for d in tuple(tensor.shape)[1:])
        dtype = getattr(tensor.dtype, "name", str(tensor.dtype))
        specs.append((name, shape, dtype))
    return specs


def _x_of(element):
    """The model input of a dataset element: ``x`` of ``(x, y)`` / ``(x, y, w)``."""
    if isinstance(element, tuple) and len(element) in (2, 3):
        return element[0]
    return element


def _as_numpy(value):
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def _describe_specs(specs):
    return ", ".join(f"{name!r} (None, {', '.join(map(str, shape))}) {dtype}".replace(", )", ")")
                     for name, shape, dtype in specs)


def _check_batch(batch, spec, specs):
    name, shape, dtype = spec
    expected = f"the model's input {_describe_specs([spec])}"
    if batch.dtype == object or batch.dtype.kind not in "biuf":
        raise TypeError(f"Argument `calibration` must hold numbers for {expected}. "
                        f"Received: an array of dtype {batch.dtype}")
    if np.dtype(dtype).kind in "iu" and batch.dtype.kind == "f":
        raise TypeError(f"Argument `calibration` must hold integers for {expected}. "
                        f"Received: an array of dtype {batch.dtype}")
    if batch.ndim != len(shape) + 1 or any(
            want is not None and want != got for want, got in zip(shape, batch.shape[1:])):
        raise ValueError(f"Argument `calibration` must hold batches shaped like {expected}. "
                         f"Received: a batch of shape {batch.shape}")
    if batch.dtype.kind == "f" and not np.all(np.isfinite(batch)):
        raise ValueError("Argument `calibration` holds NaN or infinite values; calibration "
                         f"inputs must be finite. Received: a batch of shape {batch.shape}")


def _split(value, specs):
    """One batch as ``{input name: array}`` (a single-input model may pass a bare array)."""
    if isinstance(value, dict):
        names = [name for name, _, _ in specs]
        if sorted(value) != sorted(names):
            raise ValueError(f"Argument `calibration` must be keyed by the model's input names "
                             f"{names}. Received: keys {sorted(value)}")
        return {name: _as_numpy(value[name]) for name in names}
    if isinstance(value, (list, tuple)) and len(specs) > 1:
        if len(value) != len(specs):
            raise ValueError(f"Argument `calibration` must give {len(specs)} inputs "
                             f"({_describe_specs(specs)}). Received: {len(value)}")
        return {name: _as_numpy(v) for (name, _, _), v in zip(specs, value)}
    if len(specs) != 1:
        raise ValueError(f"Argument `calibration` must give the model's {len(specs)} inputs "
                         f"({_describe_specs(specs)}) as a dict. Received: one array")
    return {specs[0][0]: _as_numpy(value)}


def _joined(parts, specs):
    """A batch in the form the model is called with: a bare array for one input."""
    if len(specs) == 1:
        return parts[specs[0][0]]
    return parts


def calibration_batches(model, calibration, *, batch_size=64):
    """``calibration`` as a list of checked batches of ``model``'s inputs.

    Args:
        model: the model the inputs are for (tf_keras or Keras 3; its ``inputs`` give the
            expected shapes and dtypes).
        calibration: an array or dict of arrays (all examples; cut into ``batch_size``),
            a ``tf.data.Dataset`` or an iterable of batches (each used as it comes;
            ``(x, y)`` pairs give ``x``).
        batch_size: examples per batch when ``calibration`` is an array or a dict.

    Raises:
        ValueError / TypeError: an empty set, a wrong shape or dtype (the model's expected
        input named), NaN or infinite values.
    """
    check_int(batch_size, "batch_size")
    specs = _specs(model)
    if isinstance(calibration, (np.ndarray, dict)) or hasattr(calibration, "__array__"):
        whole = _split(calibration, specs)
        count = len(next(iter(whole.values())))
        chunks = [{name: v[start:start + batch_size] for name, v in whole.items()}
                  for start in range(0, count, batch_size)]
    elif hasattr(calibration, "as_numpy_iterator") or hasattr(calibration, "__iter__"):
        if isinstance(calibration, (str, bytes)):
            raise TypeError("Argument `calibration` must be an array, a dict of arrays, a "
                            f"tf.data.Dataset or an iterable of batches. Received: {calibration!r}")
        chunks = [_split(_x_of(element), specs) for element in calibration]
    else:
        raise TypeError("Argument `calibration` must be an array, a dict of arrays, a "
                        "tf.data.Dataset or an iterable of batches. Received: "
                        f"{type(calibration).__name__}")
    batches = []
    for parts in chunks:
        for spec in specs:
            _check_batch(parts[spec[0]], spec, specs)
        if len(next(iter(parts.values()))):
            batches.append(_joined(parts, specs))
    if not batches:
        raise ValueError("Argument `calibration` is empty: give at least one example "
                         f"(for {_describe_specs(specs)}).")
    return batches


def example_count(batches):
    """How many examples ``batches`` (from :func:`calibration_batches`) hold."""
    return sum(len(next(iter(b.values()))) if isinstance(b, dict) else len(b) for b in batches)
