"""TFLite export: float, dynamic-range, full int8 and float16, with or without sparse storage.

Every ``.tflite`` is written atomically: the model is converted to bytes first, the
bytes go to a temporary file in the same folder, which is flushed, fsynced and then
``os.replace``-d onto the target. An error or a KeyboardInterrupt never leaves a
half-written file behind, and an existing file is only ever replaced by a complete one.

Sparse storage (``sparse=True``) adds the converter's ``EXPERIMENTAL_SPARSITY``: weight
tensors that are sparse enough are stored compressed and a ``DENSIFY`` op expands them
when the interpreter is prepared. It shrinks the *raw* file, but its index arrays cost
2 bytes per kept weight (uint16), so for int8 weights it only pays below ~1/3 density
(or with 16-wide zero blocks): 2:4 + int8 + sparse is *larger* than 2:4 + int8. It
does not make inference faster on x86 (XNNPACK has no sparse fast path there), and
LiteRT's XNNPACK delegate refuses int8 or dynamic-range weights behind DENSIFY, so
those files run on TFLite's slower builtin kernels (``kprune.measure`` says so). The
exception is block sparsity: an int8 Dense kernel whose zeros fill blocks of 16
consecutive inputs of one output unit (a ``method="block", block=16`` plan rule) is
stored block-sparse (``block_map`` [1], no DENSIFY; ``kprune.flatbuffer`` reports it) and
runs on LiteRT's builtin block-sparse kernel, smaller and faster than dense int8.

Example:
    >>> from kprune import export
    >>> final = kprune.strip(pruned)
    >>> export.to_tflite(final, "out/pruned-int8.tflite", quantize="int8",
    ...                  representative_data=x_train[:200])
    ExportResult(path=PosixPath('out/pruned-int8.tflite'), bytes=..., variant='int8', ...)
    >>> results = export.export_variants(final, "out", ["float", "sparse", "sparse-int8"],
    ...                                  representative_data=x_train[:200])
"""

from __future__ import annotations

import os
import secrets
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kprune import progress
from kprune.core import layers
from kprune.engines import engine_of
from kprune.engines.tfkeras import loader
from kprune.engines.verify import check_stripped
from kprune.methods.pqat import pqat_int8

__all__ = [
    "BlockSparseWarning",
    "QUANTIZE",
    "VARIANTS",
    "ExportResult",
    "convert",
    "export_variants",
    "is_qat_model",
    "pqat_int8",
    "to_tflite",
    "write_atomic",
]


#: The ``quantize`` values :func:`to_tflite` accepts.
QUANTIZE = ("none", "dynamic", "int8", "float16")

#: Named export presets: keyword arguments for :func:`to_tflite`.
VARIANTS = types.MappingProxyType(
    {
        "float": types.MappingProxyType(dict(quantize="none", sparse=False)),
        "sparse": types.MappingProxyType(dict(quantize="none", sparse=True)),
        "dynamic": types.MappingProxyType(dict(quantize="dynamic", sparse=False)),
        "sparse-dynamic": types.MappingProxyType(dict(quantize="dynamic", sparse=True)),
        "int8": types.MappingProxyType(dict(quantize="int8", sparse=False)),
        "sparse-int8": types.MappingProxyType(dict(quantize="int8", sparse=True)),
        "float16": types.MappingProxyType(dict(quantize="float16", sparse=False)),
    }
)


class BlockSparseWarning(UserWarning):
    """A Dense layer planned in blocks of 16 inputs that the int8 sparse file stores otherwise."""


@dataclass(frozen=True)
class ExportResult:
    """One written ``.tflite``: where, how big (raw bytes), and how it was converted."""

    path: Path
    bytes: int
    variant: str
    quantize: str = "none"
    sparse: bool = False

    def to_dict(self):
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "variant": self.variant,
            "quantize": self.quantize,
            "sparse": self.sparse,
        }


