"""Measure ``.tflite`` files: accuracy in the LiteRT runtime, bytes raw and gzipped, latency,
and per-tensor sparsity and N:M compliance read back from the file itself.

The runtime is LiteRT (``ai_edge_litert.interpreter.Interpreter``); ``tf.lite.Interpreter``
(deprecated) is used only when LiteRT cannot be imported, and the reason is logged on the
``"kprune"`` logger. Reading tensors does not run the model: :func:`tflite_tensors` parses
the flatbuffer (with the TFLite schema shipped in LiteRT), so the weights it reports are
the ones stored on disk, including tensors stored sparse (``EXPERIMENTAL_SPARSITY``), which
it expands itself instead of trusting the runtime's densified copies.

TFLite weight layouts differ from Keras: conv kernels are (out, kh, kw, in) and Dense
kernels (out, in), so the input channel (the axis N:M groups run along) is the *last* axis.
int8 weights are symmetric per channel (zero point 0), so a pruned weight stays exactly 0.

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
"""

from __future__ import annotations

import gzip
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "TensorInfo",
    "TfliteInfo",
    "count_params",
    "evaluate_tflite",
    "file_sizes",
    "latency",
    "load_interpreter",
    "predict_tflite",
    "runtime_name",
    "tflite_tensors",
]

logger = logging.getLogger("kprune")

_IDENTIFIER = b"TFL3"
# A constant tensor counts as a weight when it has >= 2 dims and at least this many values.
MIN_WEIGHT_SIZE = 64
# Ops that only re-encode a weight on its way to the op that uses it.
_PASS_THROUGH_OPS = ("DENSIFY", "DEQUANTIZE")

_DTYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


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
            from kprune import _compat

            logger.warning(
                "LiteRT (ai_edge_litert) cannot be imported (%s); falling back to the "
                "deprecated tf.lite.Interpreter. Install it with `pip install ai-edge-litert`.",
                err,
            )
            _RUNTIME.update(
                {
                    "class": _compat.tf.lite.Interpreter,
                    "resolvers": _compat.tf.lite.experimental.OpResolverType,
                    "name": "tf.lite",
                }
            )
    return _RUNTIME


def runtime_name():
    """``"ai_edge_litert"``, or ``"tf.lite"`` when LiteRT could not be imported."""
    return _runtime()["name"]


def _check_tflite(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .tflite file at this path. Received: path={str(path)!r}")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] != _IDENTIFIER:
        raise ValueError(
            "File is not a TFLite model (no 'TFL3' flatbuffer identifier); it may be "
            f"corrupt or truncated. Received: path={str(path)!r}"
        )
    return path


def load_interpreter(path, *, threads=None, delegate=True):
    """A LiteRT interpreter for ``path`` (tensors not yet allocated).

    ``delegate=False`` runs TFLite's builtin kernels without the default XNNPACK delegate.
    """
    path = _check_tflite(path)
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


def _prepared(path, *, threads=None, batch=None):
    """``(interpreter, kernels)``: allocated, the input resized to ``batch`` if allowed.

    The default XNNPACK delegate cannot prepare int8 or dynamic-range models whose
    weights come out of a DENSIFY op (sparse storage); such models then run on the
    builtin kernels, with a warning. ``kernels`` is ``"xnnpack"`` or ``"builtin"``.
    """

    def build(delegate):
        interpreter = load_interpreter(path, threads=threads, delegate=delegate)
        detail, _ = _single_input(interpreter, path)
        signature = detail.get("shape_signature", detail["shape"])
        if batch is not None and int(signature[0]) == -1 and int(detail["shape"][0]) != batch:
            shape = [batch, *(int(d) for d in detail["shape"][1:])]
            interpreter.resize_tensor_input(detail["index"], shape, strict=True)
        interpreter.allocate_tensors()
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
            str(err).strip(),
        )
        return build(False), "builtin"
    ops = [op.get("op_name") for op in interpreter._get_ops_details()]
    return interpreter, "xnnpack" if "DELEGATE" in ops else "builtin"


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


