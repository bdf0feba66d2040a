"""Layer-wise post-training pruning, in numpy: which weights of one layer to zero, and (for
SparseGPT) how to update the rest, from statistics of the layer's calibration inputs.

A layer is a matrix product ``y = x @ w`` with ``w`` shaped ``[inputs, outputs]`` (a Keras
Dense kernel; a convolution's kernel reshaped to ``[kh * kw * in, out]`` over its input
patches). Its calibration inputs ``x`` (``[rows, inputs]``) are reduced as they stream in
by :class:`InputStatistics` to what the methods need: the squared norm of each input
(Wanda) and ``H = 2 XᵀX / rows`` (SparseGPT's Hessian of the layer's squared error).

The methods, each as published, all keep ``n`` of every ``m`` consecutive inputs of one
output for N:M (the input axis of a Keras kernel, as tfmot and TFLite group them):

- :func:`magnitude_mask`: the smallest ``|w|`` of the whole layer (the baseline).
- :func:`wanda_mask`: Sun et al. 2023, score ``|w_ij| * ||x_i||₂``, compared within each
  output unit (a column of a Keras kernel: the paper's per-row comparison in ``[out, in]``).
- :func:`sparsegpt`: Frantar & Alistarh 2023: inputs that never fire get diagonal 1 and their
  weights zeroed, dampening, the upper Cholesky factor of ``H⁻¹``, columns in blocks with
  the mask chosen per block by ``w² / [H⁻¹]²_jj``, each pruned weight's error compensated
  on the inputs not yet processed, lazily per block.

Memory: :class:`InputStatistics` holds one ``inputs x inputs`` float64 matrix (8 d² bytes
for d inputs), SparseGPT two more while it solves.

Example:
    >>> stats = InputStatistics(4)
    >>> stats.add(np.random.default_rng(0).normal(size=(64, 4)))
    >>> kernel = np.random.default_rng(1).normal(size=(4, 3))
    >>> pruned = sparsegpt(kernel, stats.hessian(), sparsity=0.5)
    >>> float((pruned == 0).mean())
    0.5
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "InputStatistics",
    "SingularHessianWarning",
    "magnitude_mask",
    "wanda_mask",
    "sparsegpt",
    "reconstruction_error",
    "dense_output_error",
    "patches",
]


class SingularHessianWarning(UserWarning):
    """The calibration inputs of a layer span fewer dimensions than it has inputs: SparseGPT
    runs on the dampened Hessian, and its updates rest on fewer examples than it would like."""


class InputStatistics:
    """What the post-training methods need of a layer's calibration inputs, accumulated in
    batches: ``rows``, ``XᵀX``, the sum and the squared norm of each input and, when
    ``paired``, the same layer's inputs in the dense model row for row (``dense``: its
    statistics; ``cross``: ``XᵀX_dense``), to fit the pruned layer to the dense outputs.

    Example:
        >>> stats = InputStatistics(3)
        >>> stats.add(np.ones((2, 3)))
        >>> stats.rows, stats.input_norms().tolist()
        (2, [1.4142135623730951, 1.4142135623730951, 1.4142135623730951])
    """

    def __init__(self, inputs, *, gram=True, paired=False):
        self.inputs = int(inputs)
        self.rows = 0
        self.squares = np.zeros(self.inputs)
        self.sums = np.zeros(self.inputs)
        self.gram = np.zeros((self.inputs, self.inputs)) if gram else None
        self.dense = InputStatistics(inputs) if paired else None
        self.cross = np.zeros((self.inputs, self.inputs)) if paired else None

    def add(self, x, dense=None):
        """Add a batch of inputs ``x`` shaped ``[rows, inputs]`` (and, when paired, the rows
        ``dense`` that the dense model gives the layer for the same examples)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.inputs)
        if (dense is None) != (self.dense is None):
            raise ValueError("Paired statistics take `dense` rows with every batch, unpaired "
                             f"ones none. Received: dense given: {dense is not None}")
        self.rows += x.shape[0]
        self.squares += np.einsum("ij,ij->j", x, x)
        self.sums += x.sum(axis=0)
        if self.gram is not None:
            self.gram += x.T @ x
        if dense is not None:
            dense = np.asarray(dense, dtype=np.float64).reshape(x.shape)
            self.dense.add(dense)
            self.cross += x.T @ dense

    def input_norms(self):
        """``||x_i||₂`` of each input over all rows (Wanda's activation factor)."""
        return np.sqrt(self.squares)

    def hessian(self, *, centered=False):
        """``H = 2 XᵀX / rows``, the Hessian of the layer's squared reconstruction error;
        ``centered``: of the error less its mean over the rows (``2 Cov(X)``), the error
        that remains when a batch norm recalibrated after the layer absorbs the mean."""
        if self.gram is None:
            raise ValueError("These statistics were gathered with gram=False: no Hessian.")
        if self.rows == 0:
            raise ValueError("No calibration rows were added: no Hessian.")
        return 2.0 * _moment(self.gram, self.sums, self.sums, self.rows, centered)

    def dense_targets(self, kernel, *, centered=False, dampening=0.01):
        """The kernel whose outputs on these (pruned-model) inputs come closest, in least
        squares, to the dense model's outputs ``X_dense @ kernel``: ``(H + λI)⁻¹ C kernel``
        (``C = 2 XᵀX_dense / rows``, ``λ`` the dampening as a share of H's mean diagonal,
        as SparseGPT's). Pruning it by SparseGPT on ``H`` then fits the dense outputs, not
        the layer's own outputs on inputs that earlier pruned layers already changed
        (asymmetric calibration, as AdaRound and GPTAQ do for quantization)."""
        if self.dense is None:
            raise ValueError("These statistics were gathered without the dense model's "
                             "inputs (paired=False): no dense targets.")
        hessian = self.hessian(centered=centered)
        cross = 2.0 * _moment(self.cross, self.sums, self.dense.sums, self.rows, centered)
        damp = dampening * float(np.mean(np.diag(hessian)))
        return np.linalg.solve(hessian + damp * np.eye(self.inputs),
                               cross @ np.asarray(kernel, np.float64))


