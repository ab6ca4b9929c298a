"""`evaluate` a trained model on any prepared dataset, and `predict` P(fake) for new videos and images.

A model is a model file or the MLflow run that logged one. `predict` samples frames and crops faces exactly as
the model's training data was prepared (the settings travel in the model file), with memory bounded by one
batch of crops whatever the video's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._text import format_table
from .errors import UsageError, one_line
from .frames import is_media
from .manifest import MANIFEST, features_dir
from .metrics import Evaluation, evaluate_scores, video_scores
from .metrics import format_metric as fmt


def resolve_model(model: str | Path, *, tracking_uri: str | None = None) -> Path:
    """A model file path as given, or the model file logged by MLflow run `model` (id or unique prefix)."""
    path = Path(model)
    if path.is_file():
        return path
    if path.suffix == ".safetensors" or "/" in str(model):
        raise UsageError(f"{model}: model file not found")
    from .runs import get_run
    from .tracking import configure

    run = get_run(str(model), tracking_uri=tracking_uri)
    client = configure(tracking_uri).MlflowClient()
    try:
        folder = Path(client.download_artifacts(run.run_id, "model", str(_run_cache(run.run_id))))
    except Exception:  # noqa: BLE001
        raise UsageError(f"run {run.run_id} has no model artifact") from None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UsageError(f"run {run.run_id} has no model file")
    return files[0]


def _run_cache(run_id: str) -> Path:
    """Where a run's artifacts are downloaded to once (runs are immutable once finished)."""
    folder = Path.home() / ".cache" / "fakefinder" / "runs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------------------------------------ evaluate

@dataclass(frozen=True)
class EvaluateResult:
    overall: Evaluation
    by: dict[str, Evaluation] = field(default_factory=dict)
    model_path: Path | None = None

    def to_dict(self) -> dict:
        out = self.overall.to_dict()
        if self.by:
            out["by"] = {k: v.to_dict() for k, v in self.by.items()}
        return out

    def summary(self) -> str:
        def line(name: str, ev: Evaluation) -> str:
            f, v = ev.frame, ev.video
            return (f"{name:16} video: acc {fmt(v.accuracy)} AUC {fmt(v.auc)} AP {fmt(v.ap)} "
                    f"log loss {fmt(v.log_loss)} EER {fmt(v.eer)} (n={v.n}) | "
                    f"frame: AUC {fmt(f.auc)} log loss {fmt(f.log_loss)} (n={f.n})")

        lines = [line("all", self.overall)]
        lines += [line(str(k), ev) for k, ev in self.by.items()]
        (tn, fp), (fn, tp) = self.overall.confusion
        lines.append(f"video confusion at the model's threshold: real->real {tn}, real->fake {fp}, "
                     f"fake->real {fn}, fake->fake {tp}; videos without a face: {self.overall.no_face_videos}")
        return "\n".join(lines)


def face_scores(model, data, *, device: str = "cpu") -> np.ndarray:
    """P(fake) of every crop of a loaded dataset: through the feature cache for a frozen base, else live."""
    from .experiment import FeatureRows, head_scores
    from .features import FeatureCache

    header = model.header or {}
    if not header.get("includes_base"):
        table = FeatureCache(features_dir(data.root), model.backbone, model.pool,
                             precision=model.precision).features(list(data.crops), device=device)
        return head_scores(model.head, FeatureRows(table, np.arange(len(table)), device, budget=0))  # streamed
    return model.predict_files(data.crops)


def evaluate(model: str | Path, data: str | Path, *, split: str | None = None, by: str | None = None,
             tracking_uri: str | None = None, device: str = "cpu",
             base_weights: str | Path | None = None) -> EvaluateResult:
    """Metrics of `model` on prepared `data` (seen or unseen), optionally on one part of its run's split and
    broken down by a manifest column. Raises UsageError for an unknown column, part or model."""
    import pyarrow.parquet as pq

    from .experiment import load_data
    from .modelfile import load_model
    from .splits import load_split

    path = resolve_model(model, tracking_uri=tracking_uri)
    loaded = load_model(path, device=device, base_weights=base_weights)
    d = load_data(data)
    keep = np.ones(len(d.crops), dtype=bool)
    nf_ids = d.no_face[0]
    nf_keep = np.ones(len(nf_ids), dtype=bool)
    if split:
        if split not in ("train", "val", "test"):
            raise UsageError(f"--split must be train, val or test, not {split!r}")
        split_file = _run_split_file((loaded.header or {}).get("run_id"), tracking_uri)
        units = np.concatenate([d.crops, nf_ids])
        s = load_split(split_file, np.concatenate([d.video_ids, nf_ids]), np.concatenate([d.groups, d.no_face[1]]),
                       units)
        keep, nf_keep = s.parts[:len(d.crops)] == split, s.parts[len(d.crops):] == split
    scores = face_scores(loaded, d, device=device)
    rule = (loaded.header or {}).get("video_rule", "mean")

    def ev(mask: np.ndarray, nf: int) -> Evaluation:
        return evaluate_scores(d.video_ids[mask], d.labels[mask], scores[mask], threshold=loaded.threshold,
                               rule=rule, no_face_videos=nf)

    overall = ev(keep, int(nf_keep.sum()))
    groups: dict[str, Evaluation] = {}
    if by:
        columns = pq.read_schema(d.root / MANIFEST).names
        if by not in columns:
            raise UsageError(f"--by {by!r}: no such manifest column ({', '.join(columns)})")
        values = np.asarray([str(v) for v in pq.read_table(d.root / MANIFEST, columns=[by])[by].to_pylist()],
                            dtype=object)
        for value in sorted(set(values[keep])):
            groups[value or "(none)"] = ev(keep & (values == value), 0)
    return EvaluateResult(overall, groups, path)


