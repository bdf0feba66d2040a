"""Plain-text tables: the one format every printed plan, report and scan uses.

Example:
    >>> print(table(("layer", "method"), [("conv1", "unstructured"), ("fc1", "2:4")]))
    layer  method
    -----  ------------
    conv1  unstructured
    fc1    2:4
"""

__all__ = ["table"]


def table(header, lines):
    """Left-aligned columns, a rule under the header, trailing spaces removed."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(s.rstrip() for s in out)
