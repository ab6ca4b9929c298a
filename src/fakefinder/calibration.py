"""Calibrated probabilities and an explained threshold, both chosen on the validation part only.

A detector trained on balanced data and early-stopped on its loss is rarely calibrated: on another
collection it is often confidently wrong, and log loss (the DFDC metric) punishes exactly that. Temperature
scaling (one scale on the logit) keeps the ranking and fixes the confidence; Platt scaling also shifts it.
The map is fitted on the validation crops' logits; the threshold is then chosen on the validation videos'
calibrated scores (equal error rate, or at most a target share of real videos flagged) and described by what
it does on them.
"""

from __future__ import annotations

import numpy as np

from .metrics import video_scores
from .modelcard import Calibration, Verdict


def _nll(z: np.ndarray, y: np.ndarray, scale: float, shift: float) -> float:
    s = scale * z + shift
    return float(np.mean(np.logaddexp(0, s) - y * s))  # -log sigmoid(s) for fakes, -log(1 - sigmoid(s)) else


def fit_calibration(logits, labels, method: str) -> Calibration:
    """The map that minimises the validation crops' log loss; identity when there is nothing to fit on."""
    from scipy.optimize import minimize

    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if method == "none" or len(z) < 2 or len(np.unique(y)) < 2:
        return Calibration()
    if method == "temperature":
        fit = minimize(lambda v: _nll(z, y, float(np.exp(v[0])), 0.0), x0=[0.0], method="L-BFGS-B",
                       bounds=[(np.log(1e-4), np.log(1e4))])
        return Calibration("temperature", float(np.exp(fit.x[0])), 0.0)
    fit = minimize(lambda v: _nll(z, y, float(np.exp(v[0])), float(v[1])), x0=[0.0, 0.0], method="L-BFGS-B",
                   bounds=[(np.log(1e-4), np.log(1e4)), (-100, 100)])
    return Calibration("platt", float(np.exp(fit.x[0])), float(fit.x[1]))


def choose_verdict(video_ids, labels, p, *, video_rule: str, threshold: float | str,
                   target_fpr: float | None) -> Verdict:
    """The video threshold: fixed, at the validation equal error rate, or the lowest that flags at most
    `target_fpr` of real validation videos; with the rates it gives on those videos."""
    from sklearn.metrics import roc_curve

    _, vy, vp = video_scores(video_ids, labels, p, rule=video_rule)
    both = len(vy) > 0 and len(np.unique(vy)) == 2
    if target_fpr is not None and both:
        fpr, tpr, cuts = roc_curve(vy, vp, drop_intermediate=False)
        ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
        i = ok[np.argmax(tpr[ok])]
        value, rule = float(min(1.0, cuts[i])), f"fpr={target_fpr:g}"
    elif threshold == "eer" and both:
        fpr, tpr, cuts = roc_curve(vy, vp, drop_intermediate=False)
        i = int(np.argmin(np.abs(fpr - (1 - tpr))))
        # Halfway to the next lower validation score: the same rates on validation, and a margin on both sides
        # for new videos (the cut itself is a fake's score: a model that separates well would put 0.999 there).
        value, rule = float(min(1.0, (cuts[i] + cuts[i + 1]) / 2 if i + 1 < len(cuts) else cuts[i])), "eer"
    else:
        value, rule = (0.5, "fixed") if isinstance(threshold, str) else (float(threshold), "fixed")
    if not len(vy):
        return Verdict(value, rule, video_rule)
    flagged = vp >= value
    real, fake = vy == 0, vy == 1
    return Verdict(value, rule, video_rule, float(flagged[real].mean()) if real.any() else None,
                   float(flagged[fake].mean()) if fake.any() else None)
