"""Read a ``.tflite`` file's flatbuffer: every tensor's shape, dtype, storage and values.

Reading tensors does not run the model: :func:`tflite_tensors` parses the flatbuffer with
the TFLite schema shipped in LiteRT, so the weights it reports are the ones stored on
disk, including tensors stored sparse (``EXPERIMENTAL_SPARSITY``), which it expands
itself instead of trusting the runtime's densified copies (``get_tensor`` on a
sparse-stored tensor gives the compressed buffer, and under XNNPACK a DENSIFY output
reads as zeros).

A damaged, truncated or foreign file raises ``ValueError("PATH: not a valid .tflite file:
...")``: every offset, length and index the reader follows is checked against the file
first (the schema's generated code would read garbage past the end, or crash).

TFLite weight layouts differ from Keras: conv kernels are (out, kh, kw, in) and Dense
kernels (out, in), so the input channel (the axis N:M groups run along) is the *last*
axis. int8 weights are symmetric per channel (zero point 0), so a pruned weight stays 0.

A tensor stored *block-sparse* (the converter found its zeros in whole blocks: for an int8
FULLY_CONNECTED weight, runs of 16 consecutive inputs of one output unit) has a
``block_map`` in its sparsity parameters; ``TensorInfo.block_map``/``block_size`` read them
back and ``TensorInfo.block`` gives the block shape in the tensor's layout, ``(1, 16)``.

Example:
    >>> from kprune.tflite import flatbuffer
    >>> info = flatbuffer.tflite_tensors("pruned-sparse.tflite")
    >>> info.sparse_storage, info.densify_ops
    (True, 2)
    >>> print(info)
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kprune.core.checks import by_name
from kprune.core.table import table

__all__ = ["TensorInfo", "TfliteInfo", "check_tflite", "tflite_tensors", "MIN_WEIGHT_SIZE"]

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
    """Raise unless ``path`` is a file that starts like a TFLite flatbuffer; return a Path.

    Only the head is checked (identifier, root table offset); :func:`tflite_tensors`
    checks the whole structure.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .tflite file at this path. Received: path={str(path)!r}")
    with open(path, "rb") as handle:
        head = handle.read(8)
    size = path.stat().st_size
    try:
        _check_head(head, size)
    except _Damaged as err:
        raise ValueError(f"{path}: not a valid .tflite file: {err}") from None
    return path


class _Damaged(ValueError):
    """What is wrong with a ``.tflite`` file's bytes (the caller adds the path)."""


