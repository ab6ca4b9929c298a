"""The calibration map fitted on validation logits: sound on overconfident models, finite on separable data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from fakefinder.models.calibration import fit_calibration


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
