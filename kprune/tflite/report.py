"""Compare exported ``.tflite`` variants against the dense float baseline: JSON, markdown, plots.

:func:`compare` measures every variant (accuracy in LiteRT, bytes raw and gzipped,
latency at batch 1, what the file stores) and writes into ``out_dir``:

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
      "latency": {"batch": 1, "repeats", "warmup", "threads"},
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
          "latency_ms_median", "latency_ms_p10", "latency_ms_p90",
          "latency_kernels":     "xnnpack", or "builtin" where XNNPACK refused the model,
          "x_faster":            baseline latency_ms_median / latency_ms_median,
          "sparse_storage":      the file stores tensors in TFLite's sparse format,
          "densify_ops":         number of DENSIFY ops in the file,
          "tflite_weights":      values in the file's weight tensors,
          "tflite_weight_nonzero", "tflite_weight_sparsity": read back from the file,
          "layers":  [{"name", "method", "target", "achieved"}]  (Keras side, per layer),
          "tensors": [{"name", "op", "shape", "dtype", "stored_sparse", "sparsity",
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
    ...     baseline="dense/float", x_test=x_test, y_test=y_test, out_dir="out/report")
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

from kprune.tflite import measure
from kprune.tflite.export import ExportResult, write_atomic

__all__ = [
    "SCHEMA_VERSION",
    "Report",
    "Variant",
    "compare",
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
        for row in self.variants:
            if row["name"] == name:
                return row
        raise KeyError(name)

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
            latency_warmup=3, threads=1, batch_size=256, plots=True,
            title="kprune comparison", extra=None):
    """Measure each variant against the dense float baseline and write the report.

    Args:
        variants: :class:`Variant` objects (or ``ExportResult`` / ``(name, path)``).
        baseline: the name of the variant that is the dense float ``.tflite``; sizes,
            accuracy deltas and speed-ups are relative to it. It must not store sparse
            tensors nor hold quantized weights.
        x_test, y_test: evaluation data (integer labels).
        out_dir: folder for ``report.json``, ``report.md`` and the PNG plots (created).
        latency_repeats, latency_warmup, threads: latency at batch 1 (0 repeats: skip).
        batch_size: batch for accuracy runs (where the model allows resizing).
        plots: write the PNG plots.
        title: heading of ``report.md``.
        extra: a JSON-serialisable dict stored under ``"extra"``.

    Returns:
        A :class:`Report`. ``print`` it for the markdown table.
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
    repeats = int(latency_repeats)
    rows = []
    for v in items:
        info = base_info if v is base else measure.tflite_tensors(v.path)
        rows.append(_measure(v, info, x_test, y_test, batch_size, repeats,
                             latency_warmup, threads))
    _relative(rows, rows[names.index(baseline)])
    data = {
        "schema_version": SCHEMA_VERSION,
        "title": title,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **environment(),
        "runtime": measure.runtime_name(),
        "baseline": baseline,
        "test_samples": int(len(y_test)),
        "latency": {"batch": 1, "repeats": repeats, "warmup": latency_warmup,
                    "threads": threads},
        "variants": rows,
    }
    if extra is not None:
        data["extra"] = extra
    plot_paths = _plots(data, out_dir) if plots else ()
    data["plots"] = [p.name for p in plot_paths]
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    write_atomic(json_path, json.dumps(data, indent=2) + "\n")
    write_atomic(md_path, markdown(data))
    return Report(data=data, json_path=json_path, markdown_path=md_path, plots=tuple(plot_paths))


def _measure(v, info, x_test, y_test, batch_size, repeats, warmup, threads):
    sizes = measure.file_sizes(v.path)
    accuracy = measure.evaluate_tflite(v.path, x_test, y_test, batch_size=batch_size,
                                       threads=threads)
    timing = (
        measure.latency(v.path, repeats=repeats, warmup=warmup, threads=threads)
        if repeats > 0
        else {}
    )
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
        "latency_ms_median": timing.get("median_ms"),
        "latency_ms_p10": timing.get("p10_ms"),
        "latency_ms_p90": timing.get("p90_ms"),
        "latency_kernels": timing.get("kernels"),
        "x_faster": None,
        "sparse_storage": info.sparse_storage,
        "densify_ops": info.densify_ops,
        "tflite_weights": info.weight_count,
        "tflite_weight_nonzero": info.weight_nonzero,
        "tflite_weight_sparsity": info.weight_sparsity,
        "layers": _layer_rows(v),
        "tensors": [
            {key: t.to_dict()[key] for key in (
                "name", "op", "shape", "dtype", "stored_sparse", "sparsity", "n", "m",
                "n_m_violations")}
            for t in info.weights
        ],
        **({"extra": dict(v.extra)} if v.extra else {}),
    }


def _relative(rows, base):
    for row in rows:
        row["accuracy_delta_pp"] = (row["accuracy"] - base["accuracy"]) * 100.0
        row["x_smaller_raw"] = base["bytes"] / row["bytes"]
        row["x_smaller_gzip"] = base["gzip_bytes"] / row["gzip_bytes"]
        if row["latency_ms_median"] and base["latency_ms_median"]:
            row["x_faster"] = base["latency_ms_median"] / row["latency_ms_median"]


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


def markdown(data):
    """``report.md``: the variant table, per-layer tables, notes and plot links."""
    lat = data["latency"]
    lines = [
        f"# {data['title']}",
        "",
        f"Baseline: `{data['baseline']}` (dense float .tflite); all sizes and speed-ups are "
        f"relative to its own file. Accuracy on {data['test_samples']:,} test samples in "
        f"{data['runtime']}; latency at batch 1, {lat['threads']} thread(s), median of "
        f"{lat['repeats']} runs after {lat['warmup']} warm-up runs.",
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
