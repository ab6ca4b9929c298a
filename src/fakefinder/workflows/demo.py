"""`demo`: the main job end to end on built-in synthetic data, offline, in minutes.

Two synthetic collections that differ in manipulation style — full-face swaps (A) and mouth-only edits (B) —
go through the whole cross-dataset study with EfficientNet-Lite0, then `predict` gives verdicts on a few of
B's videos. Everything lands under one folder, tracking store and tuning storage included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._files import sqlite_url
from ..config import PrepareSettings
from ..data.synthetic import SynthResult, SynthSettings, synth
from ..progress import ProgressCallback

if TYPE_CHECKING:
    from ..inference.detector import VideoResult

DEMO_GRID = """flags:
  n_neurons: [64, 256]
  lr: [1e-3, 1e-2]
fixed:
  epochs: 20
  patience: 3
"""


@dataclass(frozen=True)
class DemoResult:
    collections: tuple[SynthResult, SynthResult]
    study: object  # study.StudyResult
    predictions: list[VideoResult]  # what `predict` gave for some of B's videos
    tracking_uri: str

    def summary(self) -> str:
        from ..inference.evaluation import predictions_table

        a, b = self.collections
        return "\n".join([
            f"collections: A = {len(a.videos)} videos with full-face swaps ({a.out}), "
            f"B = {len(b.videos)} videos with mouth-only edits ({b.out})", "",
            self.study.markdown(), "",
            "verdicts of the model trained on A for some of B's videos (B's fakes only touch the mouth):",
            predictions_table(self.predictions), "",
            f"report: {self.study.report}",
            f"runs:   fakefinder runs --tracking-uri {self.tracking_uri}   (or: mlflow ui --backend-store-uri "
            f"{self.tracking_uri})"])


def demo(out: str | Path = "demo", *, videos: int = 30, seconds: float = 2.0, seed: int = 0,
         grid: str | None = DEMO_GRID, progress: ProgressCallback | None = None) -> DemoResult:
    """Synthesise A and B under `out`, run the study on them and predict a few of B's videos."""
    from ..inference.detector import LoadOptions
    from ..inference.evaluation import predict
    from .study import study

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shared = dict(videos=videos, seconds=seconds, sizes=((640, 360), (854, 480)))
    a = synth(out / "full-face-swaps", SynthSettings(seed=seed, methods=("swap",), **shared))
    b = synth(out / "mouth-edits", SynthSettings(seed=seed + 1, methods=("mouth",), **shared))
    grid_path = None
    if grid:
        grid_path = out / "grid.yml"
        grid_path.write_text(grid)
    tracking = sqlite_url(out / "mlflow.db")
    result = study(a.out, b.out, grid=grid_path, out=out / "study", tracking=tracking,
                   storage=sqlite_url(out / "optuna.db"), settings=PrepareSettings(fps=2),
                   progress=progress)
    picks = [v for v in b.videos if v.label == "REAL"][:2] + [v for v in b.videos if v.label == "FAKE"][:2]
    baseline = next(r for r in result.rows if r.step == "1 baseline")
    predictions = predict(baseline.run_id, [b.out / f"{v.name}.mp4" for v in picks],
                          load=LoadOptions(tracking_uri=tracking))
    return DemoResult((a, b), result, predictions, tracking)