def _moment(products, sums_a, sums_b, rows, centered):
    """``AᵀB / rows`` from its sums, less ``mean(A)ᵀmean(B)`` when ``centered``."""
    moment = products / rows
    if centered:
        moment = moment - np.outer(sums_a / rows, sums_b / rows)
    if centered and sums_a is sums_b:
        # an input constant over the rows: exactly 0 (a dead input), not rounding noise
        constant = np.diag(moment) <= 1e-12 * np.maximum(np.diag(products) / rows, 1e-300)
        moment[constant, :] = 0.0
        moment[:, constant] = 0.0
    return moment


def _n_m_keep(scores, n, m):
    """Keep the ``n`` largest scores in each run of ``m`` along axis 0 (ties: earlier)."""
    inputs = scores.shape[0]
    if inputs % m:
        raise ValueError(
            f"N:M needs the layer's inputs in whole groups of {m}. Received: {inputs} inputs"
        )
    groups = scores.reshape(inputs // m, m, -1)
    order = np.argsort(-groups, axis=1, kind="stable")[:, :n]
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order, True, axis=1)
    return keep.reshape(scores.shape)


def _keep_largest(scores, sparsity, *, axis=None):
    """Keep all but the ``round(size * sparsity)`` smallest scores (compared within each
    slice along ``axis`` when given, each dropping the same count to within one)."""
    if axis is None:
        flat = scores.ravel()
        drop = round(flat.size * sparsity)
        keep = np.ones(flat.size, bool)
        keep[np.argsort(flat, kind="stable")[:drop]] = False
        return keep.reshape(scores.shape)
    # Each slice drops ``floor(length * sparsity)``, and the first few one more, so that
    # the layer as a whole drops ``round(size * sparsity)``, as the other methods do.
    length = scores.shape[axis]
    slices = scores.size // length
    base = int(np.floor(length * sparsity))
    extra = min(round(scores.size * sparsity) - base * slices, slices)
    drops = np.full(slices, base) + (np.arange(slices) < extra)
    ranks = np.argsort(np.argsort(np.moveaxis(scores, axis, -1), axis=-1, kind="stable"),
                       axis=-1, kind="stable")
    keep = ranks >= drops.reshape(ranks.shape[:-1] + (1,))
    return np.moveaxis(keep, -1, axis)


def _mask_of(scores, *, sparsity=None, n_m=None, per_output=False):
    if (sparsity is None) == (n_m is None):
        raise ValueError("Give exactly one of `sparsity` or `n_m`. "
                         f"Received: sparsity={sparsity!r}, n_m={n_m!r}")
    if n_m is not None:
        return _n_m_keep(scores, *n_m)
    return _keep_largest(scores, sparsity, axis=0 if per_output else None)