def _check_head(head, size):
    if size == 0:
        raise _Damaged("the file is empty")
    if size < 8 or head[4:8] != _IDENTIFIER:
        raise _Damaged("no 'TFL3' flatbuffer identifier: not a TFLite model, or a damaged one")
    root = struct.unpack_from("<I", head)[0]
    if root + 4 > size:
        raise _Damaged(f"the root table offset {root:,} is past the end of the "
                       f"{size:,}-byte file (truncated?)")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a ``.tflite``, as stored in the file.

    ``nonzero``/``sparsity`` are set for constant tensors whose values could be read
    (for int8 weights "zero" means the stored value equals the zero point);
    ``n_m_violations`` (groups of ``m`` along the last axis with fewer than ``m - n``
    zeros) for weight tensors whose last axis holds at least ``m`` values.
    ``op`` is the op that uses the tensor (through DENSIFY/DEQUANTIZE).
    ``block_map``/``block_size`` are the file's block sparsity (which dimensions are cut
    into blocks, and the block size along each), empty unless stored block-sparse.
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
    block_map: tuple = ()
    block_size: tuple = ()
    values: object = field(default=None, repr=False, compare=False)

    @property
    def n_m_ok(self):
        return None if self.n_m_violations is None else self.n_m_violations == 0

    @property
    def block(self):
        """The block shape in the tensor's layout, ``(1, 16)`` for an int8 FULLY_CONNECTED
        weight stored block-sparse; None unless stored block-sparse."""
        if not self.block_map:
            return None
        shape = [1] * len(self.shape)
        for dim, size in zip(self.block_map, self.block_size):
            shape[dim] = size
        return tuple(shape)

    @property
    def storage(self):
        """``"dense"``, ``"sparse"`` (element-wise) or ``"block 1x16"`` (block-sparse)."""
        if self.block is not None:
            return "block " + "x".join(str(d) for d in self.block)
        return "sparse" if self.stored_sparse else "dense"

    def to_dict(self):
        data = {key: value for key, value in asdict(self).items() if key != "values"}
        data["shape"] = list(self.shape)
        data["n_m_ok"] = self.n_m_ok
        data["block_map"] = list(self.block_map)
        data["block_size"] = list(self.block_size)
        data["storage"] = self.storage
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
    def block_sparse(self):
        """The weight tensors stored block-sparse (see :attr:`TensorInfo.block`)."""
        return [t for t in self.weights if t.block is not None]

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
        return by_name(self.tensors, name, what="tensor", within=repr(self.path))

    def to_dict(self):
        return {
            "path": self.path,
            "sparse_storage": self.sparse_storage,
            "block_sparse": [t.name for t in self.block_sparse],
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
                    t.storage,
                    f"{t.stored_bytes:,}",
                    "" if t.sparsity is None else f"{t.sparsity:.3f}",
                    nm,
                )
            )
        summary = (
            f"{len(self.weights)} weight tensors, {self.weight_count:,} values, sparsity "
            f"{self.weight_sparsity:.3f}; sparse storage: {'yes' if self.sparse_storage else 'no'}"
            f"{f' ({len(self.block_sparse)} block-sparse)' if self.block_sparse else ''}"
            f", DENSIFY ops: {self.densify_ops}"
        )
        return table(header, lines) + "\n" + summary


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        # Without LiteRT, TensorFlow (imported through loader) ships the same schema.
        import importlib

        from kprune.engines.tfkeras import loader

        name = f"{loader.tf.__name__}.lite.python.schema_py_generated"
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

    Raises:
        ValueError: the file is not a valid ``.tflite`` (damaged, truncated, another
            format); the message names the file and what is wrong.
    """
    path = check_tflite(path)
    raw = path.read_bytes()
    try:
        model = _parse(raw)
        return _read(path, model, raw, n, m, min_size, subgraph, keep_values)
    except _Damaged as err:
        raise ValueError(f"{path}: not a valid .tflite file: {err}") from None


def _parse(raw):
    """The schema's ``ModelT`` of ``raw``, once its structure and indices are checked."""
    schema = _schema()
    _check_head(raw[:8], len(raw))
    _Walk(raw).table(struct.unpack_from("<I", raw)[0], "Model", "model")
    try:
        model = schema.ModelT.InitFromPackedBuf(raw, 0)
    except Exception as err:  # in what the walk does not cover (the op options)
        raise _Damaged(f"the flatbuffer cannot be parsed ({type(err).__name__}: {err})") from None
    _check_model(model, len(raw), schema)
    return model


def _read(path, model, raw, n, m, min_size, subgraph, keep_values):
    schema = _schema()
    if not -len(model.subgraphs) <= subgraph < len(model.subgraphs):
        raise ValueError(f"Argument `subgraph` must index one of the {len(model.subgraphs)} "
                         f"subgraphs of {path}. Received: subgraph={subgraph!r}")
    graph = model.subgraphs[subgraph]
    types = _names(schema.TensorType)
    op_names = _op_names(model, schema)
    operators = graph.operators or []
    ops = tuple(op_names[op.opcodeIndex] for op in operators)
    consumers = {}
    for op, name in zip(operators, ops):
        for position in op.inputs if op.inputs is not None else []:
            consumers.setdefault(int(position), []).append((name, op))

    def consumer_of(index, depth=0):
        for name, op in consumers.get(index, []):
            outputs = [] if op.outputs is None else op.outputs
            if name in _PASS_THROUGH_OPS and depth < 3 and len(outputs):
                return consumer_of(int(outputs[0]), depth + 1)
            return name
        return ""

    tensors = []
    for index, tensor in enumerate(graph.tensors or []):
        tensors.append(
            _tensor_info(index, tensor, model, raw, types, consumer_of, n, m, min_size,
                         keep_values)
        )
    return TfliteInfo(path=str(path), tensors=tuple(tensors), ops=ops)


def _op_names(model, schema):
    builtins = _names(schema.BuiltinOperator)
    names = []
    for code in model.operatorCodes or []:
        number = max(code.builtinCode or 0, code.deprecatedBuiltinCode or 0)
        name = builtins.get(number, str(number))
        if name == "CUSTOM" and code.customCode:
            name = code.customCode.decode() if isinstance(code.customCode, bytes) else name
        names.append(name)
    return names


