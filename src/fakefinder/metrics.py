"""Frame- and video-level metrics, written once: accuracy, ROC AUC, AP, log loss (the DFDC metric), EER and
expected calibration error; the metric names and directions that tune, runs and report use are declared in
`registries`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from .config import VideoRule
from .errors import InputError

# The metric names are declared with the settings' other choices; still importable from here.
from .registries import DIRECTIONS, LEVELS, SELECTION_METRICS  # noqa: F401

EPS = 1e-15  # DFDC clips predictions to [1e-15, 1 - 1e-15]
ECE_BINS = 15

# Per-epoch metrics of `fit`, as trackers record them.
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc")


def sigmoid(z) -> np.ndarray:
    """P from a logit, in float64; logits beyond +-60 are clipped (the result is 0 or 1 to float precision)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, dtype=np.float64), -60, 60)))


def finite_scores(z) -> np.ndarray:
    """`z` (logits or probabilities) as float64, refusing NaN or infinity: a model's score is never a verdict
    unless it is a number. Raises InputError."""
    z = np.asarray(z, dtype=np.float64)
    if not np.isfinite(z).all():
        raise InputError(f"the model gave a non-finite score ({int((~np.isfinite(z)).sum())} of {z.size} not a "
                         "number or infinite): its weights or this input overflow it")
    return z


