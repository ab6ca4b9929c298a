"""`demo`: the main job end to end on built-in synthetic data, offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .preparation import PrepareResult, PrepareSettings, prepare
from .synthetic import SynthResult, synth


@dataclass(frozen=True)
class DemoResult:
    collection: SynthResult
    prepared: PrepareResult

    def summary(self) -> str:
        real = sum(v.label == "REAL" for v in self.collection.videos)
        return (f"synthetic collection: {len(self.collection.videos)} videos ({real} real, "
                f"{len(self.collection.videos) - real} fake) in {self.collection.out}\n{self.prepared.summary()}")


def demo(out: str | Path = "demo", *, videos: int = 12, seconds: float = 4.0, seed: int = 0,
         workers: int | None = None, progress: bool = True) -> DemoResult:
    """Make a synthetic collection under `out/collection` and prepare it into `out/prepared`."""
    out = Path(out)
    collection = synth(out / "collection", videos=videos, seconds=seconds, seed=seed)
    prepared = prepare(collection.out, out / "prepared", settings=PrepareSettings(), workers=workers,
                       progress=progress)
    return DemoResult(collection, prepared)
