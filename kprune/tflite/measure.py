"""Measure ``.tflite`` files: accuracy in the LiteRT runtime, bytes raw and gzipped, latency,
and per-tensor sparsity and N:M compliance read back from the file itself.

The runtime is LiteRT (``ai_edge_litert.interpreter.Interpreter``); ``tf.lite.Interpreter``
(deprecated) is used only when LiteRT cannot be imported, and the reason is logged on the
``"kprune"`` logger. Tensors are read from the file by :mod:`kprune.tflite.flatbuffer`
(re-exported here as :func:`tflite_tensors`).

Example:
    >>> from kprune import measure
    >>> measure.evaluate_tflite("pruned-int8.tflite", x_test, y_test)
    0.9912
    >>> measure.file_sizes("pruned-int8.tflite")
    {'bytes': 851968, 'gzip_bytes': 700123}
    >>> info = measure.tflite_tensors("pruned-sparse.tflite")
    >>> info.sparse_storage, info.densify_ops
    (True, 2)
    >>> print(info)
    >>> timing = measure.latency_rounds(
    ...     {"dense": "dense.tflite", "pruned": "pruned-int8.tflite"}, baseline="dense")
    >>> timing["files"]["pruned"]["x_faster"], timing["files"]["pruned"]["x_faster_range"]
    (1.47, [1.41, 1.52])
"""

from __future__ import annotations

import gzip
import logging
import re
import statistics
import time
from pathlib import Path

import numpy as np

from kprune import progress
from kprune.structural.cost import count_macs
from kprune.tflite.flatbuffer import TensorInfo, TfliteInfo, check_tflite, tflite_tensors

__all__ = [
    "TensorInfo",
    "TfliteInfo",
    "count_macs",
    "count_params",
    "evaluate_tflite",
    "file_sizes",
    "latency",
    "latency_rounds",
    "load_interpreter",
    "predict_tflite",
    "runtime_name",
    "tflite_tensors",
]

logger = logging.getLogger("kprune")

# --------------------------------------------------------------------------- runtime


_RUNTIME = {}
_WARNED = set()  # files already reported as refused by XNNPACK


def _runtime():
    if "class" not in _RUNTIME:
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            _RUNTIME.update(
                {"class": Interpreter, "resolvers": OpResolverType, "name": "ai_edge_litert"}
            )
        except ImportError as err:
            from kprune.engines.tfkeras import loader

            logger.warning(
                "LiteRT (ai_edge_litert) cannot be imported (%s); falling back to the "
                "deprecated tf.lite.Interpreter. Install it with `pip install ai-edge-litert`.",
                err,
            )
            _RUNTIME.update(
                {
                    "class": loader.tf.lite.Interpreter,
                    "resolvers": loader.tf.lite.experimental.OpResolverType,
                    "name": "tf.lite",
                }
            )
    return _RUNTIME


def runtime_name():
    """``"ai_edge_litert"``, or ``"tf.lite"`` when LiteRT could not be imported."""
    return _runtime()["name"]