def _quantize(x, detail):
    dtype = detail["dtype"]
    if dtype in (np.int8, np.uint8, np.int16):
        scale, zero_point = detail["quantization"]
        if not scale:
            raise ValueError(f"Input tensor {detail['name']!r} is {dtype.__name__} without a scale")
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def _dequantize(values, detail):
    if detail["dtype"] in (np.int8, np.uint8, np.int16):
        scale, zero_point = detail["quantization"]
        if scale:
            return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32, copy=False)


def predict_tflite(path, x, *, batch_size=256, threads=None):
    """Run ``x`` through the model in ``path``; return the (dequantized, float) outputs.

    Batches of ``batch_size`` when the model's batch dimension is dynamic (the last batch
    padded), else the model's own batch size. int8/uint8 inputs are quantized with the
    input tensor's (scale, zero point) and int8 outputs dequantized with the output's.
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
    interpreter, _ = _prepared(path, threads=threads, batch=batch)
    detail, output = _single_input(interpreter, path)
    chunks = []
    for start in range(0, len(x), batch):
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


def evaluate_tflite(path, x, y, *, batch_size=256, threads=None):
    """Top-1 accuracy of the ``.tflite`` at ``path`` on ``(x, y)`` in the LiteRT runtime.

    ``y`` holds integer labels (or one-hot rows). Example:
        >>> evaluate_tflite("model.tflite", x_test, y_test)
        0.9921
    """
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            "Arguments `x` and `y` must hold the same number of samples, `y` as integer "
            f"labels. Received: len(x)={len(x)}, y.shape={y.shape}"
        )
    if len(y) == 0:
        raise ValueError("Arguments `x` and `y` are empty.")
    scores = predict_tflite(path, x, batch_size=batch_size, threads=threads)
    return float(np.mean(scores.argmax(axis=-1) == y))


# --------------------------------------------------------------------------- sizes, latency


def file_sizes(path):
    """``{"bytes": raw size, "gzip_bytes": size gzipped at level 9}`` (gzip done in memory)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No file at this path. Received: path={str(path)!r}")
    data = path.read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def latency(path, *, repeats=50, warmup=5, threads=1, seed=0):
    """Wall time of one ``invoke`` at batch 1, after ``warmup`` untimed runs.

    Returns ``median_ms``, ``p10_ms``, ``p90_ms``, ``iqr_ms``, ``mean_ms``, ``min_ms``,
    ``repeats``, ``warmup``, ``threads``, ``batch`` (1), ``runtime`` and ``kernels``
    (``"xnnpack"``, or ``"builtin"`` where XNNPACK could not take the model). The input is
    random (uniform in [0, 1), quantized for an int8 model).
    """
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"Argument `{name}` must be an integer >= {low}. Received: {name}={value!r}"
            )
    interpreter, kernels = _prepared(path, threads=threads, batch=1)
    detail, _ = _single_input(interpreter, path)
    rng = np.random.default_rng(seed)
    sample = _quantize(rng.random(detail["shape"], dtype=np.float32), detail)
    interpreter.set_tensor(detail["index"], sample)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
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


def count_params(model):
    """``{"params": model.count_params(), "nonzero_params": non-zero weights}`` of a Keras model.

    All weights count (biases and batch-norm statistics too), as in ``count_params``.
    The model must be stripped (``kprune.strip``): a wrapper's kernel is not yet masked.
    """
    from kprune import _compat

    _compat.check_model(model)
    wrapped = [p for p, layer in _compat.iter_layers(model)
               if isinstance(layer, _compat.PruneLowMagnitude)]
    if wrapped:
        raise ValueError(
            f"Argument `model` still has pruning wrappers on {wrapped}; call kprune.strip "
            f"first. Received: model={model.name!r}"
        )
    nonzero = sum(int(np.count_nonzero(w)) for w in model.get_weights())
    return {"params": int(model.count_params()), "nonzero_params": nonzero}


