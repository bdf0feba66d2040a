"""Keep-masks for weight tensors, in numpy only (no TensorFlow import).

Every mask function returns a boolean array of the input's shape, ``True`` where
a weight is kept. Counts are rounded with Python's ``round`` (half to even):
``magnitude`` and ``random`` prune ``round(size * sparsity)`` weights, ``block``
and ``vector`` prune ``round(count * sparsity)`` blocks or slices. Ties in
magnitude are broken deterministically: among equal scores, the earlier
(C-order) position is kept.

Example:
    >>> import numpy as np
    >>> from kprune import masks
    >>> w = np.array([[0.1, -0.5], [0.3, 0.05]])
    >>> masks.threshold(w, 0.2)
    array([[False,  True],
           [ True, False]])
    >>> masks.apply_mask(w, masks.magnitude(w, 0.5))
    array([[ 0. , -0.5],
           [ 0.3,  0. ]])
"""

import numbers

import numpy as np

__all__ = [
    "apply_mask",
    "block",
    "block_violations",
    "is_n_m",
    "magnitude",
    "n_m",
    "n_m_violations",
    "prune_layer",
    "random",
    "shrink",
    "sparsity",
    "threshold",
    "vector",
]

_POOLS = ("mean", "max")
_NORMS = ("l1", "l2")


# -- validation ---------------------------------------------------------------


def _weights(w, *, name="w", finite=True, min_ndim=0):
    """``w`` as a real numeric numpy array, checked."""
    array = np.asarray(w)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(
            f"Argument `{name}` must be a real numeric array. "
            f"Received: {name} with dtype {array.dtype}"
        )
    if array.ndim < min_ndim:
        raise ValueError(
            f"Argument `{name}` must have at least {min_ndim} dimension(s). "
            f"Received: {name} with shape {array.shape}"
        )
    if finite and np.issubdtype(array.dtype, np.floating):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(
                f"Argument `{name}` must contain only finite values. "
                f"Received: {name} with {bad} non-finite value(s) (NaN or inf)"
            )
    return array


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fraction(value, name="sparsity"):
    if not _is_real(value) or not 0 <= value < 1:
        raise ValueError(
            f"Argument `{name}` must be a fraction in [0, 1). Received: {name}={value!r}"
        )
    return float(value)


def _axis(axis, ndim):
    if not _is_int(axis) or not -ndim <= axis < ndim:
        raise ValueError(
            f"Argument `axis` must be an integer in [{-ndim}, {ndim}) for `w` of rank {ndim}. "
            f"Received: axis={axis!r}"
        )
    return int(axis) % ndim


def _n_m_args(n, m):
    if not (_is_int(n) and _is_int(m) and 0 < n < m):
        raise ValueError(
            f"Arguments `n` and `m` must be integers with 0 < n < m. Received: n={n!r}, m={m!r}"
        )
    return int(n), int(m)


def _choice(value, name, options):
    if value not in options:
        known = ", ".join(repr(o) for o in options)
        raise ValueError(f"Argument `{name}` must be one of {known}. Received: {name}={value!r}")
    return value


def _mask_like(mask, w):
    mask = np.asarray(mask)
    if mask.shape != w.shape:
        raise ValueError(
            f"Argument `mask` must have the shape of `w`, {w.shape}. "
            f"Received: mask with shape {mask.shape}"
        )
    return mask != 0


def _default_axis(w, axis):
    """The input-channel axis of a Keras kernel: ``ndim - 2`` (0 for 1-D)."""
    if axis is None:
        axis = w.ndim - 2 if w.ndim >= 2 else 0
    return _axis(axis, w.ndim)


# -- helpers --------------------------------------------------------------------


def _keep_top(scores, keep):
    """Flat mask keeping the ``keep`` largest scores; ties keep the earlier index."""
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.shape, bool)
    mask[order[:keep]] = True
    return mask.reshape(scores.shape)


