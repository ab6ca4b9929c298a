"""Values and tables for people: one way to write a value (a metric, a table cell, a grid value, a progress
figure), and one look for every table a command prints."""

from __future__ import annotations

import math
import os
import re

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # C0 but \t \n, DEL, C1, bidi


def shown(value, decimals: int | None = None, *, significant: int = 4, quote_text: bool = False) -> str:
    """'-' where there is no value (None or NaN); a float with `decimals` fixed decimals when given, else with
    `significant` significant digits; text in quotes with `quote_text` (as a grid file spells it); else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{decimals}f}" if decimals is not None else f"{value:.{significant}g}"
    return repr(value) if quote_text and isinstance(value, str) else str(value)


def printable(text) -> str:
    """`text` as a terminal or a UTF-8 file can take it: a file name's bytes that are not UTF-8 (Python keeps them
    as surrogates) written as escapes, e.g. bad\\xff.jpg, and control characters other than tab and newline (a
    model card's escape sequences, which a terminal would obey) removed."""
    text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return _CONTROL.sub("", text)


def format_table(head: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns as wide as their widest cell, under a dashed rule; every cell `printable`."""
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
