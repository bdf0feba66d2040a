"""kprune benchmarks, run as ``python -m benchmarks.NAME``; each writes a results JSON."""