def _grouped(values, axis, m, fill):
    """``values`` with ``axis`` moved last, padded with ``fill`` and split into groups of ``m``.

    Returns ``(groups, real)``: both shaped ``(..., length // m rounded up, m)``;
    ``real`` is False on the padding.
    """
    moved = np.moveaxis(values, axis, -1)
    pad = (-moved.shape[-1]) % m
    real = np.ones(moved.shape, bool)
    if pad:
        widths = [(0, 0)] * (moved.ndim - 1) + [(0, pad)]
        moved = np.pad(moved, widths, constant_values=fill)
        real = np.pad(real, widths, constant_values=False)
    shape = moved.shape[:-1] + (moved.shape[-1] // m, m)
    return moved.reshape(shape), real.reshape(shape)


# -- masks ------------------------------------------------------------------------


def _block_shape(shape, w):
    """``shape`` as a tuple of positive ints, one per dimension of ``w``, or ValueError."""
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else shape
    if (
        not isinstance(shape, tuple)
        or len(shape) != w.ndim
        or not all(_is_int(b) and b > 0 for b in shape)
    ):
        raise ValueError(
            f"Argument `shape` must be a tuple of {w.ndim} positive integers, one per "
            f"dimension of `w` {w.shape}. Received: shape={shape!r}"
        )
    return shape


def _blocks(values, shape):
    """``values`` zero-padded to whole blocks of ``shape`` and split as (count, size, ...)
    per dimension, with the axes that run inside a block."""
    counts = [-(-dim // b) for dim, b in zip(values.shape, shape)]
    widths = [(0, c * b - dim) for dim, b, c in zip(values.shape, shape, counts)]
    split = tuple(x for c, b in zip(counts, shape) for x in (c, b))
    return np.pad(values, widths).reshape(split), tuple(range(1, 2 * values.ndim, 2))


def threshold(w, t):
    """Keep the weights with ``|w| >= t``.

    Example:
        >>> threshold(np.array([0.1, -0.2, 0.3]), 0.2)
        array([False,  True,  True])
    """
    w = _weights(w)
    if not _is_real(t) or not np.isfinite(t) or t < 0:
        raise ValueError(f"Argument `t` must be a finite number >= 0. Received: t={t!r}")
    return np.abs(w) >= t


def magnitude(w, sparsity):
    """Unstructured top-k: keep exactly ``size - round(size * sparsity)`` largest ``|w|``.

    Ties keep the earlier flat (C-order) index, so a larger ``|w|`` is never
    dropped while a smaller one is kept.

    Example:
        >>> magnitude(np.array([0.1, -0.4, 0.4, 0.2]), 0.5)
        array([False,  True,  True, False])
    """
    w = _weights(w)
    sparsity = _fraction(sparsity)
    keep = w.size - round(w.size * sparsity)
    return _keep_top(np.abs(w), keep)


def n_m(w, n, m, *, axis=None):
    """N:M structured sparsity: keep the ``n`` largest ``|w|`` in each ``m`` consecutive values.

    Groups run along ``axis``, by default the input-channel axis of a Keras
    kernel (``w.ndim - 2``: 0 for a Dense kernel ``(in, out)``, 2 for a Conv2D
    kernel ``(kh, kw, in, out)``; 0 for 1-D), as TFLite groups them. When the
    axis length is not a multiple of ``m``, the last group is padded with
    slots that count as kept first: a partial group of ``L`` real values keeps
    ``max(0, L - (m - n))`` of them, so padding never stands in for a pruned
    weight (a length-1 axis under 2:4 is zeroed completely). Ties keep the
    earlier position.

    Example:
        >>> n_m(np.array([0.1, -0.4, 0.3, 0.2]), 2, 4)
        array([False,  True,  True, False])
    """
    w = _weights(w, min_ndim=1)
    n, m = _n_m_args(n, m)
    axis = _default_axis(w, axis)
    groups, _ = _grouped(np.abs(w).astype(float), axis, m, fill=np.inf)
    order = np.argsort(-groups, axis=-1, kind="stable")[..., :n]
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order, True, axis=-1)
    length = w.shape[axis]
    keep = keep.reshape(groups.shape[:-2] + (-1,))[..., :length]
    return np.moveaxis(keep, -1, axis)


def block(w, shape, sparsity, *, pool="mean"):
    """Prune whole blocks of ``shape`` with the smallest pooled ``|w|``.

    ``shape`` has one block size per dimension of ``w``; edge blocks may be
    partial and are pooled over the values they hold. ``round(num_blocks *
    sparsity)`` blocks are pruned; ties keep the earlier block.

    Example:
        >>> w = np.array([[1.0, 1.0, 0.1, 0.1], [1.0, 1.0, 0.1, 0.1]])
        >>> block(w, (2, 2), 0.5)
        array([[ True,  True, False, False],
               [ True,  True, False, False]])
    """
    w = _weights(w, min_ndim=1)
    sparsity = _fraction(sparsity)
    pool = _choice(pool, "pool", _POOLS)
    shape = _block_shape(shape, w)
    magnitudes, inner = _blocks(np.abs(w).astype(float), shape)
    if pool == "max":
        pooled = magnitudes.max(axis=inner)
    else:
        real, _ = _blocks(np.ones(w.shape), shape)
        pooled = magnitudes.sum(axis=inner) / real.sum(axis=inner)
    num_blocks = pooled.size
    keep = _keep_top(pooled, num_blocks - round(num_blocks * sparsity))
    for axis, b in enumerate(shape):
        keep = np.repeat(keep, b, axis=axis)
    return keep[tuple(slice(0, dim) for dim in w.shape)]


def vector(w, axis, *, sparsity=None, indices=None, norm="l1"):
    """Remove whole slices along ``axis`` (``axis=0`` on a matrix: rows; ``axis=1``: columns).

    Give exactly one of ``sparsity`` (prune the ``round(count * sparsity)``
    slices with the smallest ``norm``; ties keep the earlier slice) or
    ``indices`` (prune exactly those slices).

    Example:
        >>> vector(np.ones((3, 2)), 0, indices=[1])
        array([[ True,  True],
               [False, False],
               [ True,  True]])
    """
    w = _weights(w, min_ndim=1)
    axis = _axis(axis, w.ndim)
    norm = _choice(norm, "norm", _NORMS)
    if (sparsity is None) == (indices is None):
        raise ValueError(
            "Exactly one of arguments `sparsity` and `indices` must be given. "
            f"Received: sparsity={sparsity!r}, indices={indices!r}"
        )
    count = w.shape[axis]
    if indices is not None:
        chosen = np.asarray(indices)
        if chosen.size == 0:
            chosen = chosen.astype(int)
        if chosen.ndim != 1 or not np.issubdtype(chosen.dtype, np.integer):
            raise ValueError(
                "Argument `indices` must be a 1-D sequence of integers. "
                f"Received: indices={indices!r}"
            )
        if chosen.size and not (chosen.min() >= -count and chosen.max() < count):
            raise ValueError(
                f"Argument `indices` must hold indices in [{-count}, {count}) for axis {axis} "
                f"of `w` {w.shape}. Received: indices={indices!r}"
            )
        keep = np.ones(count, bool)
        keep[chosen] = False
    else:
        sparsity = _fraction(sparsity)
        others = tuple(a for a in range(w.ndim) if a != axis)
        values = w.astype(float)
        if norm == "l1":
            scores = np.abs(values).sum(axis=others)
        else:
            scores = np.sqrt(np.square(values).sum(axis=others))
        keep = _keep_top(scores, count - round(count * sparsity))
    shape = [1] * w.ndim
    shape[axis] = count
    return np.broadcast_to(keep.reshape(shape), w.shape).copy()


def random(w, sparsity, *, seed):
    """A random mask keeping as many weights as ``magnitude`` would: the baseline.

    Example:
        >>> int(random(np.ones(10), 0.3, seed=0).sum())
        7
    """
    w = _weights(w)
    sparsity = _fraction(sparsity)
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"Argument `seed` must be an integer >= 0. Received: seed={seed!r}")
    keep = w.size - round(w.size * sparsity)
    chosen = np.random.default_rng(int(seed)).permutation(w.size)[:keep]
    mask = np.zeros(w.size, bool)
    mask[chosen] = True
    return mask.reshape(w.shape)


# -- applying -------------------------------------------------------------------------


def apply_mask(w, mask):
    """``w * mask`` as a new array of ``w``'s dtype (pruned entries are exactly 0).

    Example:
        >>> apply_mask(np.array([1.5, 2.0]), np.array([True, False]))
        array([1.5, 0. ])
    """
    w = _weights(w, finite=False)
    mask = _mask_like(mask, w)
    return np.where(mask, w, np.zeros((), w.dtype)).astype(w.dtype)


def shrink(w, mask):
    """Drop every slice (along any axis) that ``mask`` prunes entirely.

    Returns ``(smaller, kept_indices)``: ``smaller`` is ``apply_mask(w, mask)``
    restricted to the surviving slices and ``kept_indices`` holds one int array
    per axis.

    Example:
        >>> w = np.arange(1.0, 10.0).reshape(3, 3)
        >>> small, kept = shrink(w, vector(w, 0, indices=[1]))
        >>> small.shape, kept[0]
        ((2, 3), array([0, 2]))
    """
    w = _weights(w, finite=False, min_ndim=1)
    mask = _mask_like(mask, w)
    kept = tuple(
        np.flatnonzero(mask.any(axis=tuple(a for a in range(w.ndim) if a != axis)))
        for axis in range(w.ndim)
    )
    return apply_mask(w, mask)[np.ix_(*kept)], kept


# -- checks ---------------------------------------------------------------------------


def sparsity(w):
    """Fraction of exact zeros in ``w`` (0.0 for an empty array).

    Example:
        >>> sparsity(np.array([0.0, 1.0, 0.0, 2.0]))
        0.5
    """
    w = _weights(w, finite=False)
    return float(1.0 - np.count_nonzero(w) / w.size) if w.size else 0.0


def n_m_violations(w, n, m, *, axis=None):
    """Number of groups of ``m`` along ``axis`` with fewer than ``m - n`` zeros.

    Only real values count: a partial last group must hold ``m - n`` zeros
    among its own values (padding is never a zero), so a group shorter than
    ``m - n`` is always a violation. ``axis`` defaults as in ``n_m``.

    Example:
        >>> n_m_violations(np.array([0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]), 2, 4)
        1
    """
    w = _weights(w, finite=False, min_ndim=1)
    n, m = _n_m_args(n, m)
    axis = _default_axis(w, axis)
    groups, real = _grouped(w, axis, m, fill=0)
    zeros = np.sum((groups == 0) & real, axis=-1)
    return int(np.sum(zeros < m - n))


def block_violations(w, shape):
    """Number of blocks of ``shape`` that are partly zero: zeros that do not fill their block.

    A partial edge block counts only its own values. Blocks wholly zero or wholly
    non-zero are fine, so ``0`` means every zero of ``w`` lies in a block of zeros.

    Example:
        >>> block_violations(np.array([[0.0, 0.0, 1.0, 0.0]]), (1, 2))
        1
    """
    w = _weights(w, finite=False, min_ndim=1)
    shape = _block_shape(shape, w)
    zeros, inner = _blocks((w == 0).astype(np.int64), shape)
    real, _ = _blocks(np.ones(w.shape, np.int64), shape)
    zeros, real = zeros.sum(axis=inner), real.sum(axis=inner)
    return int(np.sum((zeros > 0) & (zeros < real)))


def is_n_m(w, n, m, *, axis=None):
    """True iff every group of ``m`` along ``axis`` has at least ``m - n`` real zeros.

    Unlike tfmot's ``is_pruned_m_by_n``, padding is never counted as a zero,
    so a length-1 axis is never 2:4.

    Example:
        >>> is_n_m(np.array([[0.0], [1.0], [0.0], [2.0]]), 2, 4)
        True
        >>> is_n_m(np.ones((1, 8)), 2, 4)
        False
    """
    return n_m_violations(w, n, m, axis=axis) == 0


# -- layers ---------------------------------------------------------------------------

_METHODS = {
    "block": block,
    "magnitude": magnitude,
    "n_m": n_m,
    "random": random,
    "threshold": threshold,
    "vector": vector,
}


def prune_layer(layer, method, **kwargs):
    """One-shot pruning of a built Keras layer's kernel, outside tfmot's wrappers.

    Finds ``layer.kernel`` (or ``layer.depthwise_kernel``), computes the mask
    with ``method`` (a name in this module: ``"threshold"``, ``"magnitude"``,
    ``"n_m"``, ``"block"``, ``"vector"``, ``"random"``) and ``kwargs``, assigns
    ``kernel * mask`` and returns the mask.

    Example:
        >>> mask = prune_layer(model.layers[1], "n_m", n=2, m=4)
    """
    if method not in _METHODS:
        known = ", ".join(repr(name) for name in sorted(_METHODS))
        raise ValueError(f"Argument `method` must be one of {known}. Received: method={method!r}")
    kernel = None
    for attribute in ("kernel", "depthwise_kernel"):
        kernel = getattr(layer, attribute, None)
        if kernel is not None:
            break
    if kernel is None or not hasattr(kernel, "assign"):
        name = getattr(layer, "name", None)
        raise ValueError(
            f"Layer {name!r} ({type(layer).__name__}) has no kernel to prune: expected a built "
            "layer with a `kernel` or `depthwise_kernel` variable."
        )
    values = np.asarray(kernel.numpy() if hasattr(kernel, "numpy") else kernel)
    mask = _METHODS[method](values, **kwargs)
    kernel.assign(apply_mask(values, mask))
    return mask
