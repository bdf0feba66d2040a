"""One check of a ``kprune.measure.latency_rounds`` result that the quick benchmarks share."""

import statistics

import pytest


def assert_speedups_from_rounds(latency):
    """Each file's ``median_ms``, ``x_faster`` and ``x_faster_range`` are the median of its
    round medians and the median, min and max of the within-round ratios baseline / file,
    recomputed from the round medians it records (one per round)."""
    baseline = latency["files"][latency["baseline"]]["round_medians_ms"]
    for name, timing in latency["files"].items():
        rounds = timing["round_medians_ms"]
        assert len(rounds) == latency["rounds"] and min(rounds) > 0, name
        ratios = [b / t for b, t in zip(baseline, rounds)]
        assert timing["median_ms"] == pytest.approx(statistics.median(rounds)), name
        expected = 1.0 if name == latency["baseline"] else statistics.median(ratios)
        assert timing["x_faster"] == pytest.approx(expected), name
        assert timing["x_faster_range"] == pytest.approx([min(ratios), max(ratios)]), name
