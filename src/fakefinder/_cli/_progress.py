"""How the CLI shows progress events: a bar per stage on a terminal, a line every few seconds when output is
redirected (a log file, CI), and every event's message line in both cases. An inner loop that finishes many
times (the batches of each epoch) gets at most one finishing line every few seconds too."""

from __future__ import annotations

import sys
import time

from .._text import shown
from ..progress import Progress

LINE_EVERY_S = 10.0


def _figure(key: str, value) -> str:
    if key.startswith("eta") and isinstance(value, float):
        return f"{key}={shown(value, 0)}s"
    return f"{key}={shown(value, significant=3)}"


class Renderer:
    """A progress callback; `close()` ends its bars."""

    def __init__(self, *, quiet: bool = False, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bars: dict[str, object] = {}
        self.last_line: dict[str, float] = {}
        self.last_finished: dict[str, float] = {}

    def __call__(self, event: Progress) -> None:
        if event.message:
            self._write(event.message)
        if self.quiet or (event.total is None and not event.unit):  # a message alone, or a count of nothing
            return
        shown = {k: v for k, v in event.info.items() if k in ("loss", "images_per_s", "eta_s", "epoch", "faces",
                                                               "errors", "val_loss", "val_auc")}
        if self.tty:
            self._bar(event, shown)
            return
        now, never = time.monotonic(), float("-inf")
        finished = event.total is not None and event.done >= event.total  # a count without a total never ends
        last = (self.last_finished if finished else self.last_line).get(event.stage, never)
        if now - last >= LINE_EVERY_S:
            self.last_line[event.stage] = now
            if finished:
                self.last_finished[event.stage] = now
            figures = " ".join(_figure(k, v) for k, v in shown.items())
            of = "" if event.total is None else f"/{event.total}"
            print(f"{event.stage}: {event.done}{of} {event.unit} {figures}".rstrip(), file=self.stream, flush=True)

    def _bar(self, event: Progress, shown: dict) -> None:
        from tqdm import tqdm

        bar = self.bars.get(event.stage)
        if bar is None or bar.total != event.total or event.done < bar.n:
            if bar is not None:
                bar.close()
            bar = self.bars[event.stage] = tqdm(total=event.total, desc=event.stage, unit=event.unit or "it",
                                                file=self.stream, leave=False, dynamic_ncols=True)
        bar.update(event.done - bar.n)
        if shown:
            bar.set_postfix_str(" ".join(_figure(k, v) for k, v in shown.items()), refresh=False)
        if event.total is not None and event.done >= event.total:
            bar.close()
            del self.bars[event.stage]

    def _write(self, text: str) -> None:
        if self.tty and self.bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
