"""Tensor-level pruning masks (numpy only). PROVISIONAL: N:M checks only; full module pending."""

import numpy as np

__all__ = ["sparsity", "is_n_m", "n_m_violations"]


def sparsity(w):
    w = np.asarray(w)
    return float(1.0 - np.count_nonzero(w) / w.size) if w.size else 0.0


def _groups(w, m, axis):
    w = np.asarray(w)
    axis = w.ndim - 2 if axis is None and w.ndim >= 2 else (axis or 0)
    moved = np.moveaxis(w, axis, -1)
    length = moved.shape[-1]
    pad = (-length) % m
    real = np.ones(moved.shape, bool)
    if pad:
        widths = [(0, 0)] * (moved.ndim - 1) + [(0, pad)]
        moved = np.pad(moved, widths, constant_values=1.0)
        real = np.pad(real, widths, constant_values=False)
    shape = moved.shape[:-1] + (moved.shape[-1] // m, m)
    return moved.reshape(shape), real.reshape(shape)


def n_m_violations(w, n, m, *, axis=None):
    values, real = _groups(w, m, axis)
    zeros = np.sum((values == 0) & real, axis=-1)
    return int(np.sum(zeros < m - n))


def is_n_m(w, n, m, *, axis=None):
    return n_m_violations(w, n, m, axis=axis) == 0
