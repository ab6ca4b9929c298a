"""`evaluate` a model on any prepared dataset, and `predict` P(fake) for new videos and images, both through
the detector API (`detector`).

A model is a model file, the MLflow run that logged one, or a published checkpoint. `evaluate` reports the
calibrated probabilities at the model's threshold and video rule, and log loss and calibration error before
and after calibration, at frame and video level, the video AUC's 95% interval over the videos' sources, and the
cost of its likelihood ratios (Cllr, through the card's strength-of-evidence map, and Cllr_min) over the videos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._text import format_table, printable, shown
from ..config import PARTS
from ..data.frames import is_media
from ..errors import OptionError, UsageError
from ..metrics import AucInterval, Evaluation, evaluate_videos, sigmoid
from ..models.scoring import DifferentiableModel
from ..progress import ProgressCallback, emit
from .detector import Detector, LoadOptions, VideoResult
from .framing import FRAMING

if TYPE_CHECKING:
    from ..data.dataset import PreparedDataset


@dataclass(frozen=True)
class Cost:
    """What a model's likelihood ratios cost on some videos, in bits (0 perfect, 1 no better than saying nothing,
    above 1 misleading): `cllr` through the card's strength map (None without one), `cllr_min` after the best
    monotone recalibration of the video scores; both None without real and fake videos."""

    cllr: float | None = None
    cllr_min: float | None = None

    def to_dict(self) -> dict:
        return {"cllr": self.cllr, "cllr_min": self.cllr_min}

    @classmethod
    def of(cls, strength_map, vy: np.ndarray, vp: np.ndarray) -> Cost:
        """The cost of videos of labels `vy` and scores `vp`."""
        from ..models.strength import cllr, cllr_min

        if len(np.unique(vy)) < 2:
            return cls()
        return cls(None if strength_map is None else cllr(strength_map.likelihood_ratios(vp), vy), cllr_min(vp, vy))


@dataclass(frozen=True)
class Figures:
    """What a model's calibrated scores give on some videos: the metrics at its threshold, what its likelihood
    ratios cost, and the video AUC's 95% interval over the videos' sources."""

    evaluation: Evaluation
    cost: Cost = field(default_factory=Cost)
    interval: AucInterval = field(default_factory=AucInterval)

    def to_dict(self) -> dict:
        out = {**self.evaluation.to_dict(), **self.cost.to_dict()}
        out["video"].update(self.interval.to_dict())
        return out

    def line(self, name: str) -> str:
        f, v, cost, interval = self.evaluation.frame, self.evaluation.video, self.cost, self.interval
        return (f"{name:16} video: acc {shown(v.accuracy, 3)} AUC {shown(v.auc, 3)} {interval.shown()} "
                f"AP {shown(v.ap, 3)} log loss {shown(v.log_loss, 3)} ECE {shown(v.ece, 3)} EER {shown(v.eer, 3)} "
                f"Cllr {shown(cost.cllr, 3)} Cllr_min {shown(cost.cllr_min, 3)} (n={v.n}, sources "
                f"{interval.sources}) | frame: AUC {shown(f.auc, 3)} log loss {shown(f.log_loss, 3)} (n={f.n})")


@dataclass(frozen=True)
class EvaluateResult:
    whole: Figures  # every video evaluated: calibrated P(fake), the model's threshold
    uncalibrated: Evaluation  # sigmoid of the raw logits, same threshold
    by: dict[str, Figures] = field(default_factory=dict)  # each of `by`'s groups
    model_path: Path | None = None
    verdict: str = ""  # what the threshold means

    def to_dict(self) -> dict:
        out = self.whole.to_dict()
        out["uncalibrated"] = self.uncalibrated.to_dict()
        out["threshold"] = self.verdict
        if self.by:
            out["by"] = {k: v.to_dict() for k, v in self.by.items()}
        return out

    def summary(self) -> str:
        lines = [self.whole.line("all")] + [v.line(str(k)) for k, v in self.by.items()]
        u, c = self.uncalibrated, self.whole.evaluation
        lines.append(f"calibration: log loss {shown(u.frame.log_loss, 3)} -> {shown(c.frame.log_loss, 3)} (frame), "
                     f"{shown(u.video.log_loss, 3)} -> {shown(c.video.log_loss, 3)} (video); "
                     f"ECE {shown(u.frame.ece, 3)} -> {shown(c.frame.ece, 3)} (frame), "
                     f"{shown(u.video.ece, 3)} -> {shown(c.video.ece, 3)} (video)")
        (tn, fp), (fn, tp) = c.confusion
        lines.append(f"verdict: {self.verdict}")
        lines.append(f"video confusion at that threshold: real->real {tn}, real->fake {fp}, fake->real {fn}, "
                     f"fake->fake {tp}; videos without a face: {c.no_face_videos}")
        return "\n".join(lines)


def dataset_logits(detector: Detector, dataset, *, rows: np.ndarray | None = None,
                   progress: ProgressCallback | None = None) -> np.ndarray:
    """Logits of the crops of a prepared dataset (those of `rows` where given, in their order): through the
    feature cache for a referenced frozen base (extracted once, reused by every later evaluation), else through
    the stored base (or the ONNX graph)."""
    from ..data.manifest import features_dir
    from ..models.features import FeatureCache, FeatureRows, head_logits

    model = detector.model
    files = dataset.crop_files if rows is None else dataset.crop_files[rows]
    if isinstance(model, DifferentiableModel) and not model.card.base.included:
        device = str(model.device)
        table = FeatureCache(features_dir(dataset.root), model.backbone, model.card.head.pool,
                             precision=model.card.precision).features(list(files), device=device, progress=progress)
        return head_logits(model.head, FeatureRows(table, np.arange(len(table)), device, budget=0))  # streamed
    return model.file_logits(files)


def _as_detector(model: str | Path | Detector, load: LoadOptions | None) -> Detector:
    """A detector given as one, or loaded once from a model file, run id or checkpoint with `load`'s options."""
    return model if isinstance(model, Detector) else (load or LoadOptions()).load(model)