# The parts of the TFLite schema that tflite_tensors reads, by table and field slot
# (slot i is the vtable entry at byte 4 + 2i): (name, kind), where kind is a scalar's
# size in bytes, _STR, (_VEC, item size), (_TABLE, table), (_TABLES, table) or
# (_UNION, slot of the type field, {type: table}). Union members not listed (the op
# options) are checked as tables only; unpacking catches the rest.
_STR, _VEC, _TABLE, _TABLES, _UNION = "string", "vector", "table", "tables", "union"
_INDEX_VECTORS = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}
_SCHEMA = {
    "Model": {0: ("version", 4), 1: ("operator_codes", (_TABLES, "OperatorCode")),
              2: ("subgraphs", (_TABLES, "SubGraph")), 3: ("description", _STR),
              4: ("buffers", (_TABLES, "Buffer")), 5: ("metadata_buffer", (_VEC, 4)),
              6: ("metadata", (_TABLES, "Metadata")),
              7: ("signature_defs", (_TABLES, "SignatureDef")),
              8: ("external_buffer_groups", (_TABLES, "ExternalBufferGroup")),
              9: ("external_buffers", (_TABLES, "ExternalBuffer"))},
    "OperatorCode": {0: ("deprecated_builtin_code", 1), 1: ("custom_code", _STR),
                     2: ("version", 4), 3: ("builtin_code", 4)},
    "SubGraph": {0: ("tensors", (_TABLES, "Tensor")), 1: ("inputs", (_VEC, 4)),
                 2: ("outputs", (_VEC, 4)), 3: ("operators", (_TABLES, "Operator")),
                 4: ("name", _STR), 5: ("debug_metadata_index", 4)},
    "Tensor": {0: ("shape", (_VEC, 4)), 1: ("type", 1), 2: ("buffer", 4), 3: ("name", _STR),
               4: ("quantization", (_TABLE, "QuantizationParameters")),
               5: ("is_variable", 1), 6: ("sparsity", (_TABLE, "SparsityParameters")),
               7: ("shape_signature", (_VEC, 4)), 8: ("has_rank", 1),
               9: ("variant_tensors", (_TABLES, "VariantSubType")),
               10: ("external_buffer", 4)},
    "Buffer": {0: ("data", (_VEC, 1)), 1: ("offset", 8), 2: ("size", 8)},
    "Operator": {0: ("opcode_index", 4), 1: ("inputs", (_VEC, 4)), 2: ("outputs", (_VEC, 4)),
                 3: ("builtin_options_type", 1), 4: ("builtin_options", (_UNION, 3, {})),
                 5: ("custom_options", (_VEC, 1)), 6: ("custom_options_format", 1),
                 7: ("mutating_variable_inputs", (_VEC, 1)),
                 8: ("intermediates", (_VEC, 4)), 9: ("large_custom_options_offset", 8),
                 10: ("large_custom_options_size", 8), 11: ("builtin_options_2_type", 1),
                 12: ("builtin_options_2", (_UNION, 11, {})), 13: ("debug_metadata_index", 4)},
    "QuantizationParameters": {0: ("min", (_VEC, 4)), 1: ("max", (_VEC, 4)),
                               2: ("scale", (_VEC, 4)), 3: ("zero_point", (_VEC, 8)),
                               4: ("details_type", 1),
                               5: ("details", (_UNION, 4, {1: "CustomQuantization"})),
                               6: ("quantized_dimension", 4)},
    "CustomQuantization": {0: ("custom", (_VEC, 1))},
    "SparsityParameters": {0: ("traversal_order", (_VEC, 4)), 1: ("block_map", (_VEC, 4)),
                           2: ("dim_metadata", (_TABLES, "DimensionMetadata"))},
    "DimensionMetadata": {0: ("format", 1), 1: ("dense_size", 4),
                          2: ("array_segments_type", 1),
                          3: ("array_segments", (_UNION, 2, _INDEX_VECTORS)),
                          4: ("array_indices_type", 1),
                          5: ("array_indices", (_UNION, 4, _INDEX_VECTORS))},
    "Int32Vector": {0: ("values", (_VEC, 4))},
    "Uint16Vector": {0: ("values", (_VEC, 2))},
    "Uint8Vector": {0: ("values", (_VEC, 1))},
    "Metadata": {0: ("name", _STR), 1: ("buffer", 4)},
    "SignatureDef": {0: ("inputs", (_TABLES, "TensorMap")),
                     1: ("outputs", (_TABLES, "TensorMap")), 2: ("signature_key", _STR),
                     4: ("subgraph_index", 4)},
    "TensorMap": {0: ("name", _STR), 1: ("tensor_index", 4)},
    "VariantSubType": {0: ("shape", (_VEC, 4)), 1: ("type", 1), 2: ("has_rank", 1)},
    "ExternalBufferGroup": {0: ("name", _STR)},
    "ExternalBuffer": {0: ("id", 4), 1: ("group", 4), 2: ("offset", 8), 3: ("length", 8),
                       4: ("packing", _STR)},
}


