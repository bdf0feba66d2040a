"""Read a ``.tflite`` file's flatbuffer: every tensor's shape, dtype, storage and values.

Reading tensors does not run the model: :func:`tflite_tensors` parses the flatbuffer with
the TFLite schema shipped in LiteRT, so the weights it reports are the ones stored on
disk, including tensors stored sparse (``EXPERIMENTAL_SPARSITY``), which it expands
itself instead of trusting the runtime's densified copies (``get_tensor`` on a
sparse-stored tensor gives the compressed buffer, and under XNNPACK a DENSIFY output
reads as zeros).

TFLite weight layouts differ from Keras: conv kernels are (out, kh, kw, in) and Dense
kernels (out, in), so the input channel (the axis N:M groups run along) is the *last*
axis. int8 weights are symmetric per channel (zero point 0), so a pruned weight stays 0.

Example:
    >>> from kprune.tflite import flatbuffer
    >>> info = flatbuffer.tflite_tensors("pruned-sparse.tflite")
    >>> info.sparse_storage, info.densify_ops
    (True, 2)
    >>> print(info)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kprune.core.table import table

__all__ = ["TensorInfo", "TfliteInfo", "check_tflite", "tflite_tensors", "MIN_WEIGHT_SIZE"]

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


def check_tflite(path):
    """Raise unless ``path`` is a file that starts like a TFLite flatbuffer; return a Path."""
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
        return table(header, lines) + "\n" + summary


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
    path = check_tflite(path)
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
        from kprune.core import masks

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
