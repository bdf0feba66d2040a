"""kprune.viz: every plot returns a Figure and saves a PNG of the expected size."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from kprune import masks, viz

W = np.random.default_rng(0).normal(scale=0.5, size=(8, 8)).astype(np.float32)


def _check_png(fig, path):
    assert isinstance(fig, Figure)
    assert path.is_file() and path.stat().st_size > 1000
    image = imread(path)
    width, height = fig.get_size_inches() * viz.DPI
    assert abs(image.shape[0] - height) <= 1 and abs(image.shape[1] - width) <= 1
    assert image[..., :3].std() > 0.01  # not blank


def test_plot_matrix_writes_values_and_greys_pruned_cells(tmp_path):
    keep = masks.threshold(W, 0.3)
    fig = viz.plot_matrix(W, keep, title="|w| >= 0.3", decimals=1)
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == W.size
    assert texts.count("0") == W.size - keep.sum()
    i, j = np.argwhere(keep)[0]
    assert texts[i * 8 + j] == f"{W[i, j]:.1f}"
    assert ax.get_title() == "|w| >= 0.3"
    image = ax.images[0].get_array()
    assert np.array_equal(np.ma.getmaskarray(image), ~keep)  # drawn in the "bad" grey
    path = viz.save_figure(fig, tmp_path / "deep" / "dir" / "matrix.png")
    assert path == tmp_path / "deep" / "dir" / "matrix.png"
    _check_png(fig, path)


def test_plot_matrix_draws_into_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert viz.plot_matrix(W[:2, :3], ax=ax) is fig
    assert len(ax.texts) == 6


def test_plot_masks_before_after_row(tmp_path):
    methods = {
        "|w| >= 0.4": masks.threshold(W, 0.4),
        "2:4": masks.n_m(W, 2, 4),
        "block 2x2": masks.block(W, (2, 2), 0.5),
        "rows": masks.vector(W, 0, sparsity=0.25),
    }
    path = tmp_path / "masks.png"
    fig = viz.plot_masks(W, methods, path=path)
    assert len(fig.axes) == 5
    assert fig.axes[0].get_title().startswith("original")
    assert fig.axes[2].get_title() == "2:4\nsparsity 50%"
    assert all(len(ax.texts) == 64 for ax in fig.axes)
    _check_png(fig, path)


def test_plot_layer_sparsity(tmp_path):
    rows = [
        {"name": "conv", "achieved": 0.5, "target": 0.5},
        {"name": "fc1", "achieved": 0.79, "target": 0.8},
        {"name": "head", "achieved": 0.0},
    ]
    path = tmp_path / "layers.png"
    fig = viz.plot_layer_sparsity(rows, path=path)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv", "fc1", "head"]
    assert len(ax.collections) == 1  # the target markers
    _check_png(fig, path)


def test_plot_schedule_callable_and_sequence(tmp_path):
    def polynomial(step):
        return 0.8 * (1 - (1 - min(step, 100) / 100) ** 3)

    path = tmp_path / "schedule.png"
    fig = viz.plot_schedule(polynomial, total_steps=120, fire_steps=range(0, 101, 10), path=path)
    line, dots = fig.axes[0].lines
    assert len(line.get_xdata()) == 120 and len(dots.get_xdata()) == 11
    assert dots.get_ydata()[-1] == pytest.approx(0.8)
    _check_png(fig, path)
    fig = viz.plot_schedule([0.0, 0.25, 0.5], total_steps=3)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 1


def test_plot_weight_histogram(tmp_path):
    weights = masks.apply_mask(W, masks.magnitude(W, 0.5))
    path = tmp_path / "hist.png"
    fig = viz.plot_weight_histogram(weights, threshold=0.3, path=path)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert "50% exactly zero" in ax.get_title()
    assert ax.lines[0].get_xdata()[0] == 0.3
    _check_png(fig, path)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: viz.plot_matrix(np.ones((2, 2, 2))), r"Argument `w` must be a numeric 1-D or 2-D"),
        (lambda: viz.plot_matrix(W, np.ones((2, 2))),
         r"Argument `mask` must have the shape of `w`, \(8, 8\)"),
        (lambda: viz.plot_matrix(W, decimals=-1), r"Received: decimals=-1"),
        (lambda: viz.plot_masks(W, {}), r"Argument `masks` must be a non-empty dict"),
        (lambda: viz.plot_masks(W, {"a": np.ones(3)}), r"Argument `masks\['a'\]` must have"),
        (lambda: viz.plot_layer_sparsity([]), r"Argument `rows` must be a non-empty list"),
        (lambda: viz.plot_layer_sparsity([{"name": "a"}]), r"keys 'name' and 'achieved'"),
        (lambda: viz.plot_schedule(lambda s: 0.5, total_steps=0), r"Received: total_steps=0"),
        (lambda: viz.plot_schedule([0.1, 0.2], total_steps=3),
         r"sequence of `total_steps` \(3\) values"),
        (lambda: viz.plot_schedule(lambda s: 0.5, total_steps=10, fire_steps=[10]),
         r"Argument `fire_steps` must hold steps in \[0, 10\)"),
        (lambda: viz.plot_weight_histogram(W, threshold=-1.0), r"Received: threshold=-1\.0"),
        (lambda: viz.plot_weight_histogram([]), r"at least one finite value"),
    ],
)
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
