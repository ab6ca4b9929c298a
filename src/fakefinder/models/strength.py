"""Strength of evidence: what a video's score says, as a likelihood ratio on the forensic verbal scale.

A bare P(fake) overstates weak evidence: "FAKE 58%" reads as a finding when the model's own validation videos
say such scores are only somewhat more common among fakes than among reals. Forensic science reports instead how
many times more probable the score is if the video is manipulated than if it is authentic (the likelihood ratio,
LR), in the words of the ENFSI guideline for evaluative reporting (2015), bounded by what the validation data can
show. Everything here is a pure function of VIDEO scores (P(fake) per video, as the card's calibration and video
rule give them) and labels (1 = fake); counts should be of independent videos (by source), not of clips.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ..errors import UsageError

Headline = Literal["FAKE", "REAL", "INCONCLUSIVE"]
Colour = Literal["red", "green", "amber"]

# The ENFSI scale, as (lowest LR of the band, its words); each band is [edge, next edge), so 10 itself is moderate
# (the colour rule's "red from moderate support, LR >= 10" needs 10 on that side). Reciprocals mirror it: LR 1/10
# is moderate support for authenticity.
BANDS = ((2.0, "weak"), (10.0, "moderate"), (100.0, "moderately strong"), (1_000.0, "strong"),
         (10_000.0, "very strong"), (1_000_000.0, "extremely strong"))
NO_SUPPORT = "no support either way"
CONCLUSIVE = 3.0  # the headline's default: FAKE at LR >= 3, REAL at LR <= 1/3
MODERATE = 10.0  # the colour's edge: red or green from moderate support


def _ratio(lr: float) -> float:
    """`lr` as a float, refusing what is not a likelihood ratio (one line, for the caller's user)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise UsageError(f"a likelihood ratio must be a number, got {lr!r}")
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"a likelihood ratio must be finite and > 0, got {lr!r}")
    return lr


def support(lr: float) -> str:
    """The verbal scale's words for `lr`, e.g. "weak support for manipulation", "no support either way".

    Bands are [2, 10) weak, [10, 100) moderate, [100, 1,000) moderately strong, [1,000, 10,000) strong,
    [10,000, 10^6) very strong, 10^6 and above extremely strong; for authenticity LR <= 1/2 weak, <= 1/10
    moderate, and so on. The guideline names no band between 1 and 2: an LR there (or between 1/2 and 1) is
    "no support either way", because it moves the odds by less than the factor of two where the guideline's
    first band, weak, begins, and a calibration fitted on a few hundred videos is not sure to that factor; its
    own phrase for LR 1 keeps the page to the guideline's words instead of inventing a weaker-than-weak one.
    Raises UsageError for an LR that is not finite and > 0.
    """
    lr = _ratio(lr)
    if lr >= 1:
        words = [name for edge, name in BANDS if lr >= edge]
        return f"{words[-1]} support for manipulation" if words else NO_SUPPORT
    words = [name for edge, name in BANDS if lr <= 1 / edge]
    return f"{words[-1]} support for authenticity" if words else NO_SUPPORT


def headline(lr: float, *, conclusive: float = CONCLUSIVE) -> Headline:
    """FAKE where LR >= `conclusive`, REAL where LR <= 1/`conclusive`, INCONCLUSIVE between: the headline follows
    the evidence, not P(fake). Raises UsageError for a bad LR or a `conclusive` that is not finite and > 1."""
    lr = _ratio(lr)
    if isinstance(conclusive, bool) or not (isinstance(conclusive, (int, float)) and math.isfinite(conclusive)
                                            and conclusive > 1):
        raise UsageError(f"conclusive must be a finite number > 1, got {conclusive!r}")
    if lr >= conclusive:
        return "FAKE"
    return "REAL" if lr <= 1 / conclusive else "INCONCLUSIVE"


def colour(lr: float) -> Colour:
    """red from moderate support for manipulation (LR >= 10), green from moderate support for authenticity
    (LR <= 1/10), amber below moderate either way: weak evidence never looks like a finding."""
    lr = _ratio(lr)
    if lr >= MODERATE:
        return "red"
    return "green" if lr <= 1 / MODERATE else "amber"


