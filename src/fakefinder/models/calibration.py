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

from ..metrics import eer_crossing
from .modelcard import Calibration, Verdict


def _nll(z: np.ndarray, t: np.ndarray, scale: float, shift: float) -> float:
    s = scale * z + shift
    return float(np.mean(np.logaddexp(0, s) - t * s))  # cross-entropy of sigmoid(s) against targets t


def fit_calibration(logits, labels, method: str) -> Calibration:
    """The map that minimises the validation crops' log loss; identity when there is nothing to fit on.

    The targets are Platt's (n+ + 1)/(n+ + 2) for fakes and 1/(n- + 2) for reals, not 1 and 0: a validation
    part the model separates perfectly would otherwise drive the scale to its bound, making every later
    mistake infinitely confident. With hundreds of validation crops the targets are within 1% of 1 and 0.
    """
    from scipy.optimize import minimize

    from ..options import declared

    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if method == "none" or len(z) < 2 or len(np.unique(y)) < 2:
        return Calibration()
    fakes, reals = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y == 1, (fakes + 1) / (fakes + 2), 1 / (reals + 2))
    scale_d, shift_d = declared(Calibration)["scale"].option, declared(Calibration)["shift"].option
    log_scale = (np.log(scale_d.low), np.log(scale_d.high))
    n = 1 if method == "temperature" else 2
    fit = minimize(lambda v: _nll(z, t, float(np.exp(v[0])), float(v[1]) if n == 2 else 0.0), x0=[0.0] * n,
                   method="L-BFGS-B", bounds=[log_scale, (shift_d.low, shift_d.high)][:n])
    scale = float(np.clip(np.exp(fit.x[0]), scale_d.low, scale_d.high))  # exp(log(b)) may overshoot b
    return Calibration(method, scale, float(fit.x[1]) if n == 2 else 0.0)


def choose_verdict(vy: np.ndarray, vp: np.ndarray, *, video_rule: str, threshold: float | str,
                   target_fpr: float | None, band: float = 0.0) -> Verdict:
    """The video threshold over the validation videos' labels `vy` and calibrated scores `vp` (combined by
    `video_rule`, which the verdict records): fixed, at their equal error rate, or the lowest that flags at most
    `target_fpr` of the real ones; with the rates it gives on those videos and how many they were, and the
    inconclusive `band` around it."""
    from sklearn.metrics import roc_curve

    vy, vp = np.asarray(vy), np.asarray(vp, dtype=np.float64)
    both = len(vy) > 0 and len(np.unique(vy)) == 2
    if target_fpr is not None and both:
        fpr, tpr, cuts = roc_curve(vy, vp, drop_intermediate=False)
        ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
        i = ok[np.argmax(tpr[ok])]
        value, rule = float(min(1.0, cuts[i])), f"fpr={target_fpr:g}"
    elif threshold == "eer" and both:
        i, _, _, cuts = eer_crossing(vy, vp)
        # Halfway to the next lower validation score: the same rates on validation, and a margin on both sides
        # for new videos (the cut itself is a fake's score: a model that separates well would put 0.999 there).
        value, rule = float(min(1.0, (cuts[i] + cuts[i + 1]) / 2 if i + 1 < len(cuts) else cuts[i])), "eer"
    else:
        value, rule = (0.5, "fixed") if isinstance(threshold, str) else (float(threshold), "fixed")
    if not len(vy):
        return Verdict(value, rule, video_rule, band=band)
    flagged = vp >= value
    real, fake = vy == 0, vy == 1
    return Verdict(value, rule, video_rule, float(flagged[real].mean()) if real.any() else None,
                   float(flagged[fake].mean()) if fake.any() else None, int(real.sum()), int(fake.sum()), band)