def bootstrap_auc(y, p, *, groups=None, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of ROC AUC over `rounds` resamples (with replacement) of the rows, or of
    `groups` of them (a row's source: see `_percentile_interval`); NaNs when there are not both classes. Rows are
    videos when the AUC is a video-level one: resample what is independent."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return math.nan, math.nan
    return _percentile_interval(y, _weighted_auc(y, p), rounds, seed, both=True, groups=groups)


def _weighted_auc(y: np.ndarray, p: np.ndarray):
    """ROC AUC of rows drawn `counts` times each, one row of counts per resample, so that all are scored at once:
    the share of (fake, real) pairs the scores order right, ties counting half, which is what `roc_auc_score` gives
    on the drawn rows repeated, in a small part of its time (`bench/intervals.py`)."""
    if not np.isfinite(p).all():
        raise ValueError("scores must be finite numbers to be ranked")  # as roc_auc_score refuses them
    _, tie = np.unique(p, return_inverse=True)
    order = np.argsort(tie.ravel(), kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(tie.ravel()[order]) > 0])
    fake = np.asarray(y) == 1

    def auc(counts: np.ndarray) -> np.ndarray:
        fakes, reals = (np.add.reduceat(np.where(side, counts, 0)[:, order], starts, axis=1)
                        for side in (fake, ~fake))  # per distinct score, lowest first
        below = np.cumsum(reals, axis=1) - reals
        return (fakes * (below + reals / 2)).sum(axis=1) / (fakes.sum(axis=1) * reals.sum(axis=1))

    return auc


def _weighted_log_loss(y: np.ndarray, p: np.ndarray):
    """`binary_log_loss` of rows drawn `counts` times each, one row of counts per resample."""
    losses = _row_log_losses(y, p)

    def log_loss(counts: np.ndarray) -> np.ndarray:
        return counts @ losses / counts.sum(axis=1)

    return log_loss


def _percentile_interval(y: np.ndarray, statistic, rounds: int, seed: int, *, both: bool, groups=None
                         ) -> tuple[float, float]:
    """The 95% percentile interval of `statistic` over resamples, those holding one class left out where `both`
    (an AUC needs both). `statistic` takes how often each row was drawn, one row of counts per resample. Without
    `groups` each row is drawn on its own; with them (one label per row) whole groups are drawn, each bringing all
    its rows: a fake and the real it was made from, or a person's several videos, are not independent evidence,
    and resampling them apart misstates how sure the figure is. Groups of one row each draw the rows that rows
    drawn alone do."""
    rng, n = np.random.default_rng(seed), len(y)
    if groups is None:
        draws = (np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(rounds))
    else:
        groups = np.asarray(groups, dtype=str)
        if groups.shape != y.shape:
            raise ValueError(f"{len(groups)} groups for {n} rows")
        _, first, index = np.unique(groups, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))[index.ravel()]  # groups numbered in the order they first appear
        k = len(first)
        draws = (np.bincount(rng.integers(0, k, k), minlength=k)[rank] for _ in range(rounds))
    fake, spread = np.asarray(y) == 1, []
    while block := list(itertools.islice(draws, max(1, 2_000_000 // max(n, 1)))):  # tens of MB at any size
        counts = np.array(block, dtype=np.float64)
        if both:
            counts = counts[(counts[:, fake].sum(axis=1) > 0) & (counts[:, ~fake].sum(axis=1) > 0)]
        spread.append(statistic(counts))
    low, high = np.percentile(np.concatenate(spread), [2.5, 97.5])
    return float(low), float(high)


@dataclass(frozen=True)
class AucInterval:
    """The video AUC's bootstrap 95% interval over the videos' `sources` (their source groups, which a split keeps
    together): a fake and the real it was made from, or one person's videos, are one piece of evidence, and
    resampling them apart misstates how sure the AUC is. No interval without real and fake videos."""

    low: float | None = None
    high: float | None = None
    sources: int = 0

    def to_dict(self) -> dict:
        return {"auc_low": self.low, "auc_high": self.high, "sources": self.sources}

    def shown(self) -> str:
        return "" if self.low is None else f"[{self.low:.3f}, {self.high:.3f}]"

    @classmethod
    def of(cls, vy: np.ndarray, vp: np.ndarray, sources: list, *, seed: int = 0) -> AucInterval:
        """`seed`: a model's own, so that `evaluate --split test` gives the interval its card states."""
        count = len(set(sources))
        if len(np.unique(vy)) < 2:
            return cls(sources=count)
        return cls(*bootstrap_auc(vy, vp, groups=sources, seed=seed), count)


def bootstrap_difference(y, a, b, *, metric: str = "auc", groups=None, rounds: int = 1000, seed: int = 0
                         ) -> tuple[float, float, float]:
    """`metric` of scores `a` minus that of scores `b` on the same rows, with its 95% percentile interval over
    resamples (of the rows, or of their `groups`) drawn once for both: paired, so what the rows add to both cancels
    and the interval is far narrower than the two separate ones. `a` and `b` are one score per row, or one row of
    scores per seed (the difference is then of the seeds' means). `metric` is "auc" or "log_loss"; NaNs where an AUC
    lacks both classes."""
    y = np.asarray(y)
    a, b = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (a, b))
    if a.shape[1:] != y.shape or b.shape[1:] != y.shape:
        raise ValueError(f"scores of shape {a.shape} and {b.shape} for {len(y)} rows")
    if metric == "auc" and len(np.unique(y)) < 2:
        return math.nan, math.nan, math.nan
    weighted = {"auc": _weighted_auc, "log_loss": _weighted_log_loss}[metric]
    firsts, seconds = ([weighted(y, s) for s in side] for side in (a, b))

    def difference(counts: np.ndarray) -> np.ndarray:
        return np.mean([f(counts) for f in firsts], axis=0) - np.mean([f(counts) for f in seconds], axis=0)

    low, high = _percentile_interval(y, difference, rounds, seed, both=metric == "auc", groups=groups)
    return float(difference(np.ones((1, len(y))))[0]), low, high


def selection_key(metric: str) -> str:
    """The tracked key of a selection metric: video_auc -> val_video_auc."""
    return f"val_{metric}"


def direction(key: str) -> str:
    """minimize or maximize for any tracked metric key (val_video_auc, val_video_ece_uncalibrated, train_loss,
    wall_seconds, ...)."""
    key = key.removesuffix("_uncalibrated")
    for name, way in DIRECTIONS.items():
        if key.endswith(name):
            return way
    return "minimize" if key.endswith(("loss", "seconds", "false_alarm_rate")) else "maximize"


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    auc: float  # nan when only one class is present
    ap: float
    log_loss: float
    eer: float
    n: int
    ece: float = math.nan  # expected calibration error: how far P(fake) is from the observed share of fakes

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Metrics:
        return cls(**{k: (math.nan if d.get(k) is None else d[k]) for k in ("accuracy", "auc", "ap", "log_loss",
                                                                            "eer")}, n=int(d.get("n") or 0),
                   ece=math.nan if d.get("ece") is None else d["ece"])


def eer_crossing(y, p) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Where the ROC curve crosses the equal error rate: (index, fpr, tpr, thresholds), every threshold kept
    (the crossing must be exact). Needs both classes in y."""
    from sklearn.metrics import roc_curve

    fpr, tpr, cuts = roc_curve(y, p, drop_intermediate=False)
    return int(np.argmin(np.abs(fpr - (1 - tpr)))), fpr, tpr, cuts


def binary_metrics(y, p, *, threshold: float = 0.5) -> Metrics:
    """y in {0, 1} (1 = FAKE), p = P(fake)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return Metrics(*(math.nan,) * 5, 0)
    log_loss = binary_log_loss(y, p)
    accuracy = float(np.mean((p >= threshold) == (y == 1)))
    calibration_error = ece(y, p)
    if len(np.unique(y)) < 2:
        return Metrics(accuracy, math.nan, math.nan, log_loss, math.nan, len(y), calibration_error)
    i, fpr, tpr, _ = eer_crossing(y, p)
    eer = float((fpr[i] + 1 - tpr[i]) / 2)
    return Metrics(accuracy, float(roc_auc_score(y, p)), float(average_precision_score(y, p)), log_loss, eer, len(y),
                   calibration_error)


def binary_log_loss(y, p, *, eps: float = EPS) -> float:
    """The DFDC metric: mean negative log-likelihood of the labels, predictions clipped to [eps, 1 - eps]."""
    return float(np.mean(_row_log_losses(y, p, eps)))


def _row_log_losses(y, p, eps: float = EPS) -> np.ndarray:
    """Each row's negative log-likelihood of its label, predictions clipped to [eps, 1 - eps]."""
    y, q = np.asarray(y, dtype=np.float64), np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


def ece(y, p, *, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |share of fakes - mean P(fake)| per equal-width bin, weighted by bin size."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return math.nan
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        sel = which == b
        total += sel.sum() * abs(y[sel].mean() - p[sel].mean())
    return float(total / len(y))


def video_scores(video_ids, y, p, *, rule: VideoRule = "mean", tracks=None
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Aggregate face P(fake) to one score per video: the rule over each of its face tracks (`tracks`, per row;
    None: one track a video), and the largest of them, since a fake often swaps one of two people. `predict` and
    `evaluate` both score a video so.

    `mean`: the mean over the track's faces. `confident` (the DFDC winner's rule, its 11-of-32-frames floor scaled
    to the face count, where the 40% condition dominates): if over 40% of faces are confidently fake (> 0.8)
    take their mean; else if over 90% are confidently real (< 0.2) take theirs; else the mean.
    """
    video_ids, p = np.asarray(video_ids), np.asarray(p, dtype=np.float64)
    tracks = np.zeros(len(p), dtype=np.int64) if tracks is None else np.asarray(tracks)
    order = np.argsort(video_ids, kind="stable")
    ids, starts = np.unique(video_ids[order], return_index=True)
    ys, ps = [], []
    for vid_rows in np.split(order, starts[1:]):
        ys.append(int(np.asarray(y)[vid_rows][0]))
        ps.append(max(_rule(p[vid_rows][tracks[vid_rows] == t], rule) for t in np.unique(tracks[vid_rows])))
    return ids.tolist(), np.array(ys, dtype=np.int64), np.array(ps, dtype=np.float64)


def _rule(p: np.ndarray, rule: VideoRule) -> float:
    """One track's score from its faces'."""
    if rule == "confident":
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

    @classmethod
    def from_dict(cls, d: dict) -> Evaluation:
        (a, b), (c, e) = d["confusion"]
        return cls(Metrics.from_dict(d["frame"]), Metrics.from_dict(d["video"]), ((a, b), (c, e)),
                   int(d.get("no_face_videos", 0)))


def evaluate_scores(video_ids, y, p, *, threshold: float = 0.5, rule: VideoRule = "mean", tracks=None,
                    no_face_videos: int = 0) -> Evaluation:
    _, vy, vp = video_scores(video_ids, y, p, rule=rule, tracks=tracks)
    return evaluate_videos(y, p, vy, vp, threshold=threshold, no_face_videos=no_face_videos)


def evaluate_videos(y, p, vy, vp, *, threshold: float = 0.5, no_face_videos: int = 0) -> Evaluation:
    """`evaluate_scores` where the faces' scores `p` are already combined into their videos' `vp` (`video_scores`),
    for a caller that needs the video scores for more figures."""
    pred = (vp >= threshold).astype(int)
    confusion = tuple(tuple(int(np.sum((vy == t) & (pred == q))) for q in (0, 1)) for t in (0, 1))
    return Evaluation(binary_metrics(y, p, threshold=threshold), binary_metrics(vy, vp, threshold=threshold),
                      confusion, no_face_videos)