class _Walk:
    """Check that every table, vector and string the schema reaches lies inside the file.

    The schema's generated code reads raw offsets with ``struct.unpack_from``, which
    reads garbage (a negative offset counts from the end) or raises ``struct.error``;
    this walk reads each offset and length once and says which one is out of bounds.
    """

    def __init__(self, raw):
        self.raw, self.size, self.seen = raw, len(raw), set()

    def need(self, at, length, what):
        if at < 0 or at + length > self.size:
            raise _Damaged(f"{what} (bytes {at:,}..{at + length:,}) lies outside the "
                           f"{self.size:,}-byte file (truncated or damaged)")

    def unpack(self, fmt, at, what):
        self.need(at, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.raw, at)

    def target(self, at, what):
        """Where the offset stored at ``at`` points."""
        return at + self.unpack("<I", at, what)[0]

    def vector(self, at, item, what):
        start = self.target(at, what)
        (length,) = self.unpack("<I", start, f"{what}'s length")
        self.need(start + 4, length * item, f"{what} ({length:,} items)")
        return start + 4, length

    def string(self, at, what):
        start, length = self.vector(at, 1, what)
        self.need(start + length, 1, f"{what}'s terminating zero")
        if self.raw[start + length] != 0:
            raise _Damaged(f"{what} does not end in a zero byte")
        try:
            self.raw[start : start + length].decode()
        except UnicodeDecodeError:
            raise _Damaged(f"{what} is not UTF-8 text") from None

    def table(self, pos, name, what):
        if (pos, name) in self.seen:
            return
        self.seen.add((pos, name))
        vtable = pos - self.unpack("<i", pos, what)[0]
        vtable_size, inline_size = self.unpack("<HH", vtable, f"{what}'s vtable")
        if vtable_size < 4 or vtable_size % 2 or inline_size < 4:
            raise _Damaged(f"{what} has a malformed vtable (sizes {vtable_size}, {inline_size})")
        self.need(vtable, vtable_size, f"{what}'s vtable")
        self.need(pos, inline_size, what)
        slots = self.unpack(f"<{(vtable_size - 4) // 2}H", vtable + 4, f"{what}'s vtable")
        fields = _SCHEMA.get(name, {})
        for slot, offset in enumerate(slots):
            field, kind = fields.get(slot, (f"field {slot}", 1))
            if offset == 0:
                continue
            if offset + (kind if isinstance(kind, int) else 4) > inline_size:
                raise _Damaged(f"{what}.{field} lies outside its table")
            at, where = pos + offset, f"{what}.{field}"
            if kind == _STR:
                self.string(at, where)
            elif isinstance(kind, int):
                continue
            elif kind[0] == _VEC:
                self.vector(at, kind[1], where)
            elif kind[0] == _TABLE:
                self.table(self.target(at, where), kind[1], where)
            elif kind[0] == _TABLES:
                start, length = self.vector(at, 4, where)
                for i in range(length):
                    item = start + 4 * i
                    self.table(self.target(item, f"{where}[{i}]"), kind[1], f"{where}[{i}]")
            elif kind[0] == _UNION:
                type_offset = slots[kind[1]]
                member = self.raw[pos + type_offset] if type_offset else 0
                if member:
                    self.table(self.target(at, where), kind[2].get(member, ""), where)


