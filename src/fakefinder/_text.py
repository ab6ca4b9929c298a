"""Plain-text tables: one look for every table a command prints, and one way to write a value in a cell."""

from __future__ import annotations

import math


def cell(v) -> str:
    """'-' where there is no value (None or NaN), 4 significant digits for floats, else the value as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_table(head: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns as wide as their widest cell, under a dashed rule."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
