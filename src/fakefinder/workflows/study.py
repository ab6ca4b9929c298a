"""`study`: the reference study's research question as one command — does a detector trained on collection A
still work on collection B without retraining, and how much do training and tuning on B help?

Steps (each a tracked run): (1) train on A, evaluate on A's test part and on all of B; (2) train the same
configuration on B, evaluate on B's test part; (3) tune on B's train/val parts, evaluate the best on B's test
part; (4) evaluate (2) and (3) back on all of A. Plus the leak check: the same model on A with the reference's
per-frame split against the source split.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from pathlib import Path

from .. import _files
from .._files import sqlite_url
from .._text import shown
from ..config import PrepareSettings, TrainSettings
from ..data.manifest import MANIFEST
from ..data.preparation import prepare
from ..hardware import Compute
from ..metrics import Evaluation
from ..progress import ProgressCallback
from ..tracking.trackers import Recording, Tracker


@dataclass(frozen=True)
class StudyRow:
    step: str
    trained_on: str
    evaluated_on: str
    evaluation: Evaluation
    run_id: str


@dataclass(frozen=True)
class StudyResult:
    rows: tuple[StudyRow, ...]
    leak: tuple[StudyRow, StudyRow]  # (frame split, source split), both evaluated on their own test part
    report: Path

    HEAD = ("step", "trained on", "evaluated on", "accuracy", "AUC", "log loss", "videos")

    def cells(self) -> list[list[str]]:
        """The comparison table's rows (video-level metrics), for the markdown and the HTML report alike."""
        return [[r.step, r.trained_on, r.evaluated_on, *(shown(x, 3) for x in (v.accuracy, v.auc, v.log_loss)),
                 str(v.n)]
                for r in self.rows + self.leak for v in (r.evaluation.video,)]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.HEAD) + " |", "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        lines += ["| " + " | ".join(row) + " |" for row in self.cells()]
        frame, source = (r.evaluation.video for r in self.leak)
        lines.append("")
        lines.append(f"Leak check: the reference's per-frame split reports AUC {shown(frame.auc, 3)} and log loss "
                     f"{shown(frame.log_loss, 3)}; split by source video the same model gets AUC "
                     f"{shown(source.auc, 3)} and log loss {shown(source.log_loss, 3)}.")
        return "\n".join(lines)


def ensure_prepared(path: str | Path, out: Path, settings: PrepareSettings | None = None,
                    progress: ProgressCallback | None = None) -> Path:
    """A prepared dataset as is; a raw collection prepared into `out` (resumably) first."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    return prepare(path, out, settings=settings, progress=progress).out


def study(train_data: str | Path, test_data: str | Path, *, grid: str | Path | None = None,
          out: str | Path = "study", config: TrainSettings | None = None,
          tracking: Recording | Tracker | str | None = None, storage: str | None = None,
          settings: PrepareSettings | None = None, compute: Compute | None = None,
          progress: ProgressCallback | None = None) -> StudyResult:
    """Run the cross-dataset study; writes `out/study.md` and `out/report.html` and returns the table.

    `tracking` is a `Recording`, an MLflow URI or a Tracker (every step is a run there), or None (nothing
    recorded). `config` is every step's training settings, the tuning step's base too.
    """
    from ..inference.detector import LoadOptions
    from ..inference.evaluation import evaluate
    from ..tracking.report import _page, _table, run_section
    from ..tuning.search import tune
    from .training import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    a = ensure_prepared(train_data, out / "prepared-A", settings, progress)
    b = ensure_prepared(test_data, out / "prepared-B", settings, progress)
    name_a, name_b = f"A ({Path(train_data).name})", f"B ({Path(test_data).name})"
    config = config or TrainSettings()
    compute = compute or Compute()
    recording = Recording.of(tracking)
    load = LoadOptions(device=compute.device)

    def step(data: Path, settings: TrainSettings, name: str):
        return train(data, settings, tracking=dataclasses.replace(recording, name=name), compute=compute,
                     progress=progress)

    rows = []
    base = step(a, config, "study-1-train-A")
    rows.append(StudyRow("1 baseline", name_a, f"{name_a} test part", base.test, base.run_id))
    rows.append(StudyRow("1 cross-dataset", name_a, f"all of {name_b}",
                         evaluate(base.model_path, b, load=load).whole.evaluation, base.run_id))
    on_b = step(b, config, "study-2-train-B")
    rows.append(StudyRow("2 retrained", name_b, f"{name_b} test part", on_b.test, on_b.run_id))
    back = [("4 retrained, back", on_b.model_path, on_b.run_id)]
    if grid:
        tuned = tune(b, grid, base=config, study=f"study-{Path(test_data).name}",
                     storage=storage or sqlite_url(out / "optuna.db"), tracking=recording, compute=compute,
                     progress=progress)
        rows.append(StudyRow("3 tuned", name_b, f"{name_b} test part", tuned.test, tuned.test_run_id))
        back.append(("4 tuned, back", tuned.test_model_path, tuned.test_run_id))
    for label, model_path, run_id in back:
        rows.append(StudyRow(label, name_b, f"all of {name_a}", evaluate(model_path, a, load=load).whole.evaluation,
                             run_id))
    leaky = step(a, config.replace(split="frame"), "study-leak-frame-split")
    leak = (StudyRow("leak: frame split", name_a, f"{name_a} test part (leaky)", leaky.test, leaky.run_id),
            StudyRow("leak: source split", name_a, f"{name_a} test part", base.test, base.run_id))
    result = StudyResult(tuple(rows), leak, out / "report.html")
    uri = recording.resolve().uri  # where the report reads the baseline's run back
    _files.write_text(out / "study.md", result.markdown() + "\n")
    table = _table(list(StudyResult.HEAD), result.cells())
    body = (f"<p>Video-level metrics. Every model is selected on validation data only.</p>{table}"
            f"<p>{html.escape(result.markdown().splitlines()[-1])}</p><h2>Step 1: the baseline trained on A</h2>"
            + (run_section(base.run_id, tracking_uri=uri) if uri != "none" else ""))
    _files.write_text(result.report, _page("fakefinder cross-dataset study", body))
    return result
