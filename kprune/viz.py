"""Pictures of pruning: weight matrices, masks, per-layer sparsity, schedules, histograms.

Matplotlib is imported lazily and only through the ``Figure`` API (no pyplot
state, nothing is shown). Every function returns the ``Figure``; those with
``path=`` also save it there as a PNG.

Example:
    >>> import numpy as np
    >>> from kprune import masks, viz
    >>> w = np.random.default_rng(0).normal(size=(8, 8))
    >>> fig = viz.plot_masks(w, {"2:4": masks.n_m(w, 2, 4)}, path="masks.png")
"""

from pathlib import Path

import numpy as np

__all__ = [
    "plot_layer_sparsity",
    "plot_masks",
    "plot_matrix",
    "plot_schedule",
    "plot_weight_histogram",
    "save_figure",
]

DPI = 100
PRUNED_COLOR = "#d9d9d9"
_CMAP = "RdBu_r"


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def _matrix(w, name="w"):
    array = np.asarray(w)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or array.dtype == bool:
        raise ValueError(
            f"Argument `{name}` must be a numeric 1-D or 2-D array. "
            f"Received: {name} with shape {array.shape} and dtype {array.dtype}"
        )
    return array.astype(float)


def _keep(mask, shape, name="mask"):
    keep = np.asarray(mask)
    if keep.ndim == 1:
        keep = keep[None, :]
    if keep.shape != shape:
        raise ValueError(
            f"Argument `{name}` must have the shape of `w`, {shape}. "
            f"Received: {name} with shape {np.shape(mask)}"
        )
    return keep != 0


