"""What every benchmark shares: a timed log, results written atomically, README tables.

Example:
    >>> from benchmarks._common import log, write_results
    >>> log("dense baseline trained")
    [   12.3s] dense baseline trained
"""

import json
import sys
import time
from pathlib import Path

from kprune.tflite.export import write_atomic
from kprune.tflite.report import environment

__all__ = ["environment", "elapsed", "log", "write_results", "replace_between_markers",
           "add_standard_options", "output_paths", "portable", "REPO", "DATA_DIR", "README"]

_START = time.perf_counter()

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO / ".." / "shared" / "data" / "mnist").resolve()  # the official MNIST files
README = REPO / "benchmarks" / "README.md"  # where full runs write their tables


def elapsed():
    """Seconds since the benchmark started."""
    return time.perf_counter() - _START


def log(message):
    """Print ``message`` with the seconds since the benchmark started."""
    print(f"[{elapsed():7.1f}s] {message}", flush=True)


def speedup(timing):
    """A latency row's speed-up as the tables print it: median and within-round range.

    Example:
        >>> speedup({"x_faster": 1.5, "x_faster_range": [1.23, 1.72]})
        '1.50 [1.23, 1.72]'
    """
    low, high = timing["x_faster_range"]
    return f"{timing['x_faster']:.2f} [{low:.2f}, {high:.2f}]"


def portable(value):
    """``value`` with every path string under the repository (or next to it) made relative.

    ``<repo>/runs/x`` becomes ``runs/x`` and ``<repo>/../shared/data`` becomes
    ``../shared/data``, so that a results JSON names no folder of the machine it ran on.
    """
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item) for item in value]
    if isinstance(value, str):
        for root, prefix in ((REPO, ""), (REPO.parent, "../")):
            if value.startswith(f"{root}/"):
                return prefix + value[len(str(root)) + 1:]
    return value


def write_results(path, results):
    """Write the results dict as JSON (paths made portable), atomically, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(portable(results), indent=2) + "\n")
    return path


def replace_between_markers(path, begin, end, body):
    """Put ``body`` between the ``begin``/``end`` markers of ``path`` (appended if absent)."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    write_atomic(path, text)


def publish(results, out, readme, *, summary, markers):
    """Write the results JSON to ``out``, the ``summary`` table into ``readme`` between
    ``markers`` (when ``readme`` is not None), and print both; returns 0 for ``main``."""
    write_results(out, results)
    print(f"results: {out}")
    if readme is not None:
        replace_between_markers(readme, *markers, summary)
        print(f"table written into {readme}")
    print(summary)
    return 0


def litert_measurements(variants, *, x_test, y_test, work, title, rounds, repeats,
                        latency_baseline="dense/float", plots=False):
    """Accuracy and size of each exported ``report.Variant`` in LiteRT (against
    ``dense/float``), then its latency in ``rounds`` interleaved rounds of ``repeats`` runs
    per file; returns ``(report, latency)``. ``plots``: the report's pictures in ``work``.

    Example:
        >>> measured, latency = litert_measurements(variants, x_test=x, y_test=y, work=work,
        ...                                         title="t", rounds=7, repeats=100)
    """
    from kprune.tflite import measure, report

    log(f"accuracy and size of {len(variants)} .tflite files in LiteRT")
    measured = report.compare(variants, baseline="dense/float", x_test=x_test, y_test=y_test,
                              out_dir=work, latency_repeats=0, plots=plots, title=title)
    log(f"latency: {rounds} interleaved rounds of {repeats} runs per file")
    latency = measure.latency_rounds({v.name: v.path for v in variants},
                                     baseline=latency_baseline, rounds=rounds, repeats=repeats)
    return measured, latency


def add_standard_options(parser, *, quick_help, default_out):
    """The options every benchmark takes: --quick, --out, --data, --seed, --readme, --no-readme."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, help=f"results JSON (default: {default_out})")
    parser.add_argument("--data", type=Path, default=DATA_DIR,
                        help="folder of the four MNIST IDX files (default: ../shared/data/mnist)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--readme", type=Path,
                        help="write the tables into this README (default: benchmarks/README.md "
                             "in full mode, none in quick mode)")
    parser.add_argument("--no-readme", action="store_true", help="never touch a README")
    return parser


def output_paths(args, *, name, default_out, needs_data=True):
    """``(results JSON, README or None)`` for parsed standard options; None if no MNIST.

    Quick runs write ``runs/<name>_quick.json`` and leave the README alone unless told.
    A missing ``--data`` folder is reported on stderr (unless ``needs_data`` is False: a
    benchmark on random data).
    """
    if needs_data and not args.data.is_dir():
        print(f"error: MNIST not found at {args.data}; the benchmark needs the four IDX "
              "files there (pass --data).", file=sys.stderr)
        return None
    out = args.out or (REPO / "runs" / f"{name}_quick.json" if args.quick else default_out)
    readme = None if args.no_readme else (args.readme or (None if args.quick else README))
    return out, readme
