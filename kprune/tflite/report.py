"""Compare exported ``.tflite`` variants against the dense float baseline: JSON, markdown, plots.

:func:`compare` measures every variant (accuracy in LiteRT, bytes raw and gzipped,
latency at batch 1 in interleaved rounds, what the file stores) on any evaluation data
and writes into ``out_dir``:

* ``report.json`` -- the schema below (also in ``docs/report_schema.md``);
* ``report.md`` -- the same as tables a person reads, with notes on raw vs gzip and speed;
* ``size_vs_accuracy.png`` -- accuracy against size per variant, raw and gzipped both;
* ``layer_sparsity.png`` (one ``layer_sparsity_<group>.png`` per model when several) --
  per-layer achieved sparsity against the plan's target.

Sizes and speed-ups are always relative to the dense float baseline's own ``.tflite``.

report.json schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "title": str,
      "created": ISO-8601 UTC time,
      "versions": {"python", "kprune", "tensorflow", "tf_keras", "tfmot", "litert", "numpy"},
      "machine": {"platform", "machine", "processor", "cpu_count", "cpus_usable"},
      "runtime": "ai_edge_litert" | "tf.lite",
      "baseline": name of the baseline variant,
      "test_samples": int,
      "data": {"samples", "input_shape", "input_dtype", and what the caller passed:
               e.g. "description", "source", "split", "classes"},
      "latency": {"batch": 1, "rounds", "repeats", "warmup", "threads", "measured"},
      "variants": [
        {
          "name", "group", "path", "quantize", "sparse",
          "accuracy":            top-1 accuracy in [0, 1] (LiteRT),
          "accuracy_delta_pp":   (accuracy - baseline accuracy) * 100,
          "bytes", "gzip_bytes": file size raw and gzipped (level 9),
          "x_smaller_raw":       baseline bytes / bytes,
          "x_smaller_gzip":      baseline gzip_bytes / gzip_bytes  (vs the *baseline's* gzip),
          "params":              Keras model.count_params(), or null without a model,
          "nonzero_params":      non-zero Keras weights, or null,
          "latency_ms_median":   median of the variant's round medians (null: not measured),
          "latency_ms_p10", "latency_ms_p90": percentiles of all its timed invokes,
          "latency_kernels":     "xnnpack", or "builtin" where XNNPACK refused the model,
          "x_faster":            median over rounds of baseline / variant round medians,
          "x_faster_range":      [min, max] of those within-round ratios,
          "sparse_storage":      the file stores tensors in TFLite's sparse format,
          "densify_ops":         number of DENSIFY ops in the file,
          "tflite_weights":      values in the file's weight tensors,
          "tflite_weight_nonzero", "tflite_weight_sparsity": read back from the file,
          "layers":  [{"name", "method", "target", "achieved"}]  (Keras side, per layer),
          "tensors": [{"name", "op", "shape", "dtype", "stored_sparse", "storage"
                       ("dense", "sparse" or "block 1x16"), "block_size", "sparsity",
                       "n", "m", "n_m_violations"}]  (weight tensors of the .tflite)
        }, ...
      ]
    }

Example:
    >>> from kprune import export, report
    >>> dense = export.to_tflite(baseline_model, "out/dense.tflite")
    >>> runs = export.export_variants(final, "out", ["float", "sparse-int8"],
    ...                               representative_data=x_train[:200], prefix="pruned-")
    >>> result = report.compare(
    ...     [report.Variant.from_export(dense, model=baseline_model, group="dense"),
    ...      *[report.Variant.from_export(r, model=final, group="pruned", plan=plan)
    ...        for r in runs.values()]],
    ...     baseline="dense/float", x_test=x_test, y_test=y_test, out_dir="out/report",
    ...     data={"source": "mnist", "split": "test", "classes": 10})
    >>> print(result)
"""

from __future__ import annotations

import datetime
import io
import json
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from kprune import progress
from kprune.core.checks import by_name
from kprune.tflite import measure
from kprune.tflite.export import ExportResult, write_atomic

__all__ = [
    "SCHEMA_VERSION",
    "Report",
    "Variant",
    "compare",
    "describe_data",
    "environment",
    "markdown",
    "markdown_table",
    "plot_size_accuracy",
]

SCHEMA_VERSION = 1

_PACKAGES = {
    "kprune": "kprune",
    "tensorflow": "tensorflow",
    "tf_keras": "tf-keras",
    "tfmot": "tensorflow-model-optimization",
    "litert": "ai-edge-litert",
    "numpy": "numpy",
}