def evaluate(model: str | Path | Detector, data: str | Path | PreparedDataset, *, split: str | None = None,
             by: str | None = None, load: LoadOptions | None = None, progress: ProgressCallback | None = None
             ) -> EvaluateResult:
    """Metrics of `model` on prepared `data` (seen or unseen), optionally on one part of its run's split and
    broken down by a manifest column (by `method`: each method's fakes with all the reals, so that each has an
    AUC). `data` is a prepared folder or a loaded `PreparedDataset`; `load` says how to load `model` (and where its
    run's split is tracked). Raises UsageError for an unknown column, part or model."""
    import pyarrow.parquet as pq

    from ..data.dataset import PreparedDataset, load_dataset
    from ..data.manifest import MANIFEST
    from ..data.splits import load_split

    detector = _as_detector(model, load)
    d = data if isinstance(data, PreparedDataset) else load_dataset(data, need_both_classes=False)
    keep = np.ones(len(d), dtype=bool)
    nf_keep = np.ones(len(d.no_face), dtype=bool)
    if split:
        if split not in PARTS:
            raise OptionError("split", f"must be one of {', '.join(PARTS)}, not {split!r}")
        from ..tracking.runs import run_artifact

        run_id = detector.card.run_id
        if not run_id:
            raise OptionError("split", "needs a model trained by fakefinder train (its run keeps the split)")
        split_file = run_artifact(run_id, "split.json", tracking_uri=load.tracking_uri if load else None)
        if split_file is None:
            raise UsageError(f"run {run_id} has no split.json in this tracking store")
        s = load_split(split_file, d)
        keep, nf_keep = s.parts[:len(d)] == split, s.parts[len(d):] == split
    logits = dataset_logits(detector, d, progress=progress)
    calibrated = detector.card.calibration.apply(logits)
    raw = sigmoid(logits)
    strength = detector.card.strength

    def scored(mask: np.ndarray, p: np.ndarray, nf: int) -> tuple[Evaluation, list, np.ndarray, np.ndarray]:
        ids, vy, vp = d.videos(mask, p[mask], detector.video_rule)
        ev = evaluate_videos(d.labels[mask], p[mask], vy, vp, threshold=detector.threshold, no_face_videos=nf)
        return ev, ids, vy, vp

    def figures(mask: np.ndarray, nf: int = 0) -> Figures:
        ev, ids, vy, vp = scored(mask, calibrated, nf)
        return Figures(ev, Cost.of(strength.map if strength else None, vy, vp),
                       AucInterval.of(vy, vp, d.sources(ids), seed=detector.card.seed))

    masks: dict[str, np.ndarray] = {}
    if by:
        columns = pq.read_schema(d.root / MANIFEST).names
        if by not in columns:
            raise OptionError("by", f"must be a manifest column ({', '.join(columns)}), not {by!r}")
        values = np.asarray([str(v or "") for v in pq.read_table(d.root / MANIFEST, columns=[by])[by].to_pylist()],
                            dtype=object)
        if by == "method":  # as the field reports it: each method's fakes against all the reals
            reals = keep & (d.labels == 0)
            for value in sorted(set(values[keep & (d.labels == 1)])):
                masks[value or "(none)"] = reals | (keep & (d.labels == 1) & (values == value))
        else:
            for value in sorted(set(values[keep])):
                masks[value or "(none)"] = keep & (values == value)
    faceless = int(nf_keep.sum())
    return EvaluateResult(figures(keep, faceless), scored(keep, raw, faceless)[0],
                          {name: figures(mask) for name, mask in masks.items()}, None, detector.verdict.meaning())


