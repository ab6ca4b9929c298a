"""Progress as events: the library reports what it is doing to a callback and never prints.

The CLI renders events (a bar on a terminal, a line every few seconds when output is redirected); the web app
keeps the latest per job; a caller that passes nothing gets silence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """`done` of `total` `unit`s of `stage`; `info` carries live figures (loss, images/s, ETA in seconds);
    `message` is a line worth keeping (a trial's result, an input that failed)."""

    stage: str
    done: int
    total: int | None = None
    unit: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""


ProgressCallback = Callable[[Progress], None]


def emit(callback: ProgressCallback | None, stage: str, done: int, total: int | None = None, unit: str = "",
         message: str = "", **info: Any) -> None:
    if callback is not None:
        callback(Progress(stage, done, total, unit, info, message))