def write_atomic(path, data):
    """Write ``data`` (bytes or str) to ``path`` atomically; return the number of bytes.

    The bytes go to a temporary file next to ``path`` (same file system), are flushed
    and fsynced, and the temporary file is then renamed onto ``path`` with
    ``os.replace``. On any error, KeyboardInterrupt included, the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    parent = path.parent
    _check_writable_dir(parent)
    # Not tempfile.mkstemp: its 0600 mode would survive the rename. 0666 & ~umask, as open().
    tmp = parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(parent)
    return len(data)


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform / file system
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_writable_dir(folder):
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"Cannot create the output folder ({err.strerror}). Received: {str(folder)!r}"
        ) from err
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"The output folder is not writable. Received: {str(folder)!r}"
        )


def is_qat_model(model):
    """True when ``model`` holds tfmot quantization-aware-training layers."""
    prefix = "tensorflow_model_optimization.python.core.quantization"
    return any(type(layer).__module__.startswith(prefix) for _, layer in _iter_all(model))


def _iter_all(model):
    for layer in model.layers:
        yield layer.name, layer
        if isinstance(layer, loader.keras.Model):
            yield from _iter_all(layer)


def _check_stripped(model):
    engine = engine_of(model)
    engine.model_layers(model)  # tf_keras or Keras 3, checked
    _check_backend(engine)
    check_stripped(model)


def _check_representative(model, data, num_calibration):
    if callable(data):
        return data
    if isinstance(num_calibration, bool) or not isinstance(num_calibration, int) or (
        num_calibration < 1
    ):
        raise ValueError(
            "Argument `num_calibration` must be a positive integer. "
            f"Received: num_calibration={num_calibration!r}"
        )
    try:
        array = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise TypeError(
            "Argument `representative_data` must be an array of model inputs, e.g. "
            f"x_train[:200]. Received: {type(data).__name__} ({err})"
        ) from None
    expected = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if expected is None:
        raise ValueError(
            "Models with several inputs need `representative_data` as a callable that "
            "yields lists of input arrays (the TFLite converter's representative_dataset)."
        )
    if array.ndim != len(expected) + 1 or any(
        want is not None and want != got for want, got in zip(expected, array.shape[1:])
    ):
        raise ValueError(
            "Argument `representative_data` must be a batch of model inputs of shape "
            f"(N, {', '.join(str(d) for d in expected)}). "
            f"Received: representative_data.shape={array.shape}"
        )
    if len(array) == 0:
        raise ValueError("Argument `representative_data` is empty; pass e.g. x_train[:200].")
    array = array[:num_calibration]

    def dataset():
        for i in range(len(array)):
            yield [array[i : i + 1]]

    return dataset


#: Keras 3 backends whose ``model.export(format="tf_saved_model")`` the converter reads (JAX
#: through jax2tf; checked: the same predictions in LiteRT).
KERAS3_EXPORT_BACKENDS = ("tensorflow", "jax")


def _check_backend(engine):
    """A Keras 3 model is converted from Keras 3's own SavedModel export: TF or JAX backend
    (a tf_keras model is always on TensorFlow)."""
    backend = engine.backend()
    if backend not in KERAS3_EXPORT_BACKENDS:
        raise ValueError(
            "TFLite export of a Keras 3 model needs the TensorFlow or JAX backend; this "
            f"process runs Keras on {backend!r}. Save the model (kprune.save_model(final, "
            "'final.keras')), then load and export it in a process started with "
            f"KERAS_BACKEND=tensorflow. Received: backend={backend!r}"
        )


def _check_options(model, quantize, sparse, representative_data, num_calibration):
    """Validate the export options; return ``(representative dataset or None, is_qat)``."""
    if quantize not in QUANTIZE:
        raise ValueError(
            f"Argument `quantize` must be one of {QUANTIZE}. Received: quantize={quantize!r}"
        )
    if not isinstance(sparse, bool):
        raise TypeError(f"Argument `sparse` must be True or False. Received: sparse={sparse!r}")
    _check_stripped(model)
    qat = is_qat_model(model)
    dataset = None
    if representative_data is not None:
        dataset = _check_representative(model, representative_data, num_calibration)
    elif quantize == "int8" and not qat:
        raise ValueError(
            "Full int8 quantization needs calibration inputs: pass "
            "`representative_data=x_train[:200]` (a few hundred inputs from your training "
            "data). Received: representative_data=None"
        )
    return dataset, qat


def convert(model, *, quantize="none", sparse=False, representative_data=None,
            num_calibration=200):
    """Convert a stripped tf_keras or Keras 3 model to ``.tflite`` bytes (see :func:`to_tflite`)."""
    dataset, qat = _check_options(model, quantize, sparse, representative_data,
                                  num_calibration)
    try:
        with engine_of(model).tflite_converter(model) as converter:
            return _run_converter(converter, quantize, sparse, dataset, qat)
    except Exception as err:  # Keras 3 off TensorFlow: say which backend converts it
        backend = engine_of(model).backend()
        if backend == "tensorflow":
            raise
        text = " ".join(str(err).split())
        raise ValueError(
            f"The TFLite converter cannot read this Keras 3 model's export from the {backend} "
            "backend (a model whose layers keep random state, e.g. Dropout, writes that "
            "state in its export). Save it (kprune.save_model(final, 'final.keras')), then "
            "load and export it in a process started with KERAS_BACKEND=tensorflow. "
            f"Converter said: {type(err).__name__}: {text[:300]}"
        ) from err


def _run_converter(converter, quantize, sparse, dataset, qat):
    """The ``.tflite`` bytes from ``converter`` set up for the variant (optimizations,
    int8 calibration, float16)."""
    tf = loader.tf
    optimizations = []
    if quantize != "none" or qat:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "int8":
        if dataset is not None:
            converter.representative_dataset = dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # A QAT model without calibration data: the fake-quant ranges set the scales; the
        # converter refuses TFLITE_BUILTINS_INT8 without a representative dataset there.
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with warnings.catch_warnings():
        # TF warns about missing input statistics for int8 inputs even though the
        # representative dataset (or QAT ranges) provide them.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def to_tflite(model, path, *, quantize="none", sparse=False, representative_data=None,
              num_calibration=200, variant=None):
    """Convert a stripped tf_keras or Keras 3 model and write it atomically to ``path``.

    Args:
        model: a tf_keras model without pruning wrappers (``kprune.strip(pruned)``), or a
            quantization-aware model from :func:`pqat_int8`; or a stripped Keras 3 model
            on the TensorFlow or JAX backend (exported through Keras 3's ``model.export``).
        path: the ``.tflite`` file to write; its folder is created.
        quantize: ``"none"`` (float32), ``"dynamic"`` (int8 weights, float
            activations), ``"int8"`` (int8 weights and activations, int8 inputs and
            outputs; needs ``representative_data`` unless the model is a QAT model) or
            ``"float16"`` (float16 weights).
        sparse: store sparse weight tensors compressed (``EXPERIMENTAL_SPARSITY``).
        representative_data: inputs for int8 calibration, e.g. ``x_train[:200]`` (an
            array shaped like the model input), or a callable that yields lists of
            input arrays. Also used, if given, for a QAT model.
        num_calibration: how many samples of ``representative_data`` to use.
        variant: the name recorded in the result (default: derived from the options).

    Returns:
        An :class:`ExportResult`. Nothing is written if conversion fails.

    Example:
        >>> to_tflite(final, "pruned.tflite", sparse=True)
    """
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"Argument `path` must end in .tflite. Received: path={str(path)!r}")
    _check_options(model, quantize, sparse, representative_data, num_calibration)
    _check_writable_dir(path.parent)
    data = convert(
        model,
        quantize=quantize,
        sparse=sparse,
        representative_data=representative_data,
        num_calibration=num_calibration,
    )
    size = write_atomic(path, data)
    if quantize == "int8" and sparse:
        _check_block_storage(model, path)
    name = variant or _variant_name(quantize, sparse)
    return ExportResult(path=path, bytes=size, variant=name, quantize=quantize, sparse=sparse)


def _check_block_storage(model, path):
    """Warn (:class:`BlockSparseWarning`) when a Dense layer that the model's plan prunes in
    blocks of 16 inputs is not stored block-sparse in the int8 sparse file ``path``.

    Layers are matched to the file's weights by shape (a Dense kernel ``[in, out]`` is an
    ``[out, in]`` FULLY_CONNECTED weight). Without a plan (``kprune.apply`` attaches one,
    ``strip`` keeps it) there is nothing to check.
    """
    plan = getattr(model, "_kprune_plan", None)
    if plan is None:
        return
    from collections import Counter

    from kprune.core.plan import LITERT_BLOCK
    from kprune.tflite import flatbuffer

    by_path = dict(layers.model_layers(model))
    wanted = []
    for row in plan.pruned:
        layer = by_path.get(row.name)
        if layer is None or row.block[0] % LITERT_BLOCK or layers.kind(layer) != "dense":
            continue
        inputs, outputs = layers.prunable_weights(layer)[0].shape
        wanted.append((row.name, (outputs, inputs)))
    if not wanted:
        return
    stored = Counter(t.shape for t in flatbuffer.tflite_tensors(path).block_sparse)
    missing = []
    for name, shape in wanted:
        if stored[shape]:
            stored[shape] -= 1
        else:
            missing.append(name)
    if missing:
        warnings.warn(
            f"{path}: the plan prunes {missing} in blocks of {LITERT_BLOCK} inputs, but the "
            "converter did not store them block-sparse, so they run on the dense int8 "
            "kernel. It keeps a weight dense when too few of its blocks are zero (measured: "
            "20 % of the 16-input blocks stayed dense, 30 % was stored block-sparse). "
            "kprune.flatbuffer.tflite_tensors(path) shows how each weight is stored.",
            BlockSparseWarning,
            stacklevel=3,
        )


def _variant_name(quantize, sparse):
    base = {"none": "float"}.get(quantize, quantize)
    if sparse:
        return "sparse" if base == "float" else f"sparse-{base}"
    return base


def export_variants(model, out_dir, names=None, *, representative_data=None, prefix="",
                    num_calibration=200):
    """Export ``model`` once per named preset of :data:`VARIANTS` into ``out_dir``.

    Files are named ``{prefix}{name}.tflite``. Returns ``{name: ExportResult}`` in the
    order given. Unknown names are rejected before anything is converted. Progress over
    the variants is shown (see :mod:`kprune.progress`).

    Example:
        >>> export_variants(final, "out", ["float", "sparse-int8"],
        ...                 representative_data=x_train[:200], prefix="pruned-")
    """
    names = list(VARIANTS) if names is None else list(names)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(
            f"Unknown export variant {unknown[0]!r}. Known variants: {list(VARIANTS)}. "
            f"Received: names={names}"
        )
    needs_data = [n for n in names if VARIANTS[n]["quantize"] == "int8"]
    if needs_data and representative_data is None and not is_qat_model(model):
        raise ValueError(
            f"Variants {needs_data} are full int8 and need calibration inputs: pass "
            "`representative_data=x_train[:200]`. Received: representative_data=None"
        )
    out_dir = Path(out_dir)
    results = {}
    for name in progress.track(names, "export", unit="variant",
                               label=lambda name: f"{prefix}{name}.tflite"):
        results[name] = to_tflite(
            model,
            out_dir / f"{prefix}{name}.tflite",
            representative_data=representative_data,
            num_calibration=num_calibration,
            variant=name,
            **VARIANTS[name],
        )
    return results