FILL_TOLERANCE = 0.1  # faces filling their crops within 10% of the model's fill are framed alike


def framing_difference(trained, data, trained_fill: float | None = None, data_fill: float | None = None) -> str:
    """How `data`'s crops are framed unlike the model's training crops (PrepareSettings or None each; the faces'
    median fill of their crops, data.landmarks.face_fill), in words; "" when alike. A detector shown faces framed
    otherwise (tighter, looser, another size) may score below chance for that reason alone: where the fills
    differ, the margin that would frame the data as the model's crops is named."""
    if data is None:
        return "not made by prepare: framing unknown"
    if trained is None:
        return "the model's framing is unknown"
    measured = bool(trained_fill and data_fill)
    alike = measured and abs(data_fill / trained_fill - 1) <= FILL_TOLERANCE
    said = [f"{name} {shown(getattr(data, name))} (model: {shown(getattr(trained, name))})"
            for name in FRAMING if getattr(data, name) != getattr(trained, name)
            and not (alike and name in ("detector", "margin"))]  # faces that fill their crops alike are cut alike
    if measured and not alike:
        from ..data.landmarks import margin_for_fill

        same_cut = data.detector == trained.detector and data.margin != trained.margin
        margin = trained.margin if same_cut else margin_for_fill(data_fill, data.margin, trained_fill)
        hint = f"; prepare --margin {margin:.2f} frames it so, as does prepare --like MODEL" \
            if data.detector != "none" else ""
        said.append(f"face fills {data_fill:.2f} of a crop (model: {trained_fill:.2f}){hint}")
    return ", ".join(said)


@dataclass(frozen=True)
class CollectionRow:
    """One line of a multi-collection evaluation: a collection, or one of its groups (a manipulation method)."""

    collection: str
    group: str  # "" for the whole collection
    figures: Figures
    framing: str  # framing_difference: "" when framed as the model's training crops

    def to_dict(self) -> dict:
        return {"collection": self.collection, "group": self.group or None, **self.figures.to_dict(),
                "faces_per_video": self.faces_per_video, "framing": self.framing or None}

    @property
    def faces_per_video(self) -> float | None:
        v = self.figures.evaluation.video.n
        return round(self.figures.evaluation.frame.n / v, 2) if v else None


@dataclass(frozen=True)
class CollectionsResult:
    """A model on several prepared collections, as the field reports cross-dataset results."""

    rows: tuple[CollectionRow, ...]
    verdict: str

    def to_dict(self) -> dict:
        return {"threshold": self.verdict, "rows": [r.to_dict() for r in self.rows]}

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        head = ["collection", "method", "video AUC", "95% over sources", "AP", "log loss", "ECE", "Cllr", "Cllr_min",
                "videos", "sources", "frame AUC", "faces/video", "framing"]
        return head, [[r.collection, r.group or "(all)", shown(v.auc, 3), f.interval.shown(), shown(v.ap, 3),
                       shown(v.log_loss, 3), shown(v.ece, 3), shown(f.cost.cllr, 3), shown(f.cost.cllr_min, 3),
                       str(v.n), str(f.interval.sources), shown(f.evaluation.frame.auc, 3), shown(r.faces_per_video),
                       r.framing or "as trained"]
                      for r in self.rows for f in (r.figures,) for v in (f.evaluation.video,)]

    def table(self) -> str:
        return format_table(*self._cells()) + f"\nverdict: {self.verdict}"

    def html(self, model: str) -> str:
        """The table as a self-contained HTML page."""
        from ..tracking.report import table_page

        return table_page(f"{model} on {len({r.collection for r in self.rows})} collections", *self._cells(),
                          note=f"verdict: {self.verdict}")


