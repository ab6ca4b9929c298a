"""Frame- and video-level metrics, written once: accuracy, ROC AUC, AP, log loss (the DFDC metric), EER."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

EPS = 1e-15  # DFDC clips predictions to [1e-15, 1 - 1e-15]
VideoRule = Literal["mean", "confident"]


def format_metric(x: float | None, digits: int = 3) -> str:
    """A metric for people: fixed decimals, '-' where it is undefined (None or NaN)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    auc: float  # nan when only one class is present
    ap: float
    log_loss: float
    eer: float
    n: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def binary_metrics(y, p, *, threshold: float = 0.5) -> Metrics:
    """y in {0, 1} (1 = FAKE), p = P(fake)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return Metrics(*(math.nan,) * 5, 0)
    q = np.clip(p, EPS, 1 - EPS)
    log_loss = float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
    accuracy = float(np.mean((p >= threshold) == (y == 1)))
    if len(np.unique(y)) < 2:
        return Metrics(accuracy, math.nan, math.nan, log_loss, math.nan, len(y))
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)  # every threshold: EER needs the exact crossing
    i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    eer = float((fpr[i] + 1 - tpr[i]) / 2)
    return Metrics(accuracy, float(roc_auc_score(y, p)), float(average_precision_score(y, p)), log_loss, eer, len(y))


def video_scores(video_ids, y, p, *, rule: VideoRule = "mean") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Aggregate frame P(fake) to one score per video.

    `mean`: the mean over its faces. `confident` (the DFDC winner's rule, its 11-of-32-frames floor scaled
    to the face count, where the 40% condition dominates): if over 40% of faces are confidently fake (> 0.8)
    take their mean; else if over 90% are confidently real (< 0.2) take theirs; else the mean.
    """
    video_ids = np.asarray(video_ids)
    order = np.argsort(video_ids, kind="stable")
    ids, starts = np.unique(video_ids[order], return_index=True)
    ys, ps = [], []
    for vid_rows in np.split(order, starts[1:]):
        pv = np.asarray(p)[vid_rows]
        ys.append(int(np.asarray(y)[vid_rows][0]))
        ps.append(_confident(pv) if rule == "confident" else float(pv.mean()))
    return ids.tolist(), np.array(ys, dtype=np.int64), np.array(ps, dtype=np.float64)


def _confident(p: np.ndarray) -> float:
    fake, real = p[p > 0.8], p[p < 0.2]
    if len(fake) > 0.4 * len(p):
        return float(fake.mean())
    if len(real) > 0.9 * len(p):
        return float(real.mean())
    return float(p.mean())


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one part at both levels; videos without any face have no score and are counted here."""

    frame: Metrics
    video: Metrics
    confusion: tuple[tuple[int, int], tuple[int, int]]  # video level, rows = true REAL/FAKE, cols = predicted
    no_face_videos: int

    def to_dict(self) -> dict:
        return {"frame": self.frame.to_dict(), "video": self.video.to_dict(),
                "confusion": [list(r) for r in self.confusion], "no_face_videos": self.no_face_videos}


def evaluate_scores(video_ids, y, p, *, threshold: float = 0.5, rule: VideoRule = "mean",
                    no_face_videos: int = 0) -> Evaluation:
    _, vy, vp = video_scores(video_ids, y, p, rule=rule)
    pred = (vp >= threshold).astype(int)
    confusion = tuple(tuple(int(np.sum((vy == t) & (pred == q))) for q in (0, 1)) for t in (0, 1))
    return Evaluation(binary_metrics(y, p, threshold=threshold), binary_metrics(vy, vp, threshold=threshold),
                      confusion, no_face_videos)