def _draw_matrix(ax, w, keep, *, title, decimals, vmax):
    """Heatmap of ``w * keep`` with values written in the cells and pruned cells grey."""
    import matplotlib

    shown = np.where(keep, w, 0.0)
    pruned = shown == 0
    cmap = matplotlib.colormaps[_CMAP].with_extremes(bad=PRUNED_COLOR)
    ax.imshow(np.ma.masked_array(shown, pruned), cmap=cmap, vmin=-vmax, vmax=vmax)
    rows, cols = shown.shape
    size = max(5.0, min(10.0, 60.0 / max(rows, cols, 1)))
    for (i, j), value in np.ndenumerate(shown):
        if pruned[i, j]:
            color, text = "#8c8c8c", "0"
        else:
            color = "white" if abs(value) > 0.6 * vmax else "black"
            text = f"{value:.{decimals}f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.tick_params(length=0, labelsize=7)
    ax.set_xticks(np.arange(cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title is not None:
        ax.set_title(title, fontsize=10)


def _vmax(w):
    top = float(np.max(np.abs(w))) if w.size else 0.0
    return top if top > 0 and np.isfinite(top) else 1.0


def _check_decimals(decimals):
    if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
        raise ValueError(
            f"Argument `decimals` must be an integer >= 0. Received: decimals={decimals!r}"
        )


def plot_matrix(w, mask=None, *, ax=None, title=None, decimals=2):
    """A matrix as a heatmap with each value written in its cell; zeros and pruned cells grey.

    With ``mask``, the matrix is drawn as pruned (``w`` where the mask keeps).
    Draws into ``ax`` when given, else into a new Figure; returns the Figure.

    Example:
        >>> fig = plot_matrix(w, masks.threshold(w, 0.2), title="|w| >= 0.2")
    """
    w = _matrix(w)
    keep = np.ones(w.shape, bool) if mask is None else _keep(mask, w.shape)
    _check_decimals(decimals)
    if ax is None:
        rows, cols = w.shape
        fig = _figure(max(2.5, 0.6 * cols + 0.8), max(2.0, 0.6 * rows + 0.8))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    _draw_matrix(ax, w, keep, title=title, decimals=decimals, vmax=_vmax(w))
    return fig


def plot_masks(w, masks, *, path=None, decimals=2):
    """Before/after row: the original matrix, then ``w`` pruned by each named mask.

    All panels share one colour scale; titles give each panel's sparsity.

    Example:
        >>> fig = plot_masks(w, {"|w| >= 0.5": masks.threshold(w, 0.5),
        ...                      "2:4": masks.n_m(w, 2, 4)}, path="masks.png")
    """
    w = _matrix(w)
    if not isinstance(masks, dict) or not masks:
        raise ValueError(
            f"Argument `masks` must be a non-empty dict {{name: mask}}. Received: masks={masks!r}"
        )
    _check_decimals(decimals)
    keeps = {name: _keep(mask, w.shape, name=f"masks[{name!r}]") for name, mask in masks.items()}
    rows, cols = w.shape
    panels = 1 + len(keeps)
    fig = _figure(panels * max(2.2, 0.55 * cols + 0.4), max(2.2, 0.55 * rows + 0.9))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    vmax = _vmax(w)
    original = np.ones(w.shape, bool)
    entries = [("original", original)] + list(keeps.items())
    for ax, (name, keep) in zip(axes, entries):
        zeros = 1.0 - np.count_nonzero(np.where(keep, w, 0.0)) / w.size if w.size else 0.0
        _draw_matrix(ax, w, keep, title=f"{name}\nsparsity {zeros:.0%}", decimals=decimals,
                     vmax=vmax)
    return _finish(fig, path)


def plot_layer_sparsity(rows, *, path=None):
    """Per-layer sparsity bars; an optional ``target`` per layer is drawn as a marker.

    ``rows`` is a list of dicts with keys ``name``, ``achieved`` and optionally
    ``target`` (fractions in [0, 1]).

    Example:
        >>> fig = plot_layer_sparsity([{"name": "fc1", "achieved": 0.79, "target": 0.8}])
    """
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError(f"Argument `rows` must be a non-empty list of dicts. Received: rows={rows!r}")
    for row in rows:
        if not isinstance(row, dict) or "name" not in row or "achieved" not in row:
            raise ValueError(
                "Argument `rows` must hold dicts with keys 'name' and 'achieved' "
                f"(and optionally 'target'). Received: row {row!r}"
            )
    names = [str(row["name"]) for row in rows]
    achieved = [float(row["achieved"]) for row in rows]
    fig = _figure(max(4.0, 0.7 * len(rows) + 1.5), 3.5)
    ax = fig.add_subplot()
    positions = np.arange(len(rows))
    bars = ax.bar(positions, achieved, color="C0", label="achieved")
    ax.bar_label(bars, labels=[f"{a:.0%}" for a in achieved], fontsize=7, padding=2)
    targets = [(i, float(row["target"])) for i, row in enumerate(rows)
               if row.get("target") is not None]
    if targets:
        xs, ys = zip(*targets)
        ax.scatter(xs, ys, color="C3", marker="_", s=600, linewidths=2.5, label="target",
                   zorder=3)
    ax.set_xticks(positions, names, rotation=45 if len(rows) > 4 else 0, ha="right"
                  if len(rows) > 4 else "center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("sparsity")
    ax.set_title("sparsity per layer", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return _finish(fig, path)


def plot_schedule(sparsity_at, *, total_steps, fire_steps=None, path=None):
    """A sparsity schedule over steps ``0 .. total_steps - 1``, firing steps marked as dots.

    ``sparsity_at`` is a callable ``step -> sparsity`` or a sequence with one
    value per step (length ``total_steps``). ``fire_steps`` are the steps at
    which pruning actually updates the masks (tfmot's ``frequency``).

    Example:
        >>> fig = plot_schedule(lambda s: 0.8 * min(1, s / 100), total_steps=120,
        ...                     fire_steps=range(0, 101, 10))
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(
            f"Argument `total_steps` must be an integer >= 1. Received: total_steps={total_steps!r}"
        )
    steps = np.arange(total_steps)
    if callable(sparsity_at):
        values = np.array([float(sparsity_at(int(s))) for s in steps])
    else:
        values = np.asarray(sparsity_at, dtype=float)
        if values.shape != (total_steps,):
            raise ValueError(
                "Argument `sparsity_at` must be a callable or a sequence of `total_steps` "
                f"({total_steps}) values. Received: sparsity_at with shape {values.shape}"
            )
    fig = _figure(6.0, 3.2)
    ax = fig.add_subplot()
    ax.plot(steps, values, color="C0", label="target sparsity")
    if fire_steps is not None:
        fires = np.asarray(list(fire_steps), dtype=int)
        if fires.size and (fires.min() < 0 or fires.max() >= total_steps):
            raise ValueError(
                f"Argument `fire_steps` must hold steps in [0, {total_steps}). "
                f"Received: fire_steps from {fires.min()} to {fires.max()}"
            )
        ax.plot(fires, values[fires], "o", color="C3", markersize=4,
                label=f"pruning fires ({fires.size})")
    ax.set_xlim(0, max(total_steps - 1, 1))
    ax.set_ylim(0, max(1.0, float(np.nanmax(values)) * 1.05 if values.size else 1.0))
    ax.set_xlabel("step")
    ax.set_ylabel("sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, path)


def plot_weight_histogram(w, *, threshold=None, path=None, bins=50):
    """Histogram of ``|w|`` on a log count axis, with ``threshold`` as a vertical line.

    Example:
        >>> fig = plot_weight_histogram(kernel, threshold=0.05, path="hist.png")
    """
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float, np.number))
        or not np.isfinite(threshold)
        or threshold < 0
    ):
        raise ValueError(
            f"Argument `threshold` must be a finite number >= 0. Received: threshold={threshold!r}"
        )
    values = np.abs(np.asarray(w, dtype=float).ravel())
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("Argument `w` must hold at least one finite value. Received: w empty")
    fig = _figure(5.5, 3.2)
    ax = fig.add_subplot()
    ax.hist(values, bins=bins, color="C0", log=True)
    ax.set_xlabel("|w|")
    ax.set_ylabel("count (log)")
    zeros = np.count_nonzero(values == 0) / values.size
    ax.set_title(f"{values.size:,} weights, {zeros:.0%} exactly zero", fontsize=10)
    if threshold is not None:
        below = np.count_nonzero(values < threshold) / values.size
        ax.axvline(threshold, color="C3", linestyle="--",
                   label=f"threshold {threshold:g} ({below:.0%} below)")
        ax.legend(fontsize=8)
    return _finish(fig, path)


def save_figure(fig, path):
    """Write ``fig`` as a PNG at ``path`` (creating parent folders); returns the path.

    Example:
        >>> save_figure(plot_matrix(w), "out/w.png")
        PosixPath('out/w.png')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path