# --------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a ``.tflite``, as stored in the file.

    ``nonzero``/``sparsity`` are set for constant tensors whose values could be read
    (for int8 weights "zero" means the stored value equals the zero point);
    ``n_m_violations`` (groups of ``m`` along the last axis with fewer than ``m - n``
    zeros) for weight tensors whose last axis holds at least ``m`` values.
    ``op`` is the op that uses the tensor (through DENSIFY/DEQUANTIZE).
    """

    index: int
    name: str
    shape: tuple
    dtype: str
    constant: bool
    weight: bool
    stored_sparse: bool
    size: int
    stored_bytes: int
    nonzero: int | None = None
    sparsity: float | None = None
    n: int | None = None
    m: int | None = None
    n_m_violations: int | None = None
    op: str = ""
    values: object = field(default=None, repr=False, compare=False)

    @property
    def n_m_ok(self):
        return None if self.n_m_violations is None else self.n_m_violations == 0

    def to_dict(self):
        data = {key: value for key, value in asdict(self).items() if key != "values"}
        data["shape"] = list(self.shape)
        data["n_m_ok"] = self.n_m_ok
        return data


@dataclass(frozen=True)
class TfliteInfo:
    """What a ``.tflite`` holds: tensors, ops, sparse storage, DENSIFY ops."""

    path: str
    tensors: tuple
    ops: tuple

    @property
    def weights(self):
        """The weight tensors (constant, >= 2 dims, at least ``MIN_WEIGHT_SIZE`` values)."""
        return [t for t in self.tensors if t.weight]

    @property
    def sparse_storage(self):
        """True when any tensor is stored in TFLite's sparse format."""
        return any(t.stored_sparse for t in self.tensors)

    @property
    def densify_ops(self):
        """Number of DENSIFY ops (one per weight stored sparse)."""
        return sum(op == "DENSIFY" for op in self.ops)

    @property
    def weight_count(self):
        return sum(t.size for t in self.weights)

    @property
    def weight_nonzero(self):
        return sum(t.nonzero or 0 for t in self.weights if t.nonzero is not None)

    @property
    def weight_sparsity(self):
        readable = [t for t in self.weights if t.nonzero is not None]
        total = sum(t.size for t in readable)
        return 1.0 - sum(t.nonzero for t in readable) / total if total else 0.0

    def __getitem__(self, name):
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def to_dict(self):
        return {
            "path": self.path,
            "sparse_storage": self.sparse_storage,
            "densify_ops": self.densify_ops,
            "ops": list(self.ops),
            "weight_count": self.weight_count,
            "weight_nonzero": self.weight_nonzero,
            "weight_sparsity": self.weight_sparsity,
            "weights": [t.to_dict() for t in self.weights],
        }

    def __str__(self):
        from kprune.plan import _table

        header = ("tensor", "op", "shape", "dtype", "storage", "bytes", "sparsity", "N:M")
        lines = []
        for t in self.weights:
            if t.n_m_violations is None:
                nm = ""
            elif t.n_m_ok:
                nm = f"{t.n}:{t.m} ok"
            else:
                nm = f"{t.n_m_violations} groups not {t.n}:{t.m}"
            lines.append(
                (
                    t.name,
                    t.op,
                    "x".join(str(d) for d in t.shape),
                    t.dtype,
                    "sparse" if t.stored_sparse else "dense",
                    f"{t.stored_bytes:,}",
                    "" if t.sparsity is None else f"{t.sparsity:.3f}",
                    nm,
                )
            )
        summary = (
            f"{len(self.weights)} weight tensors, {self.weight_count:,} values, sparsity "
            f"{self.weight_sparsity:.3f}; sparse storage: {'yes' if self.sparse_storage else 'no'}"
            f", DENSIFY ops: {self.densify_ops}"
        )
        return _table(header, lines) + "\n" + summary


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        # Without LiteRT, TensorFlow (imported through _compat) ships the same schema.
        import importlib

        from kprune import _compat

        name = f"{_compat.tf.__name__}.lite.python.schema_py_generated"
        return importlib.import_module(name)
    return schema_py_generated