def _check_model(model, size, schema):
    """Check what the walk cannot: indices in range, shapes, zero points, DENSIFY shapes."""
    if not model.subgraphs:
        raise _Damaged("it has no subgraphs")
    buffers = model.buffers or []
    for index, buffer in enumerate(buffers):
        start, length = buffer.offset or 0, buffer.size or 0
        if start > 1 and start + length > size:
            raise _Damaged(f"buffer {index} (bytes {start:,}..{start + length:,}) lies "
                           f"outside the {size:,}-byte file")
    densify = schema.BuiltinOperator.DENSIFY
    codes = [max(code.builtinCode or 0, code.deprecatedBuiltinCode or 0)
             for code in model.operatorCodes or []]
    type_names = _names(schema.TensorType)
    for g, graph in enumerate(model.subgraphs):
        tensors = graph.tensors or []
        for t, tensor in enumerate(tensors):
            where = f"subgraph {g} tensor {t}"
            if tensor.buffer and tensor.buffer >= len(buffers):
                raise _Damaged(f"{where} uses buffer {tensor.buffer:,}; the file has "
                               f"{len(buffers):,}")
            shape = [] if tensor.shape is None else [int(d) for d in tensor.shape]
            if any(d < 0 for d in shape):
                raise _Damaged(f"{where} has a negative dimension in its shape {shape}")
            _check_zero_points(tensor, shape, _DTYPES.get(type_names.get(tensor.type)), where)
        _check_indices(graph.inputs, len(tensors), f"subgraph {g}'s inputs")
        _check_indices(graph.outputs, len(tensors), f"subgraph {g}'s outputs")
        for o, op in enumerate(graph.operators or []):
            where = f"subgraph {g} operator {o}"
            if op.opcodeIndex >= len(codes):
                raise _Damaged(f"{where} uses operator code {op.opcodeIndex:,}; the file has "
                               f"{len(codes):,}")
            _check_indices(op.inputs, len(tensors), f"{where}'s inputs")
            _check_indices(op.outputs, len(tensors), f"{where}'s outputs")
            if codes[op.opcodeIndex] == densify:
                _check_densify(op, tensors, where)


def _check_indices(indices, count, what):
    """Tensor indices lie in 0..count-1 (-1: an optional input left out)."""
    for index in [] if indices is None else indices:
        if not -1 <= int(index) < count:
            raise _Damaged(f"{what} name tensor {int(index):,}; the subgraph has {count:,}")


def _check_densify(op, tensors, where):
    """A DENSIFY op's input (the sparse weight) and output have the same shape."""
    if op.inputs is None or op.outputs is None or len(op.inputs) != 1 or len(op.outputs) != 1:
        raise _Damaged(f"{where} (DENSIFY) must have one input and one output")
    source, dense = (tensors[int(op.inputs[0])], tensors[int(op.outputs[0])])
    shapes = [[] if t.shape is None else [int(d) for d in t.shape] for t in (source, dense)]
    if shapes[0] != shapes[1]:
        raise _Damaged(f"{where} (DENSIFY) turns shape {shapes[0]} into {shapes[1]}")


def _check_zero_points(tensor, shape, dtype, where):
    """Zero points fit the dtype, and per-channel ones the quantized dimension."""
    q = tensor.quantization
    if q is None or q.zeroPoint is None or dtype is None or not np.issubdtype(dtype, np.integer):
        return
    points = np.asarray(q.zeroPoint, np.int64)
    info = np.iinfo(dtype)
    if points.size and (points.min() < info.min or points.max() > info.max):
        raise _Damaged(f"{where} has a zero point outside the {np.dtype(dtype).name} range")
    if points.size > 1:
        axis = int(q.quantizedDimension or 0)
        if not 0 <= axis < len(shape) or shape[axis] != points.size:
            raise _Damaged(f"{where} has {points.size} zero points for quantized dimension "
                           f"{axis} of shape {shape}")


def _buffer_bytes(model, raw, tensor):
    if not tensor.buffer:  # buffer 0 is the empty one; _check_model checked the range
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
    size = math.prod(shape)
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
    if not constant or dtype is None or len(data) % np.dtype(dtype).itemsize:
        return TensorInfo(**base)
    values = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
    zero = _zero_points(tensor, shape, dtype)
    if stored_sparse:
        _check_sparsity(values.size, shape, tensor.sparsity, f"tensor {index} ({name!r})")
        dense = _densify(values, shape, tensor.sparsity, fill=zero)
        base.update(_blocks(shape, tensor.sparsity))
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


def _blocks(shape, sparsity):
    """``block_map`` and ``block_size`` of checked sparse metadata (empty when not blocked)."""
    dims, order, block_map = _levels(sparsity)
    sizes = [int(dims[order.index(len(shape) + i)].denseSize) for i in range(len(block_map))]
    return dict(block_map=tuple(block_map), block_size=tuple(sizes))