def environment():
    """``{"versions": {...}, "machine": {...}}`` for reports and benchmark results."""
    versions = {"python": platform.python_version()}
    for key, package in _PACKAGES.items():
        try:
            versions[key] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[key] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        usable = os.cpu_count()
    machine = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        **_cpu(),
    }
    return {"versions": versions, "machine": machine}


# CPU features that decide which TFLite kernels are fast (int8 dot products, wide vectors).
_CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon",
              "asimd", "asimddp")


def _cpu():
    """``{"cpu_model", "cpu_flags"}`` from /proc/cpuinfo where it exists (Linux), else {}."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return {"cpu_model": model, "cpu_flags": [f for f in _CPU_FLAGS if f in flags]}


@dataclass(frozen=True)
class Variant:
    """One ``.tflite`` to compare, and optionally the Keras model it was exported from.

    Args:
        name: unique name in the report, e.g. ``"pruned/sparse-int8"``.
        path: the ``.tflite`` file.
        model: the exported Keras model (stripped or QAT), for ``params`` and
            ``nonzero_params`` and, with ``plan``/``sparsity``, the per-layer rows.
        group: the model the variant belongs to (variants of one model share it); used
            to pair sparse and dense storage and for per-layer tables.
        quantize, sparse: how the file was converted (see ``kprune.export``).
        plan: a ``PruningPlan`` or resolved plan to label per-layer rows with.
        sparsity: per-layer rows given directly: a ``SparsityReport`` or a list of dicts
            with ``name``, ``method``, ``target``, ``achieved`` (wins over ``model``).
    """

    name: str
    path: Path
    model: object = None
    group: str = ""
    quantize: str = "none"
    sparse: bool = False
    plan: object = None
    sparsity: object = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_export(cls, result, *, model=None, group="", name=None, plan=None,
                    sparsity=None):
        """A variant from an :class:`~kprune.export.ExportResult`; name ``group/variant``."""
        if not isinstance(result, ExportResult):
            raise TypeError(
                "Argument `result` must be a kprune.export.ExportResult. "
                f"Received: result={result!r}"
            )
        default = f"{group}/{result.variant}" if group else result.variant
        return cls(
            name=name or default,
            path=result.path,
            model=model,
            group=group,
            quantize=result.quantize,
            sparse=result.sparse,
            plan=plan,
            sparsity=sparsity,
        )


@dataclass(frozen=True)
class Report:
    """The outcome of :func:`compare`: the report data and the files written."""

    data: dict
    json_path: Path
    markdown_path: Path
    plots: tuple

    @property
    def variants(self):
        return self.data["variants"]

    def __getitem__(self, name):
        return by_name(self.variants, name, what="variant", within="the comparison",
                       name_of=lambda row: row["name"])

    def __str__(self):
        return markdown_table(self.data)


def _as_variant(item, index):
    if isinstance(item, Variant):
        return item
    if isinstance(item, ExportResult):
        return Variant.from_export(item)
    if isinstance(item, tuple) and len(item) == 2:
        return Variant(name=str(item[0]), path=Path(item[1]))
    raise TypeError(
        "Argument `variants` must hold kprune.report.Variant, ExportResult or "
        f"(name, path) items. Received: variants[{index}]={item!r}"
    )


def compare(variants, *, baseline, x_test, y_test, out_dir, latency_repeats=30,
            latency_warmup=3, latency_rounds=5, threads=1, batch_size=256, plots=True,
            title="kprune comparison", data=None, extra=None):
    """Measure each variant against the dense float baseline and write the report.

    Accuracy runs in LiteRT on ``(x_test, y_test)`` (any input shape and dtype the files
    take, see :func:`kprune.measure.evaluate_tflite`). Latency is timed at batch 1 by
    :func:`kprune.measure.latency_rounds`: ``latency_rounds`` interleaved rounds over all
    variants, each timing every file (``latency_repeats`` invokes after
    ``latency_warmup``), so that a noisy spell on the machine hits every variant alike;
    speed-ups are taken within a round. Progress is shown (see :mod:`kprune.progress`).

    Args:
        variants: :class:`Variant` objects (or ``ExportResult`` / ``(name, path)``).
        baseline: the name of the variant that is the dense float ``.tflite``; sizes,
            accuracy deltas and speed-ups are relative to it. It must not store sparse
            tensors nor hold quantized weights.
        x_test, y_test: evaluation data (integer labels, an ``(N, 1)`` column of them or
            one-hot rows).
        out_dir: folder for ``report.json``, ``report.md`` and the PNG plots (created).
        latency_repeats, latency_warmup, latency_rounds, threads: latency at batch 1
            (``latency_repeats=0`` or ``latency_rounds=0``: not measured).
        batch_size: batch for accuracy runs (where the model allows resizing).
        plots: write the PNG plots.
        title: heading of ``report.md``.
        data: what ``x_test`` is, for the report: a short text (``"CIFAR-10 test
            split"``) or a JSON-serialisable dict such as ``{"source": "cifar10",
            "split": "test", "classes": 10}`` (a ``"description"`` key is used as the
            text). Stored as ``"data"`` with ``samples``, ``input_shape`` and
            ``input_dtype`` taken from ``x_test``; ``report.md`` says "Measured on ...".
        extra: a JSON-serialisable dict stored under ``"extra"``.

    Returns:
        A :class:`Report`. ``print`` it for the markdown table.

    Example:
        >>> report.compare([("dense", "dense.tflite"), ("int8", "int8.tflite")],
        ...                baseline="dense", x_test=x, y_test=y, out_dir="out/report",
        ...                data={"source": "cifar10", "split": "test", "classes": 10})
    """
    items = [_as_variant(item, i) for i, item in enumerate(variants)]
    names = [v.name for v in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Variant names must be unique. Received duplicates: {duplicates}")
    if baseline not in names:
        raise ValueError(
            f"Argument `baseline` must name one of the variants {names}. "
            f"Received: baseline={baseline!r}"
        )
    for name, value in (("latency_repeats", latency_repeats), ("latency_rounds", latency_rounds),
                        ("latency_warmup", latency_warmup)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"Argument `{name}` must be an integer >= 0. Received: {name}={value!r}"
            )
    described = _data_description(data, x_test)
    for v in items:
        measure.check_tflite(v.path)
    out_dir = Path(out_dir)
    from kprune.tflite.export import _check_writable_dir

    _check_writable_dir(out_dir)
    base = items[names.index(baseline)]
    base_info = measure.tflite_tensors(base.path)
    if base_info.sparse_storage or any(t.dtype != "float32" for t in base_info.weights):
        raise ValueError(
            "Argument `baseline` must be the dense float .tflite (no sparse storage, "
            f"float32 weights): sizes are reported against it. Received: baseline={baseline!r} "
            f"({base.path})"
        )
    rows = []
    for v in progress.track(items, "measure accuracy", unit="variant",
                            label=lambda v: v.name):
        info = base_info if v is base else measure.tflite_tensors(v.path)
        rows.append(_measure(v, info, x_test, y_test, batch_size, threads))
    measured = latency_repeats > 0 and latency_rounds > 0
    if measured:
        timing = measure.latency_rounds(
            {v.name: v.path for v in items}, baseline=baseline, rounds=latency_rounds,
            repeats=latency_repeats, warmup=latency_warmup, threads=threads)
        for row in rows:
            _add_latency(row, timing["files"][row["name"]])
    _relative(rows, rows[names.index(baseline)])
    result = {
        "schema_version": SCHEMA_VERSION,
        "title": title,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **environment(),
        "runtime": measure.runtime_name(),
        "baseline": baseline,
        "test_samples": int(len(x_test)),
        "data": described,
        "latency": {"batch": 1, "rounds": latency_rounds, "repeats": latency_repeats,
                    "warmup": latency_warmup, "threads": threads, "measured": measured},
        "variants": rows,
    }
    if extra is not None:
        result["extra"] = extra
    plot_paths = _plots(result, out_dir) if plots else ()
    result["plots"] = [p.name for p in plot_paths]
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    write_atomic(json_path, json.dumps(result, indent=2) + "\n")
    write_atomic(md_path, markdown(result))
    return Report(data=result, json_path=json_path, markdown_path=md_path,
                  plots=tuple(plot_paths))


def _data_description(data, x_test):
    """``data`` as the report's dict, with ``samples``, ``input_shape``, ``input_dtype``."""
    from collections.abc import Mapping

    x = x_test if hasattr(x_test, "shape") and hasattr(x_test, "dtype") else np.asarray(x_test)
    derived = {"samples": int(len(x)), "input_shape": [int(d) for d in x.shape[1:]],
               "input_dtype": str(x.dtype)}
    if data is None:
        return derived
    if isinstance(data, str):
        if not data.strip():
            raise ValueError("Argument `data` must not be an empty text. Received: data=''")
        return {"description": data, **derived}
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise TypeError(
            "Argument `data` must be a short text or a dict with text keys describing the "
            f"evaluation data. Received: data={data!r}"
        )
    given = dict(data)
    for key in ("samples", "input_shape"):
        if key in given and _plain(given[key]) != derived[key]:
            raise ValueError(
                f"Argument `data` says {key}={given[key]!r} but `x_test` has "
                f"{key}={derived[key]!r}; the report would misstate what it was measured on. "
                f"Received: data={data!r}"
            )
    try:
        json.dumps(given)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"Argument `data` must be JSON-serialisable ({err}). Received: data={data!r}"
        ) from None
    return {**given, **{k: v for k, v in derived.items() if k not in given}}