def _names(enum_class):
    return {value: key for key, value in vars(enum_class).items() if not key.startswith("_")}


def tflite_tensors(path, *, n=2, m=4, min_size=MIN_WEIGHT_SIZE, subgraph=0,
                   keep_values=False):
    """Read every tensor of a ``.tflite`` from the flatbuffer: shape, dtype, sparsity, N:M.

    Args:
        path: the ``.tflite`` file.
        n, m: the N:M pattern checked on weight tensors along their last axis (the
            input channel in TFLite layouts): keep ``n`` of every ``m``.
        min_size: smallest constant tensor (in values) that counts as a weight.
        subgraph: which subgraph to read (0, the main one).
        keep_values: keep each constant tensor's dense values (sparse ones expanded, in
            the stored dtype, quantized values not scaled) as ``TensorInfo.values``.

    Returns:
        A :class:`TfliteInfo`; ``print`` it for a table of the weight tensors.
    """
    path = _check_tflite(path)
    schema = _schema()
    raw = path.read_bytes()
    try:
        model = schema.ModelT.InitFromPackedBuf(raw, 0)
        graph = model.subgraphs[subgraph]
    except (IndexError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(
            f"Cannot parse this .tflite flatbuffer ({err}). Received: path={str(path)!r}"
        ) from None
    types = _names(schema.TensorType)
    builtins = _names(schema.BuiltinOperator)
    op_names = []
    for code in model.operatorCodes or []:
        number = max(code.builtinCode or 0, code.deprecatedBuiltinCode or 0)
        name = builtins.get(number, str(number))
        if name == "CUSTOM" and code.customCode:
            name = code.customCode.decode() if isinstance(code.customCode, bytes) else name
        op_names.append(name)
    operators = graph.operators or []
    ops = tuple(op_names[op.opcodeIndex] for op in operators)
    consumers = {}
    for op, name in zip(operators, ops):
        for position in op.inputs if op.inputs is not None else []:
            consumers.setdefault(int(position), []).append((name, op))

    def consumer_of(index, depth=0):
        for name, op in consumers.get(index, []):
            if name in _PASS_THROUGH_OPS and depth < 3 and op.outputs is not None:
                return consumer_of(int(op.outputs[0]), depth + 1)
            return name
        return ""

    tensors = []
    for index, tensor in enumerate(graph.tensors or []):
        tensors.append(
            _tensor_info(index, tensor, model, raw, types, consumer_of, n, m, min_size,
                         keep_values)
        )
    return TfliteInfo(path=str(path), tensors=tuple(tensors), ops=ops)


def _buffer_bytes(model, raw, tensor):
    if not tensor.buffer or tensor.buffer >= len(model.buffers):
        return None
    buffer = model.buffers[tensor.buffer]
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, np.uint8).tobytes()
    if (buffer.offset or 0) > 1 and buffer.size:
        return raw[buffer.offset : buffer.offset + buffer.size]
    return None