def magnitude_mask(kernel, *, sparsity=None, n_m=None):
    """Keep-mask of the largest ``|w|`` of the layer (or ``n`` of every ``m`` inputs).

    Example:
        >>> magnitude_mask(np.array([[0.1, 2.0], [-3.0, 0.2]]), sparsity=0.5).tolist()
        [[False, True], [True, False]]
    """
    return _mask_of(np.abs(kernel), sparsity=sparsity, n_m=n_m)


def wanda_mask(kernel, input_norms, *, sparsity=None, n_m=None):
    """Wanda's keep-mask: score ``|w_ij| * ||x_i||``, the same share pruned in each output.

    Example:
        >>> wanda_mask(np.array([[1.0, 1.0], [2.0, 0.1]]), np.array([3.0, 1.0]),
        ...            sparsity=0.5).tolist()
        [[True, True], [False, False]]
    """
    scores = np.abs(kernel) * np.asarray(input_norms)[:, None]
    return _mask_of(scores, sparsity=sparsity, n_m=n_m, per_output=True)


def _inverse_cholesky(hessian, kernel, dampening):
    """Zero the weights of dead inputs, dampen, and give the upper Cholesky factor of H⁻¹."""
    hessian = np.array(hessian, dtype=np.float64)
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    kernel[dead, :] = 0.0
    damp = dampening * float(np.mean(np.diag(hessian)))
    hessian[np.diag_indices_from(hessian)] += damp
    try:
        lower = np.linalg.cholesky(np.linalg.inv(hessian))
    except np.linalg.LinAlgError as error:
        raise ValueError(
            "SparseGPT could not factor this layer's Hessian even dampened: raise "
            f"`dampening` (received {dampening}) or give more calibration data."
        ) from error
    return lower.T, dead


def sparsegpt(kernel, hessian, *, sparsity=None, n_m=None, mask=None, block_size=128,
              dampening=0.01):
    """SparseGPT's pruned weights for one layer (a new array; ``kernel`` is left as it is).

    Args:
        kernel: ``[inputs, outputs]`` weights.
        hessian: ``[inputs, inputs]``, ``2 XᵀX / rows`` (:meth:`InputStatistics.hessian`).
        sparsity: the share of the layer's weights to zero (chosen per block of columns), or
        n_m: ``(n, m)``: keep ``n`` of every ``m`` consecutive inputs of each output, or
        mask: a given keep-mask of the kernel's shape (the update only; for tests).
        block_size: inputs processed per lazy batched update.
        dampening: added to the Hessian's diagonal, as a share of its mean.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(256, 8))
        >>> w = np.random.default_rng(1).normal(size=(8, 4))
        >>> pruned = sparsegpt(w, 2 * x.T @ x / 256, n_m=(2, 4))
        >>> int((pruned[:4] != 0).sum(axis=0).max())
        2
    """
    if sum(option is not None for option in (sparsity, n_m, mask)) != 1:
        raise ValueError("Give exactly one of `sparsity`, `n_m` or `mask`. "
                         f"Received: sparsity={sparsity!r}, n_m={n_m!r}, mask given: "
                         f"{mask is not None}")
    # The paper's layout: rows are outputs, columns are inputs.
    weights = np.array(kernel, dtype=np.float64).T.copy()
    given = None if mask is None else np.asarray(mask, bool).T
    dead_columns = weights.T  # a view: zeroing dead inputs zeroes their columns
    upper, _ = _inverse_cholesky(hessian, dead_columns, dampening)
    rows, columns = weights.shape
    if n_m is not None and columns % n_m[1]:
        raise ValueError(f"N:M needs the layer's inputs in whole groups of {n_m[1]}. "
                         f"Received: {columns} inputs")
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        block = weights[:, start:stop].copy()
        errors = np.zeros_like(block)
        inverse = upper[start:stop, start:stop]
        diagonal = np.diag(inverse)
        if given is not None:
            keep = given[:, start:stop]
        elif sparsity is not None:  # the block's own threshold: the adaptive mask
            keep = _keep_largest(block ** 2 / diagonal ** 2, sparsity)
        else:
            keep = np.ones_like(block, bool)
        for i in range(stop - start):
            if n_m is not None and i % n_m[1] == 0:
                group = slice(i, i + n_m[1])
                scores = block[:, group] ** 2 / diagonal[group] ** 2
                keep[:, group] = _n_m_keep(scores.T, n_m[0], n_m[1]).T
            column = block[:, i]
            pruned = np.where(keep[:, i], column, 0.0)
            error = (column - pruned) / inverse[i, i]
            block[:, i:] -= np.outer(error, inverse[i, i:])
            block[:, i] = pruned
            errors[:, i] = error
        weights[:, start:stop] = block
        weights[:, stop:] -= errors @ upper[start:stop, stop:]
    return weights.T.astype(np.asarray(kernel).dtype)