def _labels(labels, n: int, what: str) -> np.ndarray:
    """`labels` as 0/1 int64 of length `n`, with both classes. Raises UsageError."""
    y = np.asarray(labels).ravel()
    if len(y) != n:
        raise UsageError(f"{n} {what} but {len(y)} labels")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise UsageError("labels must be 0 (real) or 1 (fake)")
    y = y.astype(np.int64)
    if y.all() or not y.any():
        raise UsageError(f"needs both real and fake videos, got {int((y == 0).sum())} real and {int(y.sum())} "
                         "fake")
    return y


def _scores(scores, labels, *, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Finite float64 scores (P(fake) in [0, 1] with `probabilities`) and their labels. Raises UsageError."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(s).all():
        raise UsageError(f"scores must be finite numbers ({int((~np.isfinite(s)).sum())} of {len(s)} are not)")
    if probabilities and len(s) and not (s.min() >= 0 and s.max() <= 1):
        raise UsageError(f"scores must be P(fake) in [0, 1], got {s.min():g} to {s.max():g}")
    return s, _labels(labels, len(s), "scores")


def _cllr_log2(log2_lr: np.ndarray, y: np.ndarray) -> float:
    """Cllr from log2 LRs (+-inf allowed): the mean cost in bits of each proposition's LRs, averaged over the two.
    In base 2 an LR of 1 costs exactly one bit (logaddexp2(0, 0) is 1), so saying nothing scores exactly 1."""
    fake = np.logaddexp2(0.0, -log2_lr[y == 1])  # log2(1 + 1/LR)
    real = np.logaddexp2(0.0, log2_lr[y == 0])  # log2(1 + LR)
    return float((fake.mean() + real.mean()) / 2)


def cllr(lrs, labels) -> float:
    """Log-likelihood-ratio cost (Brümmer and du Preez 2006), in bits: 0 for LRs that are right and infinitely
    sure, 1 for LR 1 everywhere (no better than saying nothing), above 1 for LRs that mislead. It punishes both
    poor discrimination and poor calibration. LRs may be 0 or infinite (infinitely costly where wrong, free where
    right). Raises UsageError for a negative or NaN LR, or without both real and fake videos."""
    lr = np.asarray(lrs, dtype=np.float64).ravel()
    if np.isnan(lr).any() or (lr < 0).any():
        raise UsageError("likelihood ratios must be >= 0 (infinity allowed), not negative or NaN")
    y = _labels(labels, len(lr), "likelihood ratios")
    with np.errstate(divide="ignore"):
        return _cllr_log2(np.log2(lr), y)


def pav_log2_lr(scores, labels) -> np.ndarray:
    """The LRs (log2) that pool-adjacent-violators gives `scores` on their own labels: the best any monotone map
    of these scores can do on them. PAV fits P(fake | score) as a non-decreasing step function (tied scores are
    pooled, so they share one LR); dividing its odds by the data's own prior odds (n_fake / n_real) makes them
    LRs. A step holding only fakes (or only reals) gets an infinite (or zero) LR, as in the literature: it is
    never misleading on the data it was fitted to, and costs nothing. Overfits on small sets: for measuring, not
    for stating a verdict. Raises UsageError as `cllr_min`."""
    from sklearn.isotonic import IsotonicRegression

    s, y = _scores(scores, labels)
    p = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit_transform(s, y.astype(np.float64))
    prior = math.log2(y.sum()) - math.log2(len(y) - y.sum())
    with np.errstate(divide="ignore"):
        return np.log2(p) - np.log2(1 - p) - prior


def cllr_min(scores, labels) -> float:
    """Cllr after the best monotone recalibration (PAV, with the prior correction): what the scores could reach
    if perfectly calibrated, so that Cllr - Cllr_min is the cost of calibration and Cllr_min that of
    discrimination. At most 1 (PAV can always fall back to LR 1); 0 for scores that separate the classes.
    Higher scores must mean more likely fake. Raises UsageError for a non-finite score, labels other than 0/1,
    or without both real and fake videos."""
    s, y = _scores(scores, labels)
    return _cllr_log2(pav_log2_lr(s, y), y)


def eer(scores, labels) -> float:
    """The equal error rate of `scores` (higher = more likely fake): where the share of real videos flagged equals
    the share of fakes missed, as `metrics.binary_metrics` measures it. Raises UsageError as `cllr_min`."""
    from ..metrics import eer_crossing

    s, y = _scores(scores, labels)
    i, fpr, tpr, _ = eer_crossing(y, s)
    return float((fpr[i] + 1 - tpr[i]) / 2)