def _run_split_file(run_id: str | None, tracking_uri: str | None) -> Path:
    if not run_id:
        raise UsageError("--split needs a model trained by fakefinder train (its run keeps the split)")
    from .tracking import configure

    client = configure(tracking_uri).MlflowClient()
    try:
        return Path(client.download_artifacts(run_id, "split.json", str(_run_cache(run_id))))
    except Exception:  # noqa: BLE001
        raise UsageError(f"run {run_id} has no split.json in {configure(tracking_uri).get_tracking_uri()}") from None


# ------------------------------------------------------------------------------------------------ predict

@dataclass(frozen=True)
class FacePrediction:
    box: tuple[float, float, float, float]  # x, y, w, h in video pixels
    p_fake: float


@dataclass(frozen=True)
class FramePrediction:
    t: float
    index: int
    faces: tuple[FacePrediction, ...]


@dataclass(frozen=True)
class Prediction:
    """One input's verdict; `p_fake` and `verdict` are None when no face was found or the input is unusable."""

    input: str
    p_fake: float | None
    verdict: str | None
    error: str | None
    frames: tuple[FramePrediction, ...] = ()

    @property
    def faces(self) -> int:
        return sum(len(f.faces) for f in self.frames)

    def to_dict(self) -> dict:
        return {"input": self.input, "p_fake": self.p_fake, "verdict": self.verdict, "error": self.error,
                "frames_used": len(self.frames), "faces": self.faces,
                "frames": [{"t": f.t, "index": f.index,
                            "faces": [{"box": list(x.box), "p_fake": x.p_fake} for x in f.faces]}
                           for f in self.frames]}


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders replaced by the videos and images inside them (recursively, sorted)."""
    out = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += sorted(p for p in item.rglob("*") if p.is_file() and is_media(p))
        else:
            out.append(item)
    return out


def predict_one(model, path: Path, settings, *, threshold: float, rule: str, batch_size: int = 32) -> Prediction:
    from .preparation import face_crops

    if not path.is_file():
        return Prediction(str(path), None, None, "file not found")
    frames: dict[int, tuple[float, list]] = {}
    pending: list = []

    def flush() -> None:
        scores = model.predict_faces([f.crop for f in pending])
        for face, p in zip(pending, scores):
            b = face.box
            frames[face.frame_index][1].append(FacePrediction((b.x, b.y, b.w, b.h), float(p)))
        pending.clear()

    try:
        def on_frame(frame) -> None:
            frames.setdefault(frame.index, (round(frame.timestamp, 6), []))

        for face in face_crops(path, settings, on_frame=on_frame):
            pending.append(face)
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
    except Exception as exc:  # noqa: BLE001 - one unusable input never stops the batch
        return Prediction(str(path), None, None, one_line(exc))
    result = tuple(FramePrediction(t, i, tuple(faces)) for i, (t, faces) in sorted(frames.items()))
    p = [x.p_fake for f in result for x in f.faces]
    if not p:
        return Prediction(str(path), None, None, None, result)
    _, _, score = video_scores(["v"] * len(p), [0] * len(p), p, rule=rule)
    verdict = "FAKE" if score[0] >= threshold else "REAL"
    return Prediction(str(path), float(score[0]), verdict, None, result)


def predict(model: str | Path, inputs: list[str | Path], *, threshold: float | None = None,
            tracking_uri: str | None = None, device: str = "cpu", progress: bool = True,
            base_weights: str | Path | None = None) -> list[Prediction]:
    """P(fake) and a verdict per input, faces and frames included. Bad inputs get an error, the rest go on."""
    import sys

    from tqdm import tqdm

    from .modelfile import load_model
    from .preparation import PrepareSettings

    loaded = load_model(resolve_model(model, tracking_uri=tracking_uri), device=device, base_weights=base_weights)
    header = loaded.header or {}
    known = {f for f in PrepareSettings.__dataclass_fields__}
    settings = PrepareSettings(**{k: v for k, v in (header.get("prepare") or {}).items() if k in known})
    t = loaded.threshold if threshold is None else threshold
    paths = expand_inputs(inputs)
    if not paths:
        raise UsageError("no inputs (give video files, images or folders holding them)")
    return [predict_one(loaded, p, settings, threshold=t, rule=header.get("video_rule", "mean"))
            for p in tqdm(paths, unit="input", desc="predict", disable=not progress, file=sys.stderr)]


def write_predictions_csv(predictions: list[Prediction], path: str | Path) -> Path:
    """One row per input; the per-frame detail is in the JSON."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input", "p_fake", "verdict", "frames_used", "faces", "error"])
        for r in predictions:
            w.writerow([r.input, "" if r.p_fake is None else r.p_fake, r.verdict or "", len(r.frames), r.faces,
                        r.error or ""])
    return Path(path)


def predictions_table(predictions: list[Prediction]) -> str:
    rows = [[p.input, fmt(p.p_fake), p.verdict or "-", str(len(p.frames)),
             str(p.faces), p.error or ("no face found" if p.p_fake is None else "")] for p in predictions]
    return format_table(["input", "P(fake)", "verdict", "frames", "faces", "note"], rows)
