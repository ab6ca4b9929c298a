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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .. import options
from ..config import Fakes
from ..errors import OptionError, UsageError
from ..options import option

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
KEPT = 501  # validation scores a map keeps per class: all up to 501, else 501 order statistics (every 0.2%)
# The |log10 LR| cap of a model validated on its own pseudo-fakes, which are not deepfakes: the top of weak support
# (moderate begins at 10 itself).
PSEUDO_CAP = math.log10(9.9)
NO_CAP = 10.0  # the declared ceiling, above any ELUB bound (log10(10^9 + 1) < 9.0001): no cap
SLOPE_MAX = 100.0
LOGIT_EPS = 1e-15  # P(fake) is clipped to [eps, 1 - eps] before its logit, as metrics.EPS clips log loss
Limit = Literal["none", "validation", "pseudo-fakes"]  # what stopped an LR: nothing, ELUB, the pseudo-fake cap


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


def elub(log10_lrs, labels) -> tuple[float, float]:
    """The empirical lower and upper bounds (log10) on the LRs of a system (Vergeer et al. 2016, "Numerical
    likelihood ratios outputted by LR systems are often based on extrapolation: when to stop extrapolating?",
    Science & Justice 56): beyond them its validation data no longer show that its LRs help.

    Computed, not approximated by n_real + 1, as we read the paper's definition (no code of theirs or of NFI's
    `lir` was used; a brute-force search over thresholds agrees, see the tests). For a threshold t, decide
    "manipulated" where LR > t: the Bayes decision at prior odds 1/t with equal costs. The system's expected
    benefit there, per unit of the authentic prior, is C_fake / t + C_real (C: the share of each proposition's
    videos decided right); the neutral system (LR 1 for every video) gets max(1, 1/t). The data are first
    extended with one misleading pseudo-observation per proposition (a real video whose LR is above every
    threshold, a fake one below every threshold), which the neutral system decides like any other. The upper
    bound is the lowest t > 1 where the system stops beating the neutral one, the lower bound the highest t < 1
    (the same question with the propositions swapped). The counts change only at the validation LRs, so within
    each interval between them the crossing is found in closed form, t = C_fake / (1 - C_real): no grid. With
    every fake above t and every real below, t = (n_real + 1) n_fake / (n_fake + 1), so the bounds always lie
    strictly within the approximation [1/(n_fake + 1), n_real + 1] and come to about that for well separated data;
    for a system no better than LR 1 they close on 1 (log10 0).
    LRs may be infinite (log10 +-inf); raises UsageError for NaN, bad labels or one class only.
    """
    lr = np.asarray(log10_lrs, dtype=np.float64).ravel()
    if np.isnan(lr).any():
        raise UsageError("log10 likelihood ratios must be numbers, not NaN")
    y = _labels(labels, len(lr), "likelihood ratios")
    fake, real = lr[y == 1], lr[y == 0]
    return -_elub_upper(-real, -fake), _elub_upper(fake, real)