def load_interpreter(path, *, threads=None, delegate=True):
    """A LiteRT interpreter for ``path`` (tensors not yet allocated).

    ``delegate=False`` runs TFLite's builtin kernels without the default XNNPACK delegate.
    """
    path = check_tflite(path)
    runtime = _runtime()
    resolver = runtime["resolvers"].AUTO if delegate else (
        runtime["resolvers"].BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        return runtime["class"](
            model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver
        )
    except ValueError as err:
        raise ValueError(
            f"The TFLite runtime cannot load this file ({err}). Received: path={str(path)!r}"
        ) from None


def _prepared(path, *, threads=None, batch=None, sample_shape=None):
    """``(interpreter, kernels)``: allocated, the input resized to ``batch`` if allowed.

    Dimensions the file leaves open (``-1`` in the input's shape signature) other than
    the batch take their size from ``sample_shape`` (one input's shape) when given.
    The default XNNPACK delegate cannot prepare int8 or dynamic-range models whose
    weights come out of a DENSIFY op (sparse storage); such models then run on the
    builtin kernels, with a warning. ``kernels`` is ``"xnnpack"`` or ``"builtin"``.
    """

    def build(delegate):
        interpreter = load_interpreter(path, threads=threads, delegate=delegate)
        detail, _ = _single_input(interpreter, path)
        shape = _run_shape(detail, batch, sample_shape)
        if shape != [int(d) for d in detail["shape"]]:
            interpreter.resize_tensor_input(detail["index"], shape, strict=True)
        interpreter.allocate_tensors()
        if delegate:
            # XNNPACK prepares some nodes only at the first invoke (a FULLY_CONNECTED fed by
            # a reshape computed at run time, as Keras 3's Flatten makes): fail here, not later
            interpreter.set_tensor(detail["index"], np.zeros(shape, detail["dtype"]))
            interpreter.invoke()
        return interpreter

    try:
        interpreter = build(True)
    except RuntimeError as err:
        if "delegate" not in str(err).lower():
            raise
        if str(path) in _WARNED:
            return build(False), "builtin"
        _WARNED.add(str(path))
        logger.warning(
            "The XNNPACK delegate cannot prepare %s (%s); running it on TFLite's builtin "
            "kernels instead (latency is then not comparable with XNNPACK runs).",
            path,
            _runtime_message(err),
        )
        return build(False), "builtin"
    ops = [op.get("op_name") for op in interpreter._get_ops_details()]
    return interpreter, "xnnpack" if "DELEGATE" in ops else "builtin"


def _runtime_message(err):
    """LiteRT's error on one line, its messages apart ("node #8Node number 10" otherwise)."""
    return re.sub(r"(?<=\S)(?=Node number)", "; ", " ".join(str(err).split()))


def _run_shape(detail, batch, sample_shape):
    """The input shape to run with: open dimensions filled from ``batch``/``sample_shape``."""
    shape = [int(d) for d in detail["shape"]]
    signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    if batch is not None and signature[0] == -1:
        shape[0] = batch
    if sample_shape is not None:
        for axis, (open_, size) in enumerate(zip(signature[1:], sample_shape), start=1):
            if open_ == -1:
                shape[axis] = int(size)
    return shape


# --------------------------------------------------------------------------- accuracy


def _single_input(interpreter, path):
    inputs = interpreter.get_input_details()
    if len(inputs) != 1 or len(interpreter.get_output_details()) != 1:
        raise ValueError(
            "Only models with one input and one output can be measured. "
            f"Received: path={str(path)!r} with {len(inputs)} inputs and "
            f"{len(interpreter.get_output_details())} outputs"
        )
    return inputs[0], interpreter.get_output_details()[0]


def _check_inputs(x, detail, path):
    x = np.asarray(x)
    signature = detail.get("shape_signature", detail["shape"])
    expected = [int(d) for d in detail["shape"][1:]]
    fixed = [int(d) for d in signature[1:]]
    if x.ndim != len(expected) + 1 or any(
        want not in (-1, got) for want, got in zip(fixed, x.shape[1:])
    ):
        shown = ", ".join("?" if d == -1 else str(d) for d in fixed)
        raise ValueError(
            f"Argument `x` must be a batch of inputs of shape (N, {shown}) for this model. "
            f"Received: x.shape={x.shape} for path={str(path)!r}"
        )
    return x


def _is_quantized(detail):
    return detail["dtype"] in (np.int8, np.uint8, np.int16) and bool(detail["quantization"][0])


def _quantize(x, detail):
    """``x`` as the input tensor wants it: real values quantized with the tensor's own
    (scale, zero point); for an integer input without a scale (raw ``uint8`` pixels,
    token ids) the integers as they are; else cast to the tensor's dtype."""
    dtype = detail["dtype"]
    if _is_quantized(detail):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    x = np.asarray(x)
    if np.issubdtype(dtype, np.integer) and x.dtype != dtype:
        if np.issubdtype(x.dtype, np.floating) and np.any(np.mod(x, 1) != 0):
            raise ValueError(
                f"The model's input {detail['name']!r} is {np.dtype(dtype).name} without a "
                "quantization scale: it takes integers as they are (e.g. raw pixels 0-255, "
                f"token ids). Received: x of dtype {x.dtype} with fractional values"
            )
        info = np.iinfo(dtype)
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise ValueError(
                f"The model's input {detail['name']!r} is {np.dtype(dtype).name}: values must "
                f"lie in [{info.min}, {info.max}]. Received: x in [{x.min()}, {x.max()}]"
            )
    return x.astype(dtype, copy=False)


def _random_input(detail, shape, rng):
    """A random input of ``shape`` in the tensor's dtype: uniform in [0, 1) for float and
    quantized inputs (quantized with the file's scale), the full range for unquantized
    8-bit integers, zeros (a valid index anywhere) for other integer and bool inputs."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating) or _is_quantized(detail):
        return _quantize(rng.random(shape, dtype=np.float32), detail)
    if dtype in (np.int8, np.uint8):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return np.zeros(shape, dtype)


def _check_range(x, detail, path):
    """Warn when much of ``x`` lies outside what a quantized input can hold (clipped):
    usually data not scaled as the calibration data was."""
    if not _is_quantized(detail) or not np.asarray(x).size:
        return
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    low, high = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    values = np.asarray(x[:2048], np.float32)  # a sample is enough to warn
    outside = float(np.mean((values < low - scale) | (values > high + scale)))
    if outside > 0.05:
        logger.warning(
            "%.0f%% of the inputs lie outside [%.4g, %.4g], the range the int input of %s "
            "can hold (its scale and zero point from calibration); they are clipped. Are "
            "they scaled as the calibration data was (e.g. pixels / 255)? Received: x in "
            "[%.4g, %.4g]",
            outside * 100, low, high, path, float(values.min()), float(values.max()),
        )


def _dequantize(values, detail):
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        scale, zero_point = detail["quantization"]
        if scale:
            return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32, copy=False)


def predict_tflite(path, x, *, batch_size=256, threads=None):
    """Run ``x`` through the model in ``path``; return the (dequantized, float) outputs.

    Any input shape and dtype the file takes: batches of ``batch_size`` when the model's
    batch dimension is dynamic (the last batch padded), else the model's own batch size;
    other open dimensions sized from ``x``. Quantized (int8/uint8/int16) inputs are
    quantized with the input tensor's own (scale, zero point), with a warning when much
    of ``x`` lies outside what they can hold; integer inputs without a scale take
    ``x``'s integers as they are. Quantized outputs are dequantized with the output's.
    Progress over the batches is shown (see :mod:`kprune.progress`).

    Example:
        >>> predict_tflite("model-int8.tflite", x_test[:10]).shape
        (10, 10)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"Argument `batch_size` must be a positive integer. Received: batch_size={batch_size!r}"
        )
    probe = load_interpreter(path, threads=threads)
    detail, _ = _single_input(probe, path)
    x = _check_inputs(x, detail, path)
    signature = detail.get("shape_signature", detail["shape"])
    dynamic = int(signature[0]) == -1
    batch = min(batch_size, max(len(x), 1)) if dynamic else int(detail["shape"][0])
    del probe
    interpreter, _ = _prepared(path, threads=threads, batch=batch, sample_shape=x.shape[1:])
    detail, output = _single_input(interpreter, path)
    _check_range(x, detail, path)
    chunks = []
    starts = range(0, len(x), batch)
    for start in progress.track(starts, f"predict {Path(path).name}", unit="batch",
                                per_item=False):
        chunk = x[start : start + batch]
        count = len(chunk)
        if count < batch:
            pad = np.zeros((batch - count, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        interpreter.set_tensor(detail["index"], _quantize(chunk, detail))
        interpreter.invoke()
        chunks.append(_dequantize(interpreter.get_tensor(output["index"]), output)[:count])
    if not chunks:
        return np.zeros((0, *output["shape"][1:]), np.float32)
    return np.concatenate(chunks)


def _labels(y, n):
    """Integer labels from ``y``: ``(N,)`` labels, an ``(N, 1)`` column or one-hot rows."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # e.g. CIFAR-10's (N, 1) labels
        y = y[:, 0]
    elif y.ndim == 2:
        y = y.argmax(axis=1)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            "Arguments `x` and `y` must hold the same number of samples, `y` as integer "
            f"labels (or one-hot rows). Received: len(x)={n}, y.shape={np.shape(y)}"
        )
    if y.size and not np.all(np.mod(y, 1) == 0):
        raise ValueError(
            "Argument `y` must hold integer class labels (or one-hot rows). "
            f"Received: y with fractional values, e.g. {float(y[np.mod(y, 1) != 0][0])}"
        )
    return y.astype(np.int64)


def evaluate_tflite(path, x, y, *, batch_size=256, threads=None):
    """Top-1 accuracy of the ``.tflite`` at ``path`` on ``(x, y)`` in the LiteRT runtime.

    ``x``: a batch of inputs of any shape and dtype the file takes (see
    :func:`predict_tflite`). ``y``: integer labels, an ``(N, 1)`` column of them, or
    one-hot rows. The model must output one score per class (``(N, K)``, size-1 middle
    axes allowed), K >= 2.

    Example:
        >>> evaluate_tflite("model.tflite", x_test, y_test)
        0.9921
    """
    y = _labels(y, len(x))
    if len(y) == 0:
        raise ValueError("Arguments `x` and `y` are empty.")
    scores = predict_tflite(path, x, batch_size=batch_size, threads=threads)
    scores = scores.reshape(len(scores), -1) if all(
        d == 1 for d in scores.shape[1:-1]) else scores
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            "evaluate_tflite measures top-1 accuracy over class scores: the model must "
            f"output (N, classes) with at least 2 classes. Received: outputs of shape "
            f"{scores.shape} from path={str(path)!r} (for one sigmoid output, threshold "
            "predict_tflite's scores yourself)"
        )
    if y.min() < 0 or y.max() >= scores.shape[1]:
        raise ValueError(
            f"Argument `y` must hold labels in [0, {scores.shape[1] - 1}]: the model outputs "
            f"{scores.shape[1]} class scores. Received: labels in [{y.min()}, {y.max()}]"
        )
    return float(np.mean(scores.argmax(axis=1) == y))


# --------------------------------------------------------------------------- sizes, latency


def file_sizes(path):
    """``{"bytes": raw size, "gzip_bytes": size gzipped at level 9}`` (gzip done in memory)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No file at this path. Received: path={str(path)!r}")
    data = path.read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def _time_invokes(path, *, repeats, warmup, threads, seed):
    """``(times in ms, kernels)`` of ``repeats`` invokes at batch 1 after ``warmup``."""
    interpreter, kernels = _prepared(path, threads=threads, batch=1)
    detail, _ = _single_input(interpreter, path)
    rng = np.random.default_rng(seed)
    interpreter.set_tensor(detail["index"], _random_input(detail, detail["shape"], rng))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return times, kernels


def latency(path, *, repeats=50, warmup=5, threads=1, seed=0):
    """Wall time of one ``invoke`` at batch 1, after ``warmup`` untimed runs.

    Returns ``median_ms``, ``p10_ms``, ``p90_ms``, ``iqr_ms``, ``mean_ms``, ``min_ms``,
    ``repeats``, ``warmup``, ``threads``, ``batch`` (1), ``runtime`` and ``kernels``
    (``"xnnpack"``, or ``"builtin"`` where XNNPACK could not take the model). The input
    is random, of the file's own input shape and dtype: uniform in [0, 1) for float
    inputs and quantized ones (quantized with the file's scale), any value for
    unquantized 8-bit integer inputs, zeros for other integer inputs (ids).

    Example:
        >>> latency("model-int8.tflite", repeats=100)["median_ms"]
        0.183
    """
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"Argument `{name}` must be an integer >= {low}. Received: {name}={value!r}"
            )
    times, kernels = _time_invokes(path, repeats=repeats, warmup=warmup, threads=threads,
                                   seed=seed)
    p10, p25, p75, p90 = np.percentile(times, [10, 25, 75, 90])
    return {
        "median_ms": float(statistics.median(times)),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
        "iqr_ms": float(p75 - p25),
        "mean_ms": float(np.mean(times)),
        "min_ms": float(np.min(times)),
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads,
        "batch": 1,
        "runtime": runtime_name(),
        "kernels": kernels,
    }


def latency_rounds(paths, *, baseline, rounds=9, repeats=100, warmup=10, threads=1, seed=0):
    """Latency of several ``.tflite`` files and their speed-up over ``baseline``, in rounds.

    One sequential pass per file misleads on a busy machine: a noisy spell hits one file
    and not the others. Here every round times every file (:func:`latency`: ``repeats``
    invokes at batch 1 after ``warmup``), each round starting one file later than the one
    before, and the speed-up of a file is taken within a round (the baseline's round
    median over the file's), so that what slows a round slows both sides of the ratio.

    Args:
        paths: ``{name: path}`` of the files, at least one; ``baseline`` among the names.
        baseline: the name whose latency the others are divided into.
        rounds, repeats, warmup, threads, seed: as above (``seed`` for the random input).

    Returns:
        ``{"rounds", "repeats", "warmup", "threads", "batch": 1, "baseline", "runtime",
        "files": {name: {...}}}``, each file with ``median_ms`` (median of its round
        medians), ``x_faster`` (median of the within-round ratios baseline / file; exactly
        1.0 for the baseline), ``x_faster_range`` ([min, max] of those ratios),
        ``round_medians_ms``, ``p10_ms`` and ``p90_ms`` (percentiles of all its timed
        invokes, every round) and ``kernels`` (``"xnnpack"`` or ``"builtin"``).
        Progress over the rounds is shown (see :mod:`kprune.progress`).

    Example:
        >>> t = latency_rounds({"dense": "dense.tflite", "2:4": "sparse.tflite"},
        ...                    baseline="dense", rounds=9, repeats=100)
        >>> t["files"]["2:4"]["x_faster"], t["files"]["2:4"]["x_faster_range"]
        (0.97, [0.93, 1.01])
    """
    from collections.abc import Mapping

    if not isinstance(paths, Mapping) or not paths:
        raise ValueError(
            "Argument `paths` must be a non-empty dict {name: .tflite path}. "
            f"Received: paths={paths!r}"
        )
    names = list(paths)
    if baseline not in paths:
        raise ValueError(
            f"Argument `baseline` must be one of the names in `paths` {names}. "
            f"Received: baseline={baseline!r}"
        )
    for name, value, low in (("rounds", rounds, 1), ("repeats", repeats, 1),
                             ("warmup", warmup, 0), ("threads", threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"Argument `{name}` must be an integer >= {low}. Received: {name}={value!r}"
            )
    for name in names:  # fail before any timing, not half-way through
        check_tflite(paths[name])
    per_round = {name: [] for name in names}
    every = {name: [] for name in names}
    kernels = {}
    for index in progress.track(range(rounds), "measure latency", unit="round"):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times, kernels[name] = _time_invokes(paths[name], repeats=repeats, warmup=warmup,
                                                 threads=threads, seed=seed)
            per_round[name].append(statistics.median(times))
            every[name].extend(times)
    files = {}
    for name in names:
        ratios = [b / t for b, t in zip(per_round[baseline], per_round[name])]
        p10, p90 = np.percentile(every[name], [10, 90])
        files[name] = {
            "median_ms": float(statistics.median(per_round[name])),
            "x_faster": 1.0 if name == baseline else float(statistics.median(ratios)),
            "x_faster_range": [float(min(ratios)), float(max(ratios))],
            "round_medians_ms": [float(t) for t in per_round[name]],
            "p10_ms": float(p10),
            "p90_ms": float(p90),
            "kernels": kernels[name],
        }
    return {"rounds": rounds, "repeats": repeats, "warmup": warmup, "threads": threads,
            "batch": 1, "baseline": baseline, "runtime": runtime_name(), "files": files}


def count_params(model):
    """``{"params": model.count_params(), "nonzero_params": non-zero weights}`` of a Keras model
    (tf_keras or Keras 3).

    All weights count (biases and batch-norm statistics too), as in ``count_params``.
    The model must be stripped (``kprune.strip``): a wrapper's kernel is not yet masked.
    """
    from kprune.core import layers

    wrapped = [p for p, layer in layers.model_layers(model)  # tf_keras or Keras 3, checked
               if layers.unwrap(layer) is not layer]
    if wrapped:
        raise ValueError(
            f"Argument `model` still has pruning wrappers on {wrapped}; call kprune.strip "
            f"first. Received: model={model.name!r}"
        )
    nonzero = sum(int(np.count_nonzero(w)) for w in model.get_weights())
    return {"params": int(model.count_params()), "nonzero_params": nonzero}

