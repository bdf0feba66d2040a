"""Save and load models, wrapped (mid-training) or stripped, without losing N:M settings.

tfmot's wrapper config drops ``sparsity_m_by_n``, so a reloaded 2:4 layer would
quietly turn unstructured; kprune's wrapper (``kprune.wrap.PruneLowMagnitude``) keeps
it, and the pruning step is a saved weight, so training resumes where it stopped.
The resolved plan that ``kprune.apply`` attached is stored in the file too (an entry
``kprune_plan.json`` in a ``.keras`` archive, an attribute of an ``.h5`` file), so a
reloaded model can still be checked with ``sparsity_report(model, strict=True)``.

Example:
    >>> kprune.save_model(pruned, "ckpt.keras")
    >>> pruned = kprune.load_model("ckpt.keras")   # compile state kept; fit again
"""

import json
import mmap
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from kprune.core.plan import ResolvedPlan
from kprune.engines.question import is_keras3
from kprune.engines.tfkeras import loader

__all__ = ["save_model", "load_model", "keras_major_version"]

FORMATS = (".keras", ".h5")
# Also read: ``.hdf5``, another name for an HDF5 model file.
READ_FORMATS = FORMATS + (".hdf5",)
PLAN_ENTRY = "kprune_plan.json"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_GLOBAL_HEAP = b"GCOL\x01\x00\x00\x00"  # signature, version 1, reserved


def _check_suffix(path, formats=FORMATS):
    path = Path(path)
    if path.suffix not in formats:
        raise ValueError(
            f"Argument `path` must end in {' or '.join(formats)}. Received: path={str(path)!r}"
        )
    return path


