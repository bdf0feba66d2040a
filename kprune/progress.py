"""Progress of long work: a bar on a terminal, plain lines in logs, nothing when quiet.

:func:`track` wraps a loop. Where the stream (stderr by default) is a terminal it draws a
tqdm bar; elsewhere (CI logs, pipes, notebooks) it writes plain lines, never carriage
returns: one line per item for loops of at most 50 items, else a line at the start, at
every quarter and at the end (only the end for fewer than 4 steps). A loop inside another tracked loop draws a second bar on a
terminal and writes no lines elsewhere, so that a log stays short.

Quiet is process-wide: :func:`set_quiet`, the :func:`quiet` context manager, or the
environment variable ``KPRUNE_QUIET=1``; ``set_quiet`` wins over the variable.

Example:
    >>> from kprune import progress
    >>> for name in progress.track(["dense", "pruned/int8"], "measure accuracy",
    ...                            unit="variant", label=str):
    ...     ...
    measure accuracy: 1/2 (dense)
    measure accuracy: 2/2 (pruned/int8)
    measure accuracy: done, 2/2 in 0.4 s
    >>> with progress.quiet():
    ...     report.compare(...)        # no progress shown
    >>> progress.set_quiet(True)       # what `kprune --quiet` does
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

__all__ = ["ENV_VAR", "PER_ITEM_MAX", "is_quiet", "quiet", "set_quiet", "track"]

#: The environment variable that makes progress quiet when set to 1 (or true, yes, on).
ENV_VAR = "KPRUNE_QUIET"

#: Loops of at most this many items get one plain line per item (when not a terminal).
PER_ITEM_MAX = 50

_OFF = ("", "0", "false", "no", "off")
_STATE = {"quiet": None}  # None: follow the environment variable
_LOCAL = threading.local()  # depth of nested tracked loops, per thread


def set_quiet(value=True):
    """Show no progress anywhere in the process (``True``), or show it again (``False``).

    ``None`` goes back to the environment variable ``KPRUNE_QUIET``.

    Example:
        >>> progress.set_quiet(True)
    """
    if value is not None and not isinstance(value, bool):
        raise TypeError(
            f"Argument `value` must be True, False or None. Received: value={value!r}"
        )
    _STATE["quiet"] = value


def is_quiet():
    """Whether progress is off: :func:`set_quiet`, else ``KPRUNE_QUIET`` (1, true, yes, on)."""
    if _STATE["quiet"] is not None:
        return _STATE["quiet"]
    return os.environ.get(ENV_VAR, "").strip().lower() not in _OFF


@contextlib.contextmanager
def quiet(value=True):
    """Within the block, progress is off (or on, with ``value=False``); restored after.

    Example:
        >>> with progress.quiet():
        ...     export.export_variants(model, "out", ["float", "int8"], representative_data=x)
    """
    if not isinstance(value, bool):
        raise TypeError(f"Argument `value` must be True or False. Received: value={value!r}")
    before = _STATE["quiet"]
    _STATE["quiet"] = value
    try:
        yield
    finally:
        _STATE["quiet"] = before


def _is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _length(iterable, total):
    if total is not None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(
                f"Argument `total` must be a non-negative integer or None. Received: total={total!r}"
            )
        return total
    try:
        return len(iterable)
    except TypeError:
        return None


def track(iterable, desc, total=None, *, unit="item", label=None, per_item=None, file=None):
    """Yield the items of ``iterable`` and show how far the loop has got.

    Args:
        iterable: the items.
        desc: what the loop does, e.g. ``"measure accuracy"``.
        total: the number of items when ``len(iterable)`` does not tell.
        unit: what an item is (``"variant"``, ``"batch"``), for the bar and the lines.
        label: a callable giving a short text per item (e.g. its name), shown with it.
        per_item: plain lines for every item (``True``), only at the start, each quarter
            and the end (``False``; the end only for fewer than 4 items), or ``None``:
            per item for loops of at most :data:`PER_ITEM_MAX` items. Loops of unknown
            length get a start and an end line.
        file: the stream (default: ``sys.stderr`` at the time of the call).

    Example:
        >>> for batch in progress.track(batches, "predict", unit="batch", per_item=False):
        ...     run(batch)
    """
    if not isinstance(desc, str):
        raise TypeError(f"Argument `desc` must be a string. Received: desc={desc!r}")
    if not isinstance(unit, str) or not unit:
        raise TypeError(f"Argument `unit` must be a non-empty string. Received: unit={unit!r}")
    if label is not None and not callable(label):
        raise TypeError(f"Argument `label` must be a callable or None. Received: label={label!r}")
    if not (per_item is None or isinstance(per_item, bool)):
        raise TypeError(
            f"Argument `per_item` must be True, False or None. Received: per_item={per_item!r}"
        )
    count = _length(iterable, total)
    return _track(iterable, desc, count, unit, label, per_item, file)


def _track(iterable, desc, total, unit, label, per_item, file):
    depth = getattr(_LOCAL, "depth", 0)
    stream = sys.stderr if file is None else file
    if is_quiet() or total == 0:
        yield from iterable
        return
    _LOCAL.depth = depth + 1
    try:
        if _is_terminal(stream):
            yield from _bar(iterable, desc, total, unit, label, depth, stream)
        elif depth == 0:
            yield from _lines(iterable, desc, total, unit, label, per_item, stream)
        else:
            yield from iterable
    finally:
        _LOCAL.depth = depth


def _bar(iterable, desc, total, unit, label, depth, stream):
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=stream, leave=depth == 0,
              dynamic_ncols=True) as bar:
        for item in iterable:
            if label is not None:
                bar.set_postfix_str(str(label(item)))
            yield item
            bar.update(1)


def _plural(unit):
    if unit.endswith("s"):
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "x")) else "s")


def _lines(iterable, desc, total, unit, label, per_item, stream):
    def say(text):
        print(f"{desc}: {text}", file=stream, flush=True)

    units = _plural(unit)
    if per_item is None:
        per_item = total is not None and total <= PER_ITEM_MAX
    started = time.perf_counter()
    short = total is not None and total < 4  # fewer steps than quarters: the end line only
    if not per_item and not short:
        say(f"0/{total} {units}" if total is not None else f"started ({units})")
    marks = {(total * q + 3) // 4 for q in (1, 2, 3)} if total and not short else set()
    done = 0
    for item in iterable:
        if per_item:
            text = f"{done + 1}/{total}" if total is not None else f"{done + 1}"
            say(text + (f" ({label(item)})" if label is not None else ""))
        yield item
        done += 1
        if not per_item and done in marks and done < total:
            say(f"{done}/{total} {units} ({100 * done // total}%)")
    seconds = time.perf_counter() - started
    shown = f"{done}/{total}" if total is not None else f"{done}"
    say(f"done, {shown} {units} in {seconds:.1f} s")
