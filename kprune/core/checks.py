"""Argument checks shared across kprune, with errors in the Keras manner.

Each raises with what was wrong and what was received, e.g.
"Argument `epochs` must be an integer >= 1. Received: epochs=0".

Example:
    >>> check_int(3, "epochs")
    3
"""

import difflib
import math
from dataclasses import fields

__all__ = ["check_sparsity", "check_keys", "check_int", "check_number", "check_choice",
           "did_you_mean"]


def did_you_mean(name, names):
    """`` Did you mean 'a' or 'b'?`` for the names close to ``name``, else ``""``.

    Example:
        >>> did_you_mean("haed", ["conv1", "head"])
        " Did you mean 'head'?"
    """
    close = difflib.get_close_matches(str(name), list(names), n=3, cutoff=0.4)
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


def by_name(items, name, *, what, within, name_of=lambda item: item.name):
    """The item of ``items`` called ``name``; a ``KeyError`` naming close names otherwise.

    Example:
        >>> by_name([{"name": "float"}], "float", what="variant", within="the comparison",
        ...         name_of=lambda row: row["name"])
        {'name': 'float'}
    """
    names = []
    for item in items:
        if name_of(item) == name:
            return item
        names.append(name_of(item))
    raise KeyError(f"No {what} {name!r} in {within}.{did_you_mean(name, names)} Known: {names}")


def check_sparsity(value, *, argument="sparsity"):
    """Raise unless ``value`` is a fraction in [0, 1); return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"Argument `{argument}` must be a number in [0, 1). "
            f"Received: {argument}={value!r}"
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"Argument `{argument}` must be a fraction in [0, 1) (0.8 means 80% of "
            f"weights set to zero). Received: {argument}={value!r}"
        )
    return float(value)


def check_int(value, argument, *, minimum=1):
    """Raise unless ``value`` is an integer (not a bool) >= ``minimum``; return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"Argument `{argument}` must be {kind}. Received: {argument}={value!r}")
    return value


def check_number(value, argument, *, minimum=0):
    """Raise unless ``value`` is a finite real number (not a bool) >= ``minimum``; return it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            minimum <= value < math.inf):  # NaN fails the comparison too
        kind = "a non-negative number" if minimum == 0 else f"a number >= {minimum}"
        raise ValueError(f"Argument `{argument}` must be {kind}. Received: {argument}={value!r}")
    return value


def check_choice(value, choices, argument):
    """Raise unless ``value`` is one of ``choices`` (naming the close ones); return it."""
    if value not in choices:
        close = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ValueError(
            f"Argument `{argument}` must be one of {tuple(choices)}. "
            f"Received: {argument}={value!r}{close}"
        )
    return value


def check_keys(data, cls, *, what):
    """Raise if ``data`` (a dict) has keys that are not fields of the dataclass ``cls``."""
    if not isinstance(data, dict):
        raise TypeError(f"A {what} must be a mapping. Received: {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"Unknown key {unknown[0]!r} in {what}. Known keys: {sorted(known)}. "
            f"Received: {data!r}"
        )
