"""What every benchmark shares: a timed log, results written atomically, README tables.

Example:
    >>> from benchmarks._common import log, write_results
    >>> log("dense baseline trained")
    [   12.3s] dense baseline trained
"""

import json
import time
from pathlib import Path

from kprune.export import write_atomic
from kprune.report import environment

__all__ = ["environment", "elapsed", "log", "write_results", "replace_between_markers"]

_START = time.perf_counter()


def elapsed():
    """Seconds since the benchmark started."""
    return time.perf_counter() - _START


def log(message):
    """Print ``message`` with the seconds since the benchmark started."""
    print(f"[{elapsed():7.1f}s] {message}", flush=True)


def write_results(path, results):
    """Write the results dict as JSON, atomically, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(results, indent=2) + "\n")
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