def _plain(value):
    """Lists and tuples compared as lists of ints, numbers as ints where they are."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return value


def describe_data(data):
    """The text that ``report.md`` puts after "Measured on": from a report's ``data`` dict.

    Example:
        >>> describe_data({"source": "cifar10", "split": "test", "samples": 10000,
        ...                "input_shape": [32, 32, 3], "classes": 10})
        'cifar10 (test split): 10,000 samples of shape 32x32x3, 10 classes'
    """
    head = data.get("description")
    if head is None and data.get("source") is not None:
        head = str(data["source"]) + (f" ({data['split']} split)" if data.get("split") else "")
    elif head is None and data.get("split"):
        head = f"the {data['split']} split"
    tail = []
    if data.get("samples") is not None:
        shape = data.get("input_shape")
        text = f"{data['samples']:,} samples"
        if shape:
            text += " of shape " + "x".join(str(d) for d in shape)
        if data.get("input_dtype"):
            text += f" ({data['input_dtype']})"
        tail.append(text)
    if data.get("classes") is not None:
        tail.append(f"{data['classes']} classes")
    if head and tail:
        return f"{head}: {', '.join(tail)}"
    return head or ", ".join(tail) or "unnamed data"


def _measure(v, info, x_test, y_test, batch_size, threads):
    sizes = measure.file_sizes(v.path)
    accuracy = measure.evaluate_tflite(v.path, x_test, y_test, batch_size=batch_size,
                                       threads=threads)
    counts = measure.count_params(v.model) if v.model is not None else {}
    return {
        "name": v.name,
        "group": v.group,
        "path": str(v.path),
        "quantize": v.quantize,
        "sparse": v.sparse,
        "accuracy": accuracy,
        "accuracy_delta_pp": None,
        "bytes": sizes["bytes"],
        "gzip_bytes": sizes["gzip_bytes"],
        "x_smaller_raw": None,
        "x_smaller_gzip": None,
        "params": counts.get("params"),
        "nonzero_params": counts.get("nonzero_params"),
        "latency_ms_median": None,
        "latency_ms_p10": None,
        "latency_ms_p90": None,
        "latency_kernels": None,
        "x_faster": None,
        "x_faster_range": None,
        "sparse_storage": info.sparse_storage,
        "densify_ops": info.densify_ops,
        "tflite_weights": info.weight_count,
        "tflite_weight_nonzero": info.weight_nonzero,
        "tflite_weight_sparsity": info.weight_sparsity,
        "layers": _layer_rows(v),
        "tensors": [
            {key: t.to_dict()[key] for key in (
                "name", "op", "shape", "dtype", "stored_sparse", "storage", "block_size",
                "sparsity", "n", "m", "n_m_violations")}
            for t in info.weights
        ],
        **({"extra": dict(v.extra)} if v.extra else {}),
    }


def _add_latency(row, timing):
    """Fill a row's latency fields from its entry of ``measure.latency_rounds``."""
    row.update(
        latency_ms_median=timing["median_ms"],
        latency_ms_p10=timing["p10_ms"],
        latency_ms_p90=timing["p90_ms"],
        latency_kernels=timing["kernels"],
        x_faster=timing["x_faster"],
        x_faster_range=timing["x_faster_range"],
    )