def evaluate_collections(model: str | Path | Detector, datas: list[str | Path], *, by: str | None = "method",
                         load: LoadOptions | None = None, progress: ProgressCallback | None = None
                         ) -> CollectionsResult:
    """`model` on each prepared collection and each of its `by` groups (video AUC, AP, log loss, ECE), with how
    each collection's framing differs from the model's training crops. The model loads once."""
    from ..data.dataset import load_dataset

    detector = _as_detector(model, load)
    rows = []
    for data in datas:
        d = load_dataset(data, need_both_classes=False)
        result = evaluate(detector, d, by=by, progress=progress)
        framing = framing_difference(detector.card.prepare, d.settings, detector.card.face_fill, d.face_fill())
        rows.append(CollectionRow(d.name, "", result.whole, framing))
        rows += [CollectionRow(d.name, group, figures, framing) for group, figures in result.by.items()]
    return CollectionsResult(tuple(rows), detector.verdict.meaning())


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders replaced by the videos and images inside them (recursively, sorted)."""
    out = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += sorted(p for p in item.rglob("*") if p.is_file() and is_media(p))
        else:
            out.append(item)
    return out


def predict(model: str | Path | Detector, inputs: list[str | Path], *, load: LoadOptions | None = None,
            keep_faces: int = 0, progress: ProgressCallback | None = None) -> list[VideoResult]:
    """P(fake) and a verdict per input, with every frame's faces and the face tracks (and the crops of its
    `keep_faces` most suspicious faces). Bad inputs get an error and the rest go on. Raises UsageError when
    there are no inputs or the model cannot be loaded."""
    detector = _as_detector(model, load)
    paths = expand_inputs(inputs)
    if not paths:
        raise UsageError("no inputs (give video files, images or folders holding them)")
    results = []
    for i, path in enumerate(paths):
        def within(frames: int, faces: int) -> None:  # a long video shows that it is moving
            emit(progress, "frames", frames, None, "frame", faces=faces)

        result = detector.predict(path, keep_faces=keep_faces, on_progress=within)
        results.append(result)
        emit(progress, "predict", i + 1, len(paths), "input", message=f"{path}: {result.error}" if result.error else "")
    return results


STRENGTH_COLUMNS = ("likelihood_ratio", "bounded", "real_percentile", "fake_percentile", "support", "n_real", "n_fake",
                    "fakes")


def write_predictions_csv(predictions: list[VideoResult], path: str | Path) -> Path:
    """One row per input (and its tracks' scores); the per-frame detail is in the JSON."""
    import csv

    from .. import _files

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["input", "p_fake", "verdict", "decision", *STRENGTH_COLUMNS, "strength_note", "threshold",
                        "frames_used", "faces", "tracks", "error"])
            for r in predictions:
                tracks = " ".join(f"{t.track}:{t.p_fake:.4f}" for t in r.tracks)
                strength = r.strength.to_dict() if r.strength else {}
                w.writerow([printable(r.input), "" if r.p_fake is None else r.p_fake, r.verdict or "", r.decision or "",
                            *(strength.get(k, "") for k in STRENGTH_COLUMNS), r.why_no_strength, r.threshold,
                            len(r.frames), r.faces, tracks, r.error or ""])

    _files.write_with(path, write)
    return Path(path)


def predictions_table(predictions: list[VideoResult]) -> str:
    """One line per input: its headline verdict, the strength of evidence behind it (the likelihood ratio and its
    words), the threshold's decision, P(fake), and why there is no verdict or no strength."""
    def lr(p: VideoResult) -> str:
        return "-" if p.strength is None else f"{p.strength.likelihood_ratio:.3g}"

    rows = [[p.input, p.verdict or "-", lr(p), p.strength.support if p.strength else "-", p.decision or "-",
             shown(p.p_fake, 3), str(len(p.frames)), str(p.faces),
             " ".join(f"#{t.track} {t.p_fake:.2f}" for t in p.tracks) or "-",
             "; ".join(n for n in (p.note, p.why_no_strength if p.p_fake is not None else "") if n)]
            for p in predictions]
    return format_table(["input", "verdict", "LR", "strength of evidence", "decision", "P(fake)", "frames", "faces",
                         "tracks (P(fake))", "note"], rows)