def _levels(sparsity):
    """The sparse metadata's dimension levels, traversal order and block map, as lists."""
    dims = list(sparsity.dimMetadata or [])
    order = [int(d) for d in sparsity.traversalOrder] if sparsity.traversalOrder is not None \
        else []
    block_map = [int(d) for d in sparsity.blockMap] if sparsity.blockMap is not None else []
    return dims, order or list(range(len(dims))), block_map


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


def _check_sparsity(stored, shape, sparsity, where):
    """Raise unless the sparse metadata fits ``shape`` and the ``stored`` values.

    Counts positions level by level (no arrays), so _densify then indexes only inside
    its arrays and the dense tensor, whatever the file says.
    """
    rank = len(shape)
    dims, order, block_map = _levels(sparsity)

    def fail(problem):
        raise _Damaged(f"{where}: sparse metadata {problem} (shape {list(shape)})")

    if len(dims) != rank + len(block_map) or sorted(order) != list(range(len(dims))):
        fail(f"has {len(dims)} levels, traversal order {order} and block map {block_map}")
    if sorted(order[:rank]) != list(range(rank)) or sorted(set(block_map)) != sorted(
            block_map) or not all(0 <= d < rank for d in block_map):
        fail(f"has traversal order {order} and block map {block_map}")
    sizes = []  # each level's extent
    for level in range(len(dims)):
        dim = order[level]
        if level >= rank:
            sizes.append(int(dims[level].denseSize))
            if dims[level].format != 0 or sizes[-1] < 1:
                fail(f"level {level}: a block level must be DENSE with a positive size")
            continue
        extent = shape[dim]
        if dim in block_map:  # a partial last block is padded (the converter does so)
            block = int(dims[order.index(rank + block_map.index(dim))].denseSize)
            if block < 1:
                fail(f"level {level}: block size {block} along dimension {dim}")
            extent = -(-extent // block)
        sizes.append(extent)
    count = 1  # positions at the current level
    for level, (meta, extent) in enumerate(zip(dims, sizes)):
        if meta.format == 0:
            if int(meta.denseSize) != extent:
                fail(f"level {level}: DENSE size {meta.denseSize} where the shape gives {extent}")
            count *= extent
        elif meta.format == 1:
            segments = getattr(meta.arraySegments, "values", None)
            indices = getattr(meta.arrayIndices, "values", None)
            if segments is None or indices is None or len(segments) != count + 1:
                fail(f"level {level}: CSR needs {count + 1:,} segments")
            segments = np.asarray(segments, np.int64)
            indices = np.asarray(indices, np.int64)
            if segments[0] != 0 or np.any(np.diff(segments) < 0) or segments[-1] != len(
                    indices):
                fail(f"level {level}: CSR segments are not a split of its {len(indices):,} "
                     "indices")
            if len(indices) and (indices.min() < 0 or indices.max() >= extent):
                fail(f"level {level}: a CSR index lies outside 0..{extent - 1}")
            count = len(indices)
        else:
            fail(f"level {level}: unknown format {meta.format}")
    if count != stored:
        fail(f"describes {count:,} stored values; the buffer holds {stored:,}")


def _densify(values, shape, sparsity, *, fill=0):
    """Expand a TFLite sparse tensor (traversal order, block map, DENSE/CSR levels).

    A vectorised version of TFLite's ``FormatConverter::SparseToDense``: levels are
    walked in traversal order; a DENSE level of size s multiplies every position by s,
    a CSR level expands each position into its segment of ``array_indices``. The
    metadata must have passed :func:`_check_sparsity`.
    """
    rank = len(shape)
    dims, order, block_map = _levels(sparsity)
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
    original = [None] * rank
    for level in range(rank):
        original[order[level]] = columns[level]
    for level in range(rank, len(dims)):
        dim = block_map[order[level] - rank]
        original[dim] = original[dim] * int(dims[level].denseSize) + columns[level]
    dense = np.empty(shape, values.dtype)
    dense[...] = fill
    # Drop the padding of partial last blocks (positions past the shape).
    inside = np.logical_and.reduce([o < n for o, n in zip(original, shape)]) if rank else True
    dense[tuple(o[inside] for o in original) if rank else ()] = values[inside]
    return dense
