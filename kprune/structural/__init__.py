"""Structural pruning: physically remove neurons and filters, giving a smaller dense model.

Example:
    >>> from kprune import structural
    >>> keep = structural.select_units(model, {"conv2": 0.5, "fc1": 0.5})
    >>> smaller = structural.remove_units(model, keep)
"""

from kprune.structural.units import (
    nonzero_units,
    remove_units,
    select_units,
    summary,
    unit_scores,
)

__all__ = ["unit_scores", "select_units", "nonzero_units", "remove_units", "summary"]