def save_model(model, path):
    """Save a model (wrapped or stripped) as ``.keras`` or ``.h5``; returns the path.

    A Keras 3 model is saved by :mod:`kprune.engines.keras3.saving` (``.keras`` only).
    """
    if is_keras3(model):
        from kprune.engines.keras3 import saving as keras3_saving

        path = keras3_saving.save_model(model, path)
    else:
        loader.check_model(model)
        path = _check_suffix(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(str(path))
    plan = getattr(model, "_kprune_plan", None)
    if plan is not None:
        _write_plan(path, json.dumps(plan.to_dict()))
    return path


def _write_plan(path, text):
    if path.suffix == ".keras":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(PLAN_ENTRY, text)
    else:
        import h5py

        with h5py.File(path, "a") as handle:
            handle.attrs[PLAN_ENTRY] = text


def _read_plan(path):
    """The resolved plan stored by :func:`save_model`, or None."""
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            if PLAN_ENTRY not in archive.namelist():
                return None
            text = archive.read(PLAN_ENTRY).decode()
    else:
        import h5py

        with h5py.File(path, "r") as handle:
            text = handle.attrs.get(PLAN_ENTRY)
        if text is None:
            return None
    return ResolvedPlan.from_dict(json.loads(text))


def load_model(path, *, compile=True, custom_objects=None):
    """Load a model saved by :func:`save_model` (or plain Keras), pruning wrappers included.

    The resolved plan saved with it comes back as the model's plan, so
    ``kprune.sparsity_report(model, strict=True)`` checks against it.

    Raises:
        ValueError: the file is not a readable model file (empty, truncated, damaged,
            another format) or Keras cannot load the model in it; the message is one
            sentence that names the file and what is wrong.
    """
    path = _check_suffix(path, READ_FORMATS)
    if not path.exists():
        raise FileNotFoundError(f"No model file at this path. Received: path={str(path)!r}")
    problem = _file_problem(path)
    if problem:
        raise ValueError(f"{path}: not a readable Keras model file ({problem})")
    try:
        if keras_major_version(path) >= 3:  # saved from Keras 3: a Keras 3 model again
            from kprune.engines.keras3 import saving as keras3_saving

            model = keras3_saving.load_model(path, compile=compile,
                                             custom_objects=custom_objects)
        else:
            from kprune.engines.tfkeras.wrapper import PruneLowMagnitude

            objects = {"PruneLowMagnitude": PruneLowMagnitude, **(custom_objects or {})}
            with loader.tfmot.sparsity.keras.prune_scope():
                model = loader.keras.models.load_model(
                    str(path), custom_objects=objects, compile=compile
                )
        plan = _read_plan(path)
    except Exception as err:  # damage the checks above miss fails anywhere in Keras/h5py
        name = unknown_class(err)
        if name is not None:
            raise ValueError(
                f"{path}: cannot load the Keras model in this file: it holds the custom class "
                f"{name!r}, which is not registered in this process (import the module that "
                "defines it, with keras.saving.register_keras_serializable, before loading, "
                "or pass it in custom_objects)"
            ) from err
        raise ValueError(
            f"{path}: cannot load the Keras model in this file ({_say(err)})"
        ) from err
    if plan is not None:
        model._kprune_plan = plan
    return model


def unknown_class(err):
    """The name of the class Keras could not find while loading (``err`` or an exception
    in its chain says so: Keras 3's "Could not locate class", tf_keras's "Unknown layer"
    and "Cannot deserialize object of type"), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        found = re.search(r"Could not locate (?:class|function) '([^']+)'|Unknown "
                          r"(?:layer|object|class)(?: name)?: '?([\w.>]+)|Cannot deserialize "
                          r"object of type `([^`]+)`", str(err))
        if found:
            return next(name for name in found.groups() if name)
        err = err.__cause__ or err.__context__
    return None


def keras_major_version(path):
    """The major version of the Keras that wrote a ``.keras`` file (2 for tf_keras, 3 for
    Keras 3, from its ``metadata.json``); 2 for HDF5 files and files without one."""
    if path.suffix != ".keras":
        return 2
    with zipfile.ZipFile(path) as archive:
        if "metadata.json" not in archive.namelist():
            return 2
        version = str(json.loads(archive.read("metadata.json")).get("keras_version", "2"))
    major = version.split(".")[0]
    return int(major) if major.isdigit() else 2


def _file_problem(path):
    """What makes ``path`` unreadable as a .keras archive or an HDF5 model, or None."""
    if path.is_dir():
        return "a folder, not a file"
    if path.stat().st_size == 0:
        return "the file is empty"
    with open(path, "rb") as handle:
        head = handle.read(8)
    if path.suffix == ".keras":
        return _zip_problem(path, head)
    if head != _HDF5_SIGNATURE:
        return "no HDF5 signature: not an HDF5 file, or a damaged one"
    return _global_heap_problem(path) or _hdf5_problem(path)


def _zip_problem(path, head):
    if not head.startswith(b"PK\x03\x04"):
        return "not a zip archive, which a .keras file is"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()  # every entry's CRC: any flipped byte shows
    except Exception as err:  # zipfile fails in many ways on a damaged archive
        return f"truncated or damaged zip archive: {_say(err)}"
    if damaged is not None:
        return f"damaged zip archive: {damaged!r} fails its CRC check"
    if "config.json" not in names:
        return "a zip archive without config.json, so not a Keras model"
    return None


# Reads every attribute and dataset of an HDF5 file, as Keras then does; exit 3: no model.
_READ_HDF5 = """
import sys, h5py
def read(name, obj):
    for key in obj.attrs:
        obj.attrs[key]
    if isinstance(obj, h5py.Dataset):
        obj[()]
with h5py.File(sys.argv[1], "r") as handle:
    read("/", handle)
    handle.visititems(read)
    sys.exit(0 if "model_config" in handle.attrs else 3)
"""
_HDF5_TIMEOUT_S = 120


def _hdf5_problem(path):
    """Read the file once in a child process: HDF5 can crash or hang on damaged bytes.

    (A flipped byte in a datatype message makes HDF5 1.14 segfault in H5Aread, for
    one.) A file the child reads without trouble is then safe to load here.
    """
    try:
        child = subprocess.run([sys.executable, "-c", _READ_HDF5, str(path)],
                               capture_output=True, text=True, timeout=_HDF5_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"damaged HDF5 file: HDF5 did not finish reading it in {_HDF5_TIMEOUT_S} s"
    if child.returncode == 3:
        return "an HDF5 file without a Keras model (no model_config; saved weights only?)"
    if child.returncode < 0:
        return (f"damaged HDF5 file: the HDF5 library crashed reading it (signal "
                f"{-child.returncode})")
    if child.returncode:
        lines = child.stderr.strip().splitlines() or ["no message"]
        return f"truncated or damaged HDF5 file: {_shorten(lines[-1])}"
    return None


def _global_heap_problem(path):
    """A global heap collection whose objects do not tile it, or None.

    HDF5 (1.14) loops forever, or reads past the heap, on such a collection (where a
    model file keeps its variable-length strings: the model config, layer names), so
    the collections are walked here first, as ``H5HG__cache_heap_deserialize`` does.
    """
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        if len(raw) < 16:
            return None  # h5py refuses the file
        version = raw[8]
        width = raw[14] if version < 2 else raw[10]  # the superblock's "size of lengths"
        if width not in (2, 4, 8):
            return None  # h5py refuses the superblock itself
        header = 8 + width  # object index, reference count, reserved, object size
        start = raw.find(_GLOBAL_HEAP)
        while start >= 0:
            size = int.from_bytes(raw[start + 8 : start + 8 + width], "little")
            end = start + size
            at = start + 8 + width
            if end > len(raw) or size < at - start:
                return f"global heap at byte {start:,} runs past the end of the file"
            while at + header <= end:
                index = int.from_bytes(raw[at : at + 2], "little")
                length = int.from_bytes(raw[at + 8 : at + header], "little")
                need = header + (length + 7) // 8 * 8 if index else length
                if need == 0 or at + need > end:
                    return (f"global heap at byte {start:,} is damaged (object {index} at "
                            f"byte {at:,} does not fit)")
                at += need
            start = raw.find(_GLOBAL_HEAP, start + 1)
    return None


def _say(err):
    """An exception as one short line: its type and message."""
    return _shorten(f"{type(err).__name__}: {err}")


def _shorten(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