def reconstruction_error(kernel, pruned, hessian):
    """Relative squared error of the pruned layer's outputs on the calibration inputs:
    ``||X(w' - w)||² / ||Xw||²``, from the Hessian (no inputs kept).

    Example:
        >>> reconstruction_error(np.eye(2), np.eye(2), np.eye(2))
        0.0
    """
    delta = np.asarray(pruned, np.float64) - np.asarray(kernel, np.float64)
    kernel = np.asarray(kernel, np.float64)
    change = float(np.sum((hessian @ delta) * delta))
    total = float(np.sum((hessian @ kernel) * kernel))
    return change / total if total > 0 else 0.0


def dense_output_error(kernel, pruned, stats, *, centered=False):
    """Relative squared distance of the pruned layer's outputs from the dense model's, on
    paired statistics: ``||X w' - X_dense w||² / ||X_dense w||²`` (centered: each less its
    mean over the rows).

    Example:
        >>> stats = InputStatistics(2, paired=True)
        >>> stats.add(np.eye(2), np.eye(2))
        >>> dense_output_error(np.eye(2), np.eye(2), stats)
        0.0
    """
    w, v = np.asarray(kernel, np.float64), np.asarray(pruned, np.float64)
    ours = _moment(stats.gram, stats.sums, stats.sums, stats.rows, centered)
    cross = _moment(stats.cross, stats.sums, stats.dense.sums, stats.rows, centered)
    dense = _moment(stats.dense.gram, stats.dense.sums, stats.dense.sums, stats.rows, centered)
    total = float(np.sum((dense @ w) * w))
    change = float(np.sum((ours @ v) * v) - 2 * np.sum((cross @ w) * v)) + total
    return max(change, 0.0) / total if total > 0 else 0.0


def patches(x, kernel_size, *, strides, padding, dilation_rate):
    """The input patches a channels-last convolution multiplies by its kernel: ``x``
    (``[batch, *spatial, channels]``) as ``[positions, prod(kernel_size) * channels]``, in
    the order of the kernel reshaped to ``[-1, filters]``, so that
    ``patches(x, ...) @ kernel.reshape(-1, filters)`` is the convolution (without bias).

    ``padding`` is Keras's: ``"valid"``, ``"same"`` or (1-D) ``"causal"``.

    Example:
        >>> patches(np.ones((1, 5, 5, 2)), (3, 3), strides=(1, 1), padding="valid",
        ...         dilation_rate=(1, 1)).shape
        (9, 18)
    """
    x = np.asarray(x)
    spatial = x.ndim - 2
    widths = [(0, 0)]
    for axis in range(spatial):
        size, k, s, d = x.shape[1 + axis], kernel_size[axis], strides[axis], dilation_rate[axis]
        reach = (k - 1) * d + 1
        if padding == "same":
            total = max((-(-size // s) - 1) * s + reach - size, 0)
            widths.append((total // 2, total - total // 2))
        elif padding == "causal":
            widths.append((reach - 1, 0))
        else:
            widths.append((0, 0))
    x = np.pad(x, widths + [(0, 0)])
    for axis in range(spatial):
        k, s, d = kernel_size[axis], strides[axis], dilation_rate[axis]
        reach = (k - 1) * d + 1
        x = np.lib.stride_tricks.sliding_window_view(x, reach, axis=1 + axis)
        index = [slice(None)] * x.ndim
        index[1 + axis] = slice(None, None, s)  # positions: every stride
        index[-1] = slice(None, None, d)        # taps: every dilation
        x = x[tuple(index)]
    # [batch, *positions, channels, *taps] -> [batch, *positions, *taps, channels]
    order = (*range(spatial + 1), *range(spatial + 2, 2 * spatial + 2), spatial + 1)
    x = np.transpose(x, order)
    return x.reshape(-1, int(np.prod(kernel_size)) * x.shape[-1])
