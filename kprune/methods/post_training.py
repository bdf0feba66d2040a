"""Post-training pruning: a pretrained model pruned from a few hundred unlabeled examples,
with no retraining (magnitude, Wanda, SparseGPT; unstructured or N:M as the plan says).

The layers are pruned in order, each from the calibration inputs that the model *as
already pruned* gives it (as SparseGPT and Wanda do): the layer's inputs are captured
batch by batch through the engine, reduced to their statistics
(:class:`kprune.core.layerwise.InputStatistics`), and the layer is solved alone
(:mod:`kprune.core.layerwise`). A Dense layer is its kernel ``[inputs, outputs]``; a
convolution is its kernel as ``[kh * kw * in, out]`` over its input patches; an
``EinsumDense`` its kernel with the contracted axes as the inputs; a ``MultiHeadAttention``
its four projections, one after the other. Layers inside custom Keras 3 layers (KerasHub
blocks) are solved in the order the model calls them, their inputs recorded by a call hook
(:mod:`kprune.engines.capture`). Only one layer's statistics are in memory at a time:
``8 d²`` bytes for a layer of ``d`` inputs (SparseGPT holds about three such matrices while
it solves).

Two SparseGPT options for deep CNNs, off by default: ``match_dense=True`` fits each layer to
the dense model's outputs of that layer rather than to its own (the errors of earlier layers
corrected, not carried forward); ``center_before_batch_norm=True`` fits a layer that feeds a
recalibrated batch norm on its centered inputs.

Example:
    >>> pruned, report = kprune.prune_post_training(model, x_train[:512], method="sparsegpt")
    >>> print(report)                                  # per layer: reached, error, time
    >>> kprune.sparsity_report(pruned, strict=True)    # checks the plan it carries
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np

from kprune import progress
from kprune.core import layers, layerwise
from kprune.core.calibration import calibration_batches, example_count
from kprune.core.checks import check_int, check_number, did_you_mean
from kprune.core.plan import PruningPlan, ResolvedPlan
from kprune.core.table import table
from kprune.engines import capture
from kprune.engines.wrap import copy_model

__all__ = ["METHODS", "prune_post_training", "recalibrate_batch_norm", "check_method",
           "PostTrainingReport", "LayerResult"]

#: The post-training methods, by name.
METHODS = ("magnitude", "wanda", "sparsegpt")
#: Rows of captured inputs turned into patches at once (bounds a convolution's memory).
_CHUNK_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class LayerResult:
    """What post-training pruning did to one layer.

    ``error`` is the relative squared error of the layer's matrix product on the
    calibration inputs it saw, ``||X(w' - w)||² / ||Xw||²``; ``memory_bytes`` the arrays
    the solver held (statistics, solver copies, one chunk of inputs).
    """

    name: str
    type: str
    method: str
    target: float | None = None
    achieved: float | None = None
    error: float | None = None
    inputs: int = 0
    rows: int = 0
    seconds: float = 0.0
    memory_bytes: int = 0
    reason: str = ""

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PostTrainingReport:
    """One :class:`LayerResult` per prunable layer, printable as a table;
    ``recalibrated``: the batch-norm layers whose statistics were recomputed."""

    method: str
    examples: int
    rows: tuple
    recalibrated: tuple = ()

    def __getitem__(self, name):
        from kprune.core.checks import by_name

        return by_name(self.rows, name, what="layer", within="the report")

    @property
    def pruned(self):
        return [row for row in self.rows if row.achieved is not None]

    def to_dict(self):
        return {"method": self.method, "examples": self.examples,
                "layers": [row.to_dict() for row in self.rows],
                "recalibrated": list(self.recalibrated)}

    def __str__(self):
        header = ("layer", "type", "method", "target", "reached", "error", "inputs", "rows",
                  "time", "memory", "note")
        lines = []
        for r in self.rows:
            if r.achieved is None:
                lines.append((r.name, r.type, "skip", "", "", "", "", "", "", "", r.reason))
                continue
            lines.append((r.name, r.type, r.method, f"{r.target:.3f}", f"{r.achieved:.3f}",
                          f"{r.error:.4f}", str(r.inputs), f"{r.rows:,}", f"{r.seconds:.2f} s",
                          f"{r.memory_bytes / 2**20:.1f} MiB", r.reason))
        text = (f"post-training pruning: {self.method}, {self.examples:,} calibration examples\n"
                + table(header, lines))
        if self.recalibrated:
            text += (f"\nbatch-norm statistics recomputed on the calibration data: "
                     f"{', '.join(self.recalibrated)}")
        return text


def check_method(method):
    """Raise unless ``method`` is one of :data:`METHODS` (the closest name suggested)."""
    if method not in METHODS:
        raise ValueError(f"Argument `method` must be one of {METHODS}.{did_you_mean(method, METHODS)} "
                         f"Received: method={method!r}")


def _einsum_axes(layer):
    """``(input axes, kernel axes, problem)`` of an ``EinsumDense`` read as a matrix
    product: the axes its equation contracts, consecutive and in the same order in the input
    and the kernel, every other input axis kept in the output and every other kernel axis
    an output axis ("abc,cde->abde": ``([-1], [0], "")``; attention's output projection
    "abcd,cde->abe": ``([-2, -1], [0, 1], "")``)."""
    inputs, _, output = layer.equation.partition("->")
    source, _, kernel = inputs.partition(",")
    contracted = [c for c in kernel if c in source and c not in output]
    shared = [c for c in kernel if c in source and c in output]
    summed = [c for c in source.replace(".", "") if c not in kernel and c not in output]
    before, _, after = source.rpartition("...") if "..." in source else ("", "", source)
    input_axes = [after.index(c) - len(after) if c in after else before.index(c)
                  for c in contracted]
    kernel_axes = [kernel.index(c) for c in contracted]
    consecutive = all(np.diff(input_axes) == 1) and all(np.diff(kernel_axes) == 1)
    if not contracted or shared or summed or not consecutive:
        return None, None, (f"its equation {layer.equation!r} is not one matrix product of its "
                            "input; post-training methods solve those only")
    return input_axes, kernel_axes, ""


def _matrix_problem(layer):
    """Why ``layer`` is not a matrix product of its captured input ("" when it is)."""
    entry = layers.spec(layer)
    if entry is layers.SPECS["EinsumDense"]:
        return _einsum_axes(layers.unwrap(layer))[2]
    if entry.units is None or entry.layout or entry.kind not in ("dense", "conv"):
        name = type(layers.unwrap(layer)).__name__
        return (f"{name} is not a Dense, EinsumDense or convolution kernel applied to its "
                "input; post-training methods solve those only")
    layer = layers.unwrap(layer)
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"data_format={layer.data_format!r}: only channels_last layers are solved"
    if getattr(layer, "groups", 1) != 1:
        return f"groups={layer.groups}: grouped convolutions are not solved"
    return ""


def _as_matrix(layer, kernel):
    """``(matrix, back)``: ``kernel`` as the ``[inputs, outputs]`` matrix that multiplies the
    layer's input rows, and the function giving a matrix back the kernel's shape.

    Example:
        >>> _as_matrix(einsum_dense, np.zeros((32, 2, 16)))[0].shape   # "abc,cde->abde"
        (32, 32)
    """
    shape = kernel.shape
    if layers.spec(layer) is not layers.SPECS["EinsumDense"]:
        return kernel.reshape(-1, shape[-1]), lambda matrix: matrix.reshape(shape)
    axes = _einsum_axes(layers.unwrap(layer))[1]
    front = list(range(len(axes)))
    moved = np.moveaxis(kernel, axes, front)
    inputs = int(np.prod(moved.shape[:len(axes)]))
    return (moved.reshape(inputs, -1),
            lambda matrix: np.moveaxis(matrix.reshape(moved.shape), front, axes))


def _rows(layer, x, inputs):
    """The captured input ``x`` as rows of the layer's matrix product, in chunks."""
    if layers.spec(layer) is layers.SPECS["EinsumDense"]:  # contracted axes last
        axes = _einsum_axes(layers.unwrap(layer))[0]
        x = np.moveaxis(x, axes, list(range(-len(axes), 0)))
    if layers.kind(layer) == "dense":  # (batch, d) or (batch, sequence, d): rows of d
        yield x.reshape(-1, inputs)
        return
    per_example = max(1, x[0].size * inputs // max(x.shape[-1], 1)) * 8
    step = max(1, _CHUNK_BYTES // per_example)
    for start in range(0, len(x), step):
        yield layerwise.patches(x[start:start + step], layer.kernel_size, strides=layer.strides,
                                padding=layer.padding, dilation_rate=layer.dilation_rate)


def _solve(method, kernel, stats, row, *, block_size, dampening, centered):
    target = dict(n_m=(row.n, row.m)) if row.method == "m_by_n" else dict(sparsity=row.target)
    if method == "sparsegpt":
        if stats.dense is not None:  # fit the dense model's outputs
            kernel = stats.dense_targets(kernel, centered=centered, dampening=dampening)
        return layerwise.sparsegpt(kernel, stats.hessian(centered=centered),
                                   block_size=block_size, dampening=dampening, **target)
    if method == "wanda":
        return kernel * layerwise.wanda_mask(kernel, stats.input_norms(), **target)
    return kernel * layerwise.magnitude_mask(kernel, **target)


def _parts(path, layer):
    """``[(path, layer, weight)]``: the matrix products a layer's prunable weights belong to,
    each solved alone: the layer and its kernel, or for ``MultiHeadAttention`` its query,
    key, value and output ``EinsumDense`` sublayers (at ``attention/query``, ...), in the
    order the layer calls them."""
    parts = []
    for weight in layers.prunable_weights(layer):
        owner, _, _ = weight.label.rpartition(".")
        if not owner:
            parts.append((path, layer, weight))
            continue
        sub = getattr(layers.unwrap(layer), owner)
        parts.append((f"{path}/{sub.name}", sub, weight))
    return parts


def _solve_part(model, path, layer, weight, row, batches, method, *, block_size, dampening,
                dense_model, centered):
    """Solve one kernel on its captured inputs (and, with ``dense_model``, on the inputs the
    dense model gives the same layer); returns its :class:`LayerResult` fields."""
    original = capture.to_numpy(weight.variable)
    kernel, back = _as_matrix(layer, original.astype(np.float64))
    inputs = kernel.shape[0]
    stats = layerwise.InputStatistics(inputs, paired=dense_model is not None)
    dense_inputs = (capture.layer_inputs(dense_model, path, batches)
                    if dense_model is not None else None)
    chunk = 0
    for x in capture.layer_inputs(model, path, batches):
        dense_rows = _rows(layer, next(dense_inputs), inputs) if dense_inputs else None
        for rows in _rows(layer, x, inputs):
            chunk = max(chunk, rows.nbytes)
            stats.add(rows, None if dense_rows is None else next(dense_rows))
    if method == "sparsegpt" and stats.rows < inputs:
        warnings.warn(
            f"Layer {path!r} has {inputs} inputs but saw {stats.rows} calibration rows: its "
            "Hessian is singular, and SparseGPT runs on the dampened one. Give more examples.",
            layerwise.SingularHessianWarning, stacklevel=4)
    pruned = _solve(method, kernel, stats, row, block_size=block_size, dampening=dampening,
                    centered=centered)
    weight.variable.assign(back(pruned).astype(original.dtype))
    solver_copies = (3 if method == "sparsegpt" else 1) + (3 if dense_model is not None else 0)
    error = (layerwise.dense_output_error(kernel, pruned, stats, centered=centered)
             if dense_model is not None else
             layerwise.reconstruction_error(kernel, pruned, stats.hessian(centered=centered)))
    return dict(zeros=int(np.sum(pruned == 0)), size=pruned.size, error=error,
                inputs=inputs, rows=stats.rows,
                memory_bytes=stats.gram.nbytes * (1 + solver_copies) + 2 * chunk)


def _prune_layer(model, layer, row, batches, method, *, block_size, dampening, dense_model,
                 centered):
    """Solve each of the layer's kernels in order (one in memory at a time); a layer of
    several (attention) reports their mean error and the largest inputs, rows and memory."""
    start = time.perf_counter()
    solved = [_solve_part(model, path, part, weight, row, batches, method,
                          block_size=block_size, dampening=dampening, dense_model=dense_model,
                          centered=centered)
              for path, part, weight in _parts(row.name, layer)]
    return LayerResult(
        name=row.name, type=row.type, method=f"{method} {row.method_label}", target=row.target,
        achieved=sum(p["zeros"] for p in solved) / sum(p["size"] for p in solved),
        error=float(np.mean([p["error"] for p in solved])),
        inputs=max(p["inputs"] for p in solved), rows=max(p["rows"] for p in solved),
        seconds=time.perf_counter() - start,
        memory_bytes=max(p["memory_bytes"] for p in solved))


def _has_running_statistics(model, path, layer):
    return layers.spec(layer).running_statistics and not capture.capture_problem(model, path)


def _recalibrate(model, path, layer, batches):
    """Set one batch norm's moving mean and variance to those of its inputs on ``batches``."""
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    count, total, squares = 0, 0.0, 0.0
    for x in capture.layer_inputs(model, path, batches):
        x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
        x = x.reshape(-1, x.shape[-1])
        count += len(x)
        total = total + x.sum(axis=0)
        squares = squares + (x * x).sum(axis=0)
    mean = total / count
    variance = np.maximum(squares / count - mean * mean, 0.0)
    dtype = capture.to_numpy(layer.moving_mean).dtype
    layer.moving_mean.assign(mean.astype(dtype))
    layer.moving_variance.assign(variance.astype(dtype))


def recalibrate_batch_norm(model, batches):
    """Recompute the moving mean and variance of every batch-norm layer of ``model`` (in
    place, in graph order) from what it receives on ``batches``; returns their paths.

    Pruning the layers before a batch norm changes the statistics of its inputs, and its
    stored ones then shift every channel (a CNN can fall to chance with no weight of its
    own wrong). Each layer's statistics are taken with the ones before it already updated.
    :func:`prune_post_training` does this as it goes, for the batch norms after the first
    pruned layer.

    Example:
        >>> recalibrate_batch_norm(pruned, calibration_batches(pruned, x[:512]))
        ['bn1', 'block1/bn2']
    """
    done = []
    for path, layer in layers.model_layers(model):
        if _has_running_statistics(model, path, layer):
            _recalibrate(model, path, layer, batches)
            done.append(path)
    return done


def _plan_rows(model, plan):
    """The resolved plan, with the rows post-training pruning cannot solve turned to skips."""
    resolved = plan.resolve(model)
    by_path = dict(layers.weight_layers(model))
    rows = []
    for row in resolved:
        if not row.pruned:
            rows.append(row)
            continue
        if row.method == "block":
            raise ValueError(
                f"Post-training pruning takes unstructured and N:M rows; layer {row.name!r} "
                f"asks for blocks of {row.block[0]}x{row.block[1]}. Use an unstructured or "
                "N:M rule for it.")
        problem = _solve_problem(model, row.name, by_path.get(row.name))
        rows.append(_skipped(row, problem) if problem else row)
    return ResolvedPlan(tuple(rows))


def _skipped(row, reason):
    return dataclasses.replace(row, method="skip", target=None, n=None, m=None, schedule=None,
                               reason=reason)


def _solve_problem(model, path, layer):
    """Why the layer at ``path`` cannot be solved from its inputs ("" when it can)."""
    parts = _parts(path, layer)
    if any(part is layer for _, part, _ in parts):  # its own kernel(s)
        problem = _matrix_problem(layer) or ("it has several kernels" if len(parts) > 1 else "")
    else:  # kernels of sublayers (attention's projections)
        problem = next(filter(None, (_matrix_problem(part) for _, part, _ in parts)), "")
    return problem or next(filter(None, (capture.capture_problem(model, part_path)
                                         for part_path, _, _ in parts)), "")


_UNCALLED = "the model did not call it on a calibration batch: no inputs to solve it from"


def _steps(model, resolved, batch, recalibrate):
    """``(steps, uncalled)``: the ``(path, layer)`` to solve (the plan's pruned rows) and,
    with ``recalibrate``, the batch norms after the first of them to recalibrate, in the
    order the model runs them; ``uncalled``: the rows inside custom layers it never calls.

    Graph layers come in graph order; layers inside custom layers take the order in which
    the model first calls them (their custom layer may create them in another order).
    """
    rows = {row.name for row in resolved.pruned}
    candidates = [(path, layer) for path, layer in layers.weight_layers(model)
                  if path in rows or (recalibrate and _has_running_statistics(model, path, layer))]
    hooked = [path for path, _ in candidates
              if capture.inside_custom_layer(model, path) is not None]
    called = capture.call_order(model, hooked, batch) if hooked else []
    by_path, queues, called = dict(candidates), {}, dict.fromkeys(called)
    for path in called:  # each custom layer's called sublayers, in call order
        queues.setdefault(path.rpartition("/")[0], []).append(path)
    ordered = []
    for path, layer in candidates:  # a called hooked layer's place, refilled in call order
        if path in hooked:  # among its custom layer's own places
            if path not in called:
                continue  # never called: reported as uncalled
            path = queues[path.rpartition("/")[0]].pop(0)
            layer = by_path[path]
        ordered.append((path, layer))
    first = next((i for i, (path, _) in enumerate(ordered) if path in rows), None)
    steps = [(path, layer) for i, (path, layer) in enumerate(ordered)
             if path in rows or (first is not None and i > first)]
    return steps, [path for path in hooked if path not in called and path in rows]


def _mean_absorbed(model, path, layer, recalibrated):
    """Whether a shift of the layer's mean output is undone after it: its output goes, with
    no activation, only into a batch norm that is recalibrated (``recalibrated``: paths)."""
    unwrapped = layers.unwrap(layer)
    activation = getattr(unwrapped, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") != "linear":
        return False
    readers = capture.readers(model, path)
    return readers is not None and len(readers) == 1 and readers[0] in recalibrated


def _recalibrated_dense_model(model, steps, rows, batches):
    """A copy of the dense ``model`` whose batch norms among ``steps`` (the ones the pruned
    model recalibrates) have the statistics of their inputs on ``batches``."""
    dense = copy_model(model)
    by_path = dict(layers.weight_layers(dense))
    for path, _ in steps:
        if path not in rows:
            _recalibrate(dense, path, by_path[path], batches)
    return dense


def prune_post_training(model, calibration, plan=None, method="sparsegpt", *, batch_size=64,
                        block_size=128, dampening=0.01, recalibrate=True, match_dense=False,
                        center_before_batch_norm=False):
    """A copy of ``model`` with the plan's zeros, from calibration data and no training.

    Args:
        model: a built tf_keras or Keras 3 Sequential or functional model (never modified).
        calibration: unlabeled model inputs (see
            :func:`kprune.core.calibration.calibration_batches`): an array, a dict of
            arrays, a ``tf.data.Dataset`` or an iterable of batches.
        plan: a :class:`PruningPlan` (each row's target, or its N:M); None: the default plan.
            Schedules are ignored: the targets are reached at once.
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        batch_size: examples per batch when ``calibration`` is an array.
        block_size: SparseGPT's columns (inputs) per lazy update; a multiple of ``m`` for N:M.
        dampening: SparseGPT's dampening, as a share of the Hessian's mean diagonal.
        recalibrate: give every batch norm after the first pruned layer the statistics of
            what it receives on the calibration data (as :func:`recalibrate_batch_norm`),
            in order; no effect on a model without batch norm.
        center_before_batch_norm: SparseGPT only, with ``recalibrate``: fit a layer whose
            output goes, with no activation, only into a recalibrated batch norm on its
            inputs less their mean (``H = 2 Cov(X)``): that batch norm undoes any shift of
            the mean output, so none of the fit is spent on it.
        match_dense: SparseGPT only: fit each layer to the outputs the *dense* model's
            same layer gives (with its batch norms recalibrated as the pruned model's),
            from the inputs the already pruned layers give it, instead of to its own
            outputs on those inputs (asymmetric calibration, as AdaRound and GPTAQ do for
            quantization): errors of earlier layers are corrected, not carried forward.
            Runs the dense model beside the pruned one (twice the capture time).

    Returns:
        ``(pruned, report)``: the pruned model (carrying its resolved plan, so
        ``kprune.sparsity_report(pruned, strict=True)`` checks it) and a
        :class:`PostTrainingReport`.

    Example:
        >>> pruned, report = prune_post_training(model, x[:256], method="wanda")
    """
    check_method(method)
    plan = PruningPlan.default() if plan is None else plan
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"Argument `plan` must be a kprune.PruningPlan. Received: plan={plan!r}")
    check_int(block_size, "block_size")
    check_number(dampening, "dampening")
    for option, value in (("match_dense", match_dense),
                          ("center_before_batch_norm", center_before_batch_norm)):
        if value and method != "sparsegpt":
            raise ValueError(f"Argument `{option}` needs method='sparsegpt' (the only method "
                             f"that updates weights). Received: method={method!r}")
    resolved = _plan_rows(model, plan)
    for row in resolved.pruned:
        if row.method == "m_by_n" and block_size % row.m:
            raise ValueError(f"Argument `block_size` must be a multiple of the N:M group size "
                             f"{row.m} (layer {row.name!r}). Received: block_size={block_size}")
    batches = calibration_batches(model, calibration, batch_size=batch_size)
    pruned = copy_model(model)
    steps, uncalled = _steps(pruned, resolved, batches[0], recalibrate)
    if uncalled:
        resolved = ResolvedPlan(tuple(_skipped(row, _UNCALLED) if row.name in uncalled else row
                                      for row in resolved))
    rows = {row.name: row for row in resolved.pruned}
    to_recalibrate = {path for path, _ in steps if path not in rows}
    dense_model = (_recalibrated_dense_model(model, steps, rows, batches) if match_dense
                   else None)
    results, recalibrated = {}, []
    for path, layer in progress.track(steps, f"post-training ({method})", unit="layer",
                                      label=lambda step: step[0]):
        if path in rows:
            results[path] = _prune_layer(
                pruned, layer, rows[path], batches, method, block_size=block_size,
                dampening=dampening, dense_model=dense_model,
                centered=center_before_batch_norm and _mean_absorbed(pruned, path, layer,
                                                                     to_recalibrate))
        else:
            _recalibrate(pruned, path, layer, batches)
            recalibrated.append(path)
    report_rows = tuple(
        results.get(row.name) or LayerResult(name=row.name, type=row.type, method="skip",
                                             reason=row.reason)
        for row in resolved if row.weights)
    pruned._kprune_plan = resolved  # read by sparsity_report and save_model
    return pruned, PostTrainingReport(method, example_count(batches), report_rows,
                                      tuple(recalibrated))