def _elub_upper(fake: np.ndarray, real: np.ndarray) -> float:
    """The ELUB upper bound, log10, from the fakes' and the reals' log10 LRs (see `elub`)."""
    cuts = np.unique(np.concatenate([fake, real]))
    left = np.concatenate([[0.0], cuts[cuts > 0]])  # interval j of thresholds is (left[j], right[j]), log10
    right = np.concatenate([cuts[cuts > 0], [np.inf]])
    above = len(fake) - np.searchsorted(np.sort(fake), left, side="right")  # fakes with LR > t: decided right
    below = np.searchsorted(np.sort(real), left, side="right")  # reals with LR < t
    with np.errstate(divide="ignore"):  # no fake above: the system cannot win there (crossing -inf)
        crossing = np.log10(above / (len(fake) + 1)) - np.log10(1 - below / (len(real) + 1))
    j = int(np.argmax(crossing < right))  # the first interval where it stops winning; the last always does
    return float(max(left[j], crossing[j]))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _logistic(z: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the `weight`ed logistic regression of `y` on `z`, slope in [0, SLOPE_MAX], with
    Platt's targets (n_fake + 1)/(n_fake + 2) and 1/(n_real + 2) instead of 1 and 0 (n: each class's total
    weight), as `calibration.fit_calibration`: validation videos the model separates perfectly would otherwise
    drive the slope to its bound and every LR to infinity."""
    from scipy.optimize import minimize
    from scipy.special import expit

    n_fake, n_real = float(weight[y == 1].sum()), float(weight[y == 0].sum())
    t = np.where(y == 1, (n_fake + 1) / (n_fake + 2), 1 / (n_real + 2))
    w = weight / weight.sum()

    def loss(v: np.ndarray) -> tuple[float, np.ndarray]:
        s = v[0] * z + v[1]
        r = w * (expit(s) - t)
        return float(np.sum(w * (np.logaddexp(0, s) - t * s))), np.array([np.sum(r * z), np.sum(r)])

    fit = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, SLOPE_MAX), (-100.0, 100.0)])
    return float(np.clip(fit.x[0], 0.0, SLOPE_MAX)), float(np.clip(fit.x[1], -100.0, 100.0))


def _kept(scores: np.ndarray) -> tuple[float, ...]:
    """Sorted `scores` as a map keeps them: all of them up to KEPT, else the order statistics at `_ranks`."""
    scores = np.sort(scores)
    return tuple(float(v) for v in (scores if len(scores) <= KEPT else scores[_ranks(len(scores), KEPT)]))


def _ranks(n: int, kept: int) -> np.ndarray:
    """The ranks (0-based, of n sorted scores) of the `kept` stored ones: evenly spaced, first and last included;
    0, 1, ..., n - 1 when all are kept. Integer arithmetic, so a card read back gives the same ranks."""
    if kept == 1:
        return np.zeros(1, dtype=np.int64)
    k = np.arange(kept, dtype=np.int64)
    return (k * (n - 1) + (kept - 1) // 2) // (kept - 1)


def _share_below(kept: tuple[float, ...], n: int, score: float) -> float:
    """The share of n validation scores strictly below `score`, from the `kept` of them. Exact when all are kept;
    otherwise between two stored order statistics it interpolates in score, within (ranks apart) / n of the true
    share: under 1/(KEPT - 1) + 1/n, i.e. 0.2% of the videos."""
    q = np.asarray(kept)
    j = int(np.searchsorted(q, score, side="left"))  # stored scores < score
    if j == 0 or j == len(q):
        return j / len(q)
    ranks = _ranks(n, len(q))
    low = ranks[j - 1] + 1  # q[j-1] < score <= q[j]: at least rank(j-1) + 1 scores below, at most rank(j)
    return float(low + (ranks[j] - low) * (score - q[j - 1]) / (q[j] - q[j - 1])) / n


def _percent(share: float) -> str:
    """A share as whole percent, rounded down: "higher than 81%" stays true at 81.9%."""
    return f"{math.floor(100 * share + 1e-9)}%"


def _times(x: float) -> str:
    """How many times as common: one decimal below 10 (2.1), else two significant digits (15, 4,500)."""
    return f"{x:.1f}" if x < 9.95 else f"{float(f'{x:.2g}'):,.0f}"


ADJECTIVE = {"real": "manipulated", "self-blended": "self-blended (pseudo-fake)", "both": "manipulated or self-blended"}


@dataclass(frozen=True)
class Strength(options.Checked):
    """The strength of evidence of one video's score, as a verdict states it (the card's `Evidence` is about the
    validation data; this is about the video)."""

    likelihood_ratio: float = option(1.0, "how many times as common this score is among the model's fake "
                                     "validation videos as among its real ones, bounded", low=0, low_open=True,
                                     high=10 ** NO_CAP)
    bounded: bool = option(False, "a bound was hit: the validation data cannot support a stronger LR")
    real_percentile: float = option(0.0, "share of real validation videos that scored lower", low=0, high=1)
    fake_percentile: float = option(0.0, "share of fake validation videos that scored lower", low=0, high=1)
    support: str = option(NO_SUPPORT, "the verbal scale's words for the LR (ENFSI 2015)")
    n_real: int = option(1, "real validation videos (independent: by source, not by clip)", low=1, high=1e9)
    n_fake: int = option(1, "fake validation videos (independent: by source, not by clip)", low=1, high=1e9)
    fakes: Fakes = option("real", "the validation fakes: deepfakes, self-blended pseudo-fakes, or both")
    limit: Limit = option("none", "what bounded the LR: nothing, the validation data (ELUB), or the pseudo-fake cap")

    def _cross_check(self) -> list[tuple[str, str]]:
        found = []
        if self.support != support(self.likelihood_ratio):
            found.append(("support", f"must be {support(self.likelihood_ratio)!r} for LR {self.likelihood_ratio:g}"))
        if self.bounded != (self.limit != "none"):
            found.append(("bounded", f"must be {self.limit != 'none'} with limit {self.limit}"))
        return found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self) -> str:
        """The page's lead, e.g. "Scores like this are 2.1 times as common among the model's manipulated validation
        videos as among its real ones (higher than 81% of real validation videos): weak support for
        manipulation."; with what stopped the LR when a bound was hit."""
        fake, lr = ADJECTIVE[self.fakes], self.likelihood_ratio
        times = _times(max(lr, 1 / lr))
        if lr >= 1:
            more, less, aside = fake, "real", f"higher than {_percent(self.real_percentile)} of real validation videos"
        else:
            more, less = "real", fake
            aside = f"higher than {_percent(self.fake_percentile)} of {fake} validation videos"
        how = "as common" if times == "1.0" else f"{times} times as common"
        text = (f"Scores like this are {how} among the model's {more} validation videos as among its {less} ones "
                f"({aside}): {self.support}.")
        if self.limit == "validation":
            text += (f" Its validation videos ({self.n_real} real and {self.n_fake} {fake} sources) cannot support "
                     "more than this.")
        elif self.limit == "pseudo-fakes":
            text += " Its fakes were self-blended pseudo-fakes, not deepfakes, so it claims no more than weak support."
        return text


