"""The calibration map fitted on validation logits: sound on overconfident models, finite on separable data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from fakefinder.models.calibration import choose_verdict, fit_calibration


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_an_overconfident_model_gets_a_lower_log_loss(method):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    logits = 8 * (y - 0.5) + rng.normal(0, 4, 2000)  # right on average, far too sure of itself
    cal = fit_calibration(logits[:1000], y[:1000], method)
    raw = log_loss(y[1000:], 1 / (1 + np.exp(-logits[1000:])))
    calibrated = log_loss(y[1000:], cal.apply(logits[1000:]))
    assert cal.scale < 1 and calibrated < raw - 0.03, (cal, raw, calibrated)


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_a_perfectly_separated_validation_part_gives_a_finite_scale(method):
    """Hard 0/1 targets would push the scale to its bound (and past it by rounding): one failed trial in the demo."""
    y = np.array([0] * 12 + [1] * 12)
    logits = np.where(y == 1, 1.0, -1.0) + np.linspace(-0.5, 0.5, 24)  # apart, yet at scale 1 not sure
    cal = fit_calibration(logits, y, method)
    assert 0.1 < cal.scale < 10, cal
    p = cal.apply(logits)
    assert 0.85 < p[y == 1].min() and p[y == 0].max() < 0.15  # still sure, not infinitely so


def _videos() -> tuple[np.ndarray, np.ndarray]:
    """40 real and 40 fake validation videos whose scores overlap."""
    rng = np.random.default_rng(3)
    vy = np.repeat([0, 1], 40)
    return vy, np.clip(rng.normal(0.35 + 0.3 * vy, 0.15), 0, 1)


@pytest.mark.parametrize("target", [0.0, 0.05, 0.2])
def test_a_target_false_alarm_rate_gives_the_lowest_threshold_that_keeps_to_it(target):
    vy, vp = _videos()
    verdict = choose_verdict(vy, vp, video_rule="mean", threshold="eer", target_fpr=target)
    flagged = vp >= verdict.threshold
    assert verdict.rule == f"fpr={target:g}" and verdict.false_alarm_rate == flagged[vy == 0].mean() <= target
    assert verdict.detection_rate == flagged[vy == 1].mean() and (verdict.real_videos, verdict.fake_videos) == (40, 40)
    # the next lower score would flag one more real video than the target allows (or it flags no more fakes)
    lower = vp[vp < verdict.threshold].max()
    assert (vp[vy == 0] >= lower).mean() > target or (vp[vy == 1] >= lower).mean() == flagged[vy == 1].mean()


def test_the_equal_error_threshold_lies_between_two_scores_and_balances_the_errors():
    vy, vp = _videos()
    verdict = choose_verdict(vy, vp, video_rule="mean", threshold="eer", target_fpr=None, band=0.05)
    assert verdict.rule == "eer" and verdict.band == 0.05 and verdict.video_rule == "mean"
    assert not np.isin(verdict.threshold, vp)  # halfway to the next score: a margin on both sides
    assert abs(verdict.false_alarm_rate - (1 - verdict.detection_rate)) <= 1 / 40 + 1e-9


def test_a_fixed_threshold_is_kept_and_described_and_no_videos_leave_the_rates_unknown():
    vy, vp = _videos()
    fixed = choose_verdict(vy, vp, video_rule="mean", threshold=0.7, target_fpr=None)
    assert (fixed.threshold, fixed.rule) == (0.7, "fixed")
    assert fixed.false_alarm_rate == (vp[vy == 0] >= 0.7).mean()
    # one class only: neither the equal error rate nor a target can be chosen, so 0.5 stands
    reals = choose_verdict(vy[vy == 0], vp[vy == 0], video_rule="mean", threshold="eer", target_fpr=0.1)
    assert (reals.threshold, reals.rule, reals.detection_rate) == (0.5, "fixed", None)
    empty = choose_verdict(np.zeros(0), np.zeros(0), video_rule="mean", threshold="eer", target_fpr=None)
    assert empty.threshold == 0.5 and empty.false_alarm_rate is None and empty.real_videos is None