def _relative(rows, base):
    for row in rows:
        row["accuracy_delta_pp"] = (row["accuracy"] - base["accuracy"]) * 100.0
        row["x_smaller_raw"] = base["bytes"] / row["bytes"]
        row["x_smaller_gzip"] = base["gzip_bytes"] / row["gzip_bytes"]


def _layer_rows(v):
    source = v.sparsity
    if source is None and v.model is not None:
        from kprune.engines.verify import sparsity_report

        source = sparsity_report(v.model, v.plan)
    if source is None:
        return []
    rows = getattr(source, "rows", source)
    result = []
    for row in rows:
        data = row.to_dict() if hasattr(row, "to_dict") else dict(row)
        result.append(
            {
                "name": data["name"],
                "weight": data.get("weight", ""),
                "method": data.get("method") or "",
                "target": data.get("target"),
                "achieved": float(data["achieved"]),
            }
        )
    return result


# --------------------------------------------------------------------------- markdown


def _fmt_bytes(n):
    return f"{n:,}"


def _fmt(value, spec, empty="–"):
    return empty if value is None else format(value, spec)


def markdown_table(data):
    """The variant table of a report (or benchmark) dict, as GitHub markdown."""
    header = (
        "| variant | accuracy % | Δ pp | bytes | gzip bytes | x smaller raw | "
        "x smaller gzip | params | non-zero | .tflite sparsity | latency ms | x faster | "
        "kernels | sparse storage | DENSIFY |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|:---:|---:|"
    )
    lines = [header]
    for r in data["variants"]:
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{r['name']}`" + (" (baseline)" if r["name"] == data["baseline"] else ""),
                    f"{r['accuracy'] * 100:.2f}",
                    f"{r['accuracy_delta_pp']:+.2f}",
                    _fmt_bytes(r["bytes"]),
                    _fmt_bytes(r["gzip_bytes"]),
                    f"{r['x_smaller_raw']:.2f}",
                    f"{r['x_smaller_gzip']:.2f}",
                    _fmt(r["params"], ","),
                    _fmt(r["nonzero_params"], ","),
                    f"{r['tflite_weight_sparsity']:.3f}",
                    _fmt(r["latency_ms_median"], ".3f"),
                    _fmt(r["x_faster"], ".2f"),
                    r.get("latency_kernels") or "–",
                    "yes" if r["sparse_storage"] else "no",
                    str(r["densify_ops"]),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _layer_tables(data):
    out, seen = [], set()
    for r in data["variants"]:
        key = r["group"] or r["name"]
        if not r["layers"] or key in seen:
            continue
        seen.add(key)
        out.append(f"\n### {key}\n")
        out.append("| layer | method | target | achieved |\n|---|---|---:|---:|")
        for layer in r["layers"]:
            out.append(
                f"| {layer['name']} | {layer['method'] or 'dense'} | "
                f"{_fmt(layer['target'], '.3f')} | {layer['achieved']:.3f} |"
            )
    return out


def _storage_notes(data):
    """Pairs where sparse storage made a file bigger than the same model without it."""
    plain = {(r["group"], r["quantize"]): r for r in data["variants"] if not r["sparse"]}
    notes = []
    for r in data["variants"]:
        other = plain.get((r["group"], r["quantize"])) if r["sparse"] else None
        if other is None:
            continue
        for key, label in (("bytes", "raw"), ("gzip_bytes", "gzipped")):
            if r[key] > other[key]:
                notes.append(
                    f"- Sparse storage made `{r['name']}` *larger* {label} than "
                    f"`{other['name']}` ({r[key]:,} vs {other[key]:,} bytes)."
                )
    return notes


def _latency_text(data):
    lat = data["latency"]
    if not lat.get("repeats") or not lat.get("rounds", 1):
        skipped = "latency_repeats" if not lat.get("repeats") else "latency_rounds"
        return f"latency not measured (`{skipped}=0`)."
    if "rounds" not in lat:  # a report written before latency was timed in rounds
        return (f"latency at batch 1, {lat['threads']} thread(s), median of {lat['repeats']} "
                f"runs after {lat['warmup']} warm-up runs.")
    return (
        f"latency at batch 1, {lat['threads']} thread(s), in {lat['rounds']} interleaved "
        f"rounds over all variants, each timing every file ({lat['repeats']} runs after "
        f"{lat['warmup']} warm-up runs): `latency ms` is the median of a variant's round "
        "medians, `x faster` the median of its within-round speed-ups over the baseline."
    )


def markdown(data):
    """``report.md``: the variant table, per-layer tables, notes and plot links."""
    lines = [
        f"# {data['title']}",
        "",
        f"Measured on {describe_data(data.get('data') or {'samples': data['test_samples']})}.",
        "",
        f"Baseline: `{data['baseline']}` (dense float .tflite); all sizes and speed-ups are "
        f"relative to its own file. Accuracy in {data['runtime']}; {_latency_text(data)}",
        "",
        markdown_table(data),
        "",
        "## Notes",
        "",
        "- **Raw vs gzip.** A pruned weight is still stored as a 0 in a dense .tflite, so "
        "pruning alone leaves the raw file as big as the dense one; only gzip (which "
        "squeezes the runs of zeros) or sparse storage (`EXPERIMENTAL_SPARSITY`) shrink it. "
        "gzip alone flatters: the device stores and loads the raw file.",
        "- **Sparse storage costs indices.** TFLite stores a sparse tensor as CSR with a "
        "(usually uint16) index per kept value: for int8 weights that is 3 bytes per kept "
        "weight against 1 byte dense, so it only pays below ~1/3 density (or with 16-wide "
        "zero blocks); 2:4 + int8 + sparse storage is larger than 2:4 + int8.",
        "- **Speed.** Sparsity alone does not speed up a .tflite on x86: XNNPACK has no "
        "sparse fast path with AVX, and DENSIFY expands sparse weights when the "
        "interpreter is prepared. Expect x faster ~ 1.0 for pruned variants; speed comes "
        "from int8 kernels or structural pruning (smaller dense layers). Where the "
        "XNNPACK delegate refuses a model (int8 or dynamic-range weights behind DENSIFY) "
        "it runs on TFLite's builtin kernels (`kernels` column), usually slower.",
    ]
    lines += _storage_notes(data)
    layer_lines = _layer_tables(data)
    if layer_lines:
        lines += ["", "## Per-layer sparsity (Keras model)"] + layer_lines
    if data.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in data["plots"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots


def plot_size_accuracy(variants, *, baseline=None):
    """A matplotlib Figure: accuracy against file size, raw (filled) and gzipped (hollow).

    ``variants`` are report rows (dicts with ``name``, ``bytes``, ``gzip_bytes``,
    ``accuracy``). Sizes on a log axis in KiB; a dashed line marks the baseline's raw size.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    if len(variants) <= 10:
        colors = [f"C{i}" for i in range(len(variants))]
    else:  # one distinct colour per variant, up to 20
        from matplotlib import colormaps

        colors = [colormaps["tab20"](i % 20) for i in range(len(variants))]
    for i, (row, color) in enumerate(zip(variants, colors)):
        raw, gz = row["bytes"] / 1024, row["gzip_bytes"] / 1024
        acc = row["accuracy"] * 100
        ax.plot([gz, raw], [acc, acc], color=color, lw=1, alpha=0.6)
        ax.scatter([raw], [acc], color=color, marker="o", zorder=3, label=row["name"])
        ax.scatter([gz], [acc], facecolors="none", edgecolors=color, marker="o", zorder=3)
        ax.annotate(row["name"], (raw, acc), textcoords="offset points",
                    xytext=(4, 3 + 8 * (i % 3)), fontsize=7)
        if row["name"] == baseline:
            ax.axvline(raw, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    ax.set_xlabel("file size (KiB, log scale): filled = raw .tflite, hollow = gzipped")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Size against accuracy per variant")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def _bars_fallback(rows):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4, 0.6 * len(rows) + 2), 4), layout="constrained")
    ax = fig.add_subplot()
    names = [r["name"] for r in rows]
    ax.bar(names, [r["achieved"] for r in rows], color="C0", label="achieved")
    targets = [(i, r["target"]) for i, r in enumerate(rows) if r.get("target") is not None]
    if targets:
        ax.scatter(*zip(*targets), color="C3", marker="_", s=400, label="target", zorder=3)
    ax.set_ylim(0, 1)
    ax.set_ylabel("sparsity")
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend()
    return fig


def _save_png(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    write_atomic(path, buffer.getvalue())
    return path


def _plot_layers(rows, path):
    try:
        from kprune import viz
    except ImportError:
        viz = None
    if viz is not None and hasattr(viz, "plot_layer_sparsity"):
        fig = viz.plot_layer_sparsity(rows)
    else:
        fig = _bars_fallback(rows)
    return _save_png(fig, path)


def _plots(data, out_dir):
    paths = [_save_png(plot_size_accuracy(data["variants"], baseline=data["baseline"]),
                       out_dir / "size_vs_accuracy.png")]
    groups = {}
    for row in data["variants"]:
        key = row["group"] or row["name"]
        if row["layers"] and any(layer["method"] for layer in row["layers"]):
            groups.setdefault(key, row["layers"])
    for key, layers in groups.items():
        suffix = "" if len(groups) == 1 else "_" + "".join(
            c if c.isalnum() or c in "-_" else "-" for c in key
        )
        paths.append(_plot_layers(layers, out_dir / f"layer_sparsity{suffix}.png"))
    return tuple(paths)