SCORES = ("real_scores", "fake_scores")


@dataclass(frozen=True)
class StrengthMap(options.Checked):
    """How a video's P(fake) becomes a bounded likelihood ratio, as the model card keeps it.

    ln LR = slope * logit(P(fake)) + shift, fitted on the validation videos (`fit_strength`), then held within the
    ELUB bounds and the cap. Every value is declared and bounded, and cross-checked against the others (bounds no
    wider than the counts allow, the pseudo-fake cap), so that a card cannot claim more than its data by editing.
    `real_scores` and `fake_scores` keep the sorted validation scores for percentiles: all of them up to KEPT
    (501) per class, else 501 evenly ranked order statistics, so a card of 10^5 videos stays about 20 KB and a
    percentile is within 0.2% of the videos.
    """

    fakes: Fakes = option("real", "the validation fakes: deepfakes, self-blended pseudo-fakes, or both")
    slope: float = option(1.0, "natural log LR per unit of logit(P(fake))", low=0, high=SLOPE_MAX)
    shift: float = option(0.0, "natural log LR at P(fake) 0.5", low=-200, high=200)
    log10_lower: float = option(0.0, "ELUB lower bound on log10 LR", low=-NO_CAP, high=0)
    log10_upper: float = option(0.0, "ELUB upper bound on log10 LR", low=0, high=NO_CAP)
    cap: float = option(NO_CAP, "the largest |log10 LR| stated either way", low=0, high=NO_CAP)
    n_real: int = option(1, "real validation videos (independent: by source, not by clip)", low=1, high=1e9)
    n_fake: int = option(1, "fake validation videos (independent: by source, not by clip)", low=1, high=1e9)
    real_scores: tuple[float, ...] = field(default=())  # sorted; checked by _cross_check, not declared
    fake_scores: tuple[float, ...] = field(default=())

    def _cross_check(self) -> list[tuple[str, str]]:
        found = []
        for name, n in zip(SCORES, (self.n_real, self.n_fake)):
            why = _scores_problem(getattr(self, name), min(n, KEPT))
            if why:
                found.append((name, why))
        most, least = math.log10(self.n_real + 1), -math.log10(self.n_fake + 1)
        if self.log10_upper > most + 1e-9:
            found.append(("log10_upper", f"must be <= {most:.4f}: {self.n_real} real videos cannot support more"))
        if self.log10_lower < least - 1e-9:
            found.append(("log10_lower", f"must be >= {least:.4f}: {self.n_fake} fake videos cannot support more"))
        if self.fakes == "self-blended" and self.cap > PSEUDO_CAP + 1e-12:
            why = f"must be <= {PSEUDO_CAP:.4f} with self-blended fakes: pseudo-fakes are not deepfakes"
            found.append(("cap", why + ", and support at most weak evidence"))
        return found

    def _log10_lrs(self, scores) -> tuple[np.ndarray, np.ndarray]:
        """(bounded log10 LRs, unbounded ones) of P(fake) `scores`. Raises UsageError for a score that is not a
        number in [0, 1]."""
        p = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(p).all() or (p.size and not (p.min() >= 0 and p.max() <= 1)):
            raise UsageError("a score must be P(fake), a number in [0, 1]")
        raw = (self.slope * _logit(p) + self.shift) / math.log(10)
        low, high = max(self.log10_lower, -self.cap), min(self.log10_upper, self.cap)
        return np.clip(raw, low, high), raw

    def likelihood_ratios(self, scores) -> np.ndarray:
        """The bounded LRs of many P(fake) scores: for Cllr of test videos. Raises UsageError as `assess`."""
        return 10 ** self._log10_lrs(scores)[0]

    def assess(self, score: float) -> Strength:
        """The strength of evidence of one video's P(fake). Raises UsageError for a score not in [0, 1]."""
        if isinstance(score, bool) or not isinstance(score, (int, float, np.floating, np.integer)):
            raise UsageError(f"a score must be P(fake), a number in [0, 1], got {score!r}")
        bounded, raw = (float(v) for v in self._log10_lrs(float(score)))
        limit: Limit = "none"
        if raw >= min(self.log10_upper, self.cap):
            limit = "pseudo-fakes" if self.cap < self.log10_upper else "validation"
        elif raw <= max(self.log10_lower, -self.cap):
            limit = "pseudo-fakes" if self.cap < -self.log10_lower else "validation"
        lr = 10 ** bounded
        return Strength(lr, limit != "none", _share_below(self.real_scores, self.n_real, float(score)),
                        _share_below(self.fake_scores, self.n_fake, float(score)), support(lr), self.n_real,
                        self.n_fake, self.fakes, limit)

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON form: every field, the kept scores as lists."""
        return {**asdict(self), **{name: list(getattr(self, name)) for name in SCORES}}

    @classmethod
    def from_dict(cls, values: Any, *, prefix: str = "") -> StrengthMap:
        """A map from its JSON form, untrusted: every field required, coerced and checked by its declaration.
        Raises OptionError naming every bad field (`prefix` before each name, e.g. "strength.")."""
        if not isinstance(values, Mapping):
            raise OptionError(prefix.rstrip(".") or "strength", f"must be an object, got {type(values).__name__}")
        table, kwargs, errors = options.declared(cls), {}, []
        for key, value in values.items():
            if key in SCORES:
                if not isinstance(value, (list, tuple)) or len(value) > KEPT or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    errors.append((key, f"must be a list of at most {KEPT} numbers"))
                else:
                    kwargs[key] = tuple(float(v) for v in value)
            elif key in table:
                try:
                    kwargs[key] = table[key].coerce(value)
                except OptionError as exc:
                    errors += exc.problems
            else:
                errors.append((str(key), "is not a known strength field"))
        errors += [(key, "is missing") for key in (*table, *SCORES) if key not in values]
        try:
            if not errors:
                return cls(**kwargs)
        except OptionError as exc:
            errors = exc.problems
        raise OptionError.many([(prefix + name, why) for name, why in errors])


def _scores_problem(scores: Any, n: int) -> str | None:
    if not isinstance(scores, tuple) or len(scores) != n:
        return f"must be a tuple of {n} sorted scores"
    q = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(q).all() or (n and not (q.min() >= 0 and q.max() <= 1)):
        return "must be P(fake) scores in [0, 1]"
    return "must be sorted" if (np.diff(q) < 0).any() else None


def fit_strength(scores, labels, *, fakes: Fakes, cap: float | None = None, sources=None) -> StrengthMap:
    """The map from P(fake) to a bounded LR, fitted on validation videos' scores and labels (1 = fake).

    Logistic calibration of logit(P(fake)) (below about 1,000 videos PAV overfits; it stays for measuring,
    `cllr_min`), with Platt's targets so that separable data give a finite slope, and the slope kept >= 0 (a
    higher score never argues for authenticity: a detector that ranks validation videos backwards gets LR 1, not
    a reversed meaning). The regression gives posterior log odds at the data's own share of fakes; subtracting
    ln(n_fake / n_real) makes them log LRs, independent of that share. Then the ELUB bounds (`elub`) of the
    fitted LRs of these same videos, and the `cap` on |log10 LR|: PSEUDO_CAP (below 10, weak support at most)
    for `fakes` "self-blended", because pseudo-fakes are not deepfakes; otherwise none unless given.
    `sources` (one per video; default: each video its own) says which videos are not independent: five fakes
    made from one real are one piece of evidence, not five. Each source of each class then weighs once in the
    fit, and counts, bounds and percentiles are of sources, each at its videos' median score.
    Raises UsageError for scores not in [0, 1], bad labels, one class only or sources not one per video;
    OptionError for a bad `fakes` or `cap`.
    """
    problem = options.declared(StrengthMap)["fakes"].problem(fakes)
    if problem:
        raise OptionError("fakes", problem)
    s, y = _scores(scores, labels, probabilities=True)
    groups = _groups(sources, y)
    weight = 1.0 / np.bincount(groups)[groups]
    medians = np.array([np.median(s[groups == g]) for g in range(groups.max() + 1)])
    y_group = np.zeros(len(medians), dtype=np.int64)
    y_group[groups] = y
    z = _logit(s)
    n_fake, n_real = int(y_group.sum()), int(len(y_group) - y_group.sum())
    slope, intercept = _logistic(z, y, weight)
    shift = intercept - math.log(n_fake / n_real)
    lower, upper = elub((slope * _logit(medians) + shift) / math.log(10), y_group)
    if cap is None:
        cap = PSEUDO_CAP if fakes == "self-blended" else NO_CAP
    return StrengthMap(fakes, slope, shift, lower, upper, cap, n_real, n_fake, _kept(medians[y_group == 0]),
                       _kept(medians[y_group == 1]))


def _groups(sources, y: np.ndarray) -> np.ndarray:
    """Per video, the index of its (source, label) group, numbered from 0; each video its own without `sources`.
    Raises UsageError unless `sources` has one entry per video."""
    if sources is None:
        return np.arange(len(y))
    keys = np.asarray(sources, dtype=object).ravel()
    if len(keys) != len(y):
        raise UsageError(f"{len(y)} scores but {len(keys)} sources")
    _, groups = np.unique(np.array([f"{label}:{key}" for key, label in zip(keys, y)]), return_inverse=True)
    return groups.astype(np.int64)