def _tensor_info(index, tensor, model, raw, types, consumer_of, n, m, min_size,
                 keep_values=False):
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else []))
    dtype_name = types.get(tensor.type, str(tensor.type))
    size = int(np.prod(shape)) if shape else 1
    data = _buffer_bytes(model, raw, tensor)
    stored_sparse = tensor.sparsity is not None
    constant = data is not None
    weight = constant and len(shape) >= 2 and size >= min_size and dtype_name in (
        "FLOAT32", "FLOAT16", "INT8", "UINT8", "INT16", "FLOAT64"
    )
    base = dict(
        index=index,
        name=name,
        shape=shape,
        dtype=dtype_name.lower(),
        constant=constant,
        weight=weight,
        stored_sparse=stored_sparse,
        size=size,
        stored_bytes=0 if data is None else len(data),
        op=consumer_of(index),
    )
    dtype = _DTYPES.get(dtype_name)
    if not constant or dtype is None:
        return TensorInfo(**base)
    values = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
    zero = _zero_points(tensor, shape, dtype)
    dense = None
    if stored_sparse:
        try:
            dense = _densify(values, shape, tensor.sparsity, fill=zero)
        except (ValueError, IndexError, TypeError, AttributeError) as err:
            logger.warning("Cannot expand sparse tensor %r (%s); N:M not checked.", name, err)
            # Stored values only: zeros among them plus the ones not stored at all.
            nonzero = int(np.count_nonzero(values != np.asarray(zero).ravel()[0]))
            return TensorInfo(**base, nonzero=nonzero, sparsity=1.0 - nonzero / size)
    elif values.size == size:
        dense = values.reshape(shape)
    else:
        return TensorInfo(**base)
    is_zero = dense == zero
    nonzero = int(size - np.count_nonzero(is_zero))
    extra = dict(nonzero=nonzero, sparsity=1.0 - nonzero / size if size else 0.0)
    if keep_values:
        extra["values"] = dense
    if weight and shape[-1] >= m:
        from kprune import masks

        # Count zero-point values as zeros: a 0/1 array whose zeros are the pruned weights.
        pattern = (~is_zero).astype(np.int8)
        extra.update(n=n, m=m, n_m_violations=masks.n_m_violations(pattern, n, m, axis=-1))
    return TensorInfo(**base, **extra)


def _zero_points(tensor, shape, dtype):
    """The value that encodes 0.0: 0, or the zero point(s) of a quantized int tensor."""
    q = tensor.quantization
    if q is None or q.zeroPoint is None or not np.issubdtype(dtype, np.integer):
        return dtype(0)
    points = np.asarray(q.zeroPoint, np.int64)
    if points.size == 0 or not np.any(points):
        return dtype(0)
    if points.size == 1:
        return dtype(points[0])
    axis = int(q.quantizedDimension or 0)
    view = [1] * len(shape)
    view[axis] = points.size
    return points.reshape(view).astype(dtype)


def _densify(values, shape, sparsity, *, fill=0):
    """Expand a TFLite sparse tensor (traversal order, block map, DENSE/CSR levels).

    A vectorised version of TFLite's ``FormatConverter::SparseToDense``: levels are
    walked in traversal order; a DENSE level of size s multiplies every position by s,
    a CSR level expands each position into its segment of ``array_indices``.
    """
    rank = len(shape)
    dims = list(sparsity.dimMetadata or [])
    order = list(sparsity.traversalOrder) if sparsity.traversalOrder is not None else []
    order = order or list(range(len(dims)))
    block_map = list(sparsity.blockMap) if sparsity.blockMap is not None else []
    positions = np.zeros(1, np.int64)
    columns = []
    for level in dims:
        if level.format == 0:  # DENSE
            size = int(level.denseSize)
            columns = [np.repeat(c, size) for c in columns]
            local = np.tile(np.arange(size, dtype=np.int64), len(positions))
            positions = np.repeat(positions, size) * size + local
            columns.append(local)
        else:  # SPARSE_CSR
            segments = np.asarray(level.arraySegments.values, np.int64)
            indices = np.asarray(level.arrayIndices.values, np.int64)
            starts = segments[positions]
            counts = segments[positions + 1] - starts
            firsts = np.cumsum(counts) - counts
            positions = np.repeat(starts, counts) + (
                np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(firsts, counts)
            )
            columns = [np.repeat(c, counts) for c in columns]
            columns.append(indices[positions])
    if len(positions) != values.size:
        raise ValueError(
            f"sparse metadata describes {len(positions)} values, the buffer holds {values.size}"
        )
    original = [None] * rank
    for level in range(rank):
        original[order[level]] = columns[level]
    for level in range(rank, len(dims)):
        dim = block_map[order[level] - rank]
        original[dim] = original[dim] * int(dims[level].denseSize) + columns[level]
    dense = np.empty(shape, values.dtype)
    dense[...] = fill
    dense[tuple(original)] = values
    return dense
