"""Strength of evidence: the verbal scale's every edge, the headline and colour, Cllr, and the score-to-LR map
with its ELUB bounds, its cap for pseudo-fakes, its percentiles, its card form and its sentence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fakefinder.errors import UsageError
from fakefinder.metrics import binary_metrics
from fakefinder.models.strength import BANDS, cllr, cllr_min, colour, eer, headline, support

UP = 1 + 1e-9  # just past an edge, well beyond rounding
DOWN = 1 - 1e-9


@pytest.mark.parametrize("i", range(len(BANDS)))
def test_every_band_edge_both_sides_and_on_it(i):
    edge, words = BANDS[i]
    for way, at, inside, outside in (("manipulation", edge, UP, DOWN), ("authenticity", 1 / edge, DOWN, UP)):
        below = f"{BANDS[i - 1][1]} support for {way}" if i else "no support either way"
        assert support(at * outside) == below, (way, at)
        assert support(at) == f"{words} support for {way}", (way, at)
        assert support(at * inside) == f"{words} support for {way}", (way, at)


@pytest.mark.parametrize("lr, words", [
    (1.0, "no support either way"), (1.999, "no support either way"), (0.5001, "no support either way"),
    (2.0, "weak support for manipulation"), (0.5, "weak support for authenticity"),
    (9.99, "weak support for manipulation"), (10.0, "moderate support for manipulation"),
    (0.1, "moderate support for authenticity"), (0.1001, "weak support for authenticity"),
    (1e6, "extremely strong support for manipulation"), (1e-6, "extremely strong support for authenticity"),
    (1e300, "extremely strong support for manipulation"), (1e-300, "extremely strong support for authenticity")])
def test_the_scale_in_plain_numbers(lr, words):
    assert support(lr) == words


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, "2", True, None])
def test_what_is_not_a_likelihood_ratio_is_refused(bad):
    for f in (support, headline, colour):
        with pytest.raises(UsageError):
            f(bad)


def test_headline_edges():
    assert headline(3.0) == "FAKE" and headline(3.0 * DOWN) == "INCONCLUSIVE"
    assert headline(1 / 3) == "REAL" and headline(1 / 3 * UP) == "INCONCLUSIVE"
    assert headline(1.0) == "INCONCLUSIVE"
    assert headline(9.0, conclusive=10) == "INCONCLUSIVE" and headline(10.0, conclusive=10) == "FAKE"
    assert headline(0.1, conclusive=10) == "REAL" and headline(0.1 * UP, conclusive=10) == "INCONCLUSIVE"
    for bad in (1.0, 0.5, math.inf, math.nan):
        with pytest.raises(UsageError, match="conclusive"):
            headline(2.0, conclusive=bad)


def test_colour_edges():
    assert colour(10.0) == "red" and colour(10.0 * DOWN) == "amber"
    assert colour(0.1) == "green" and colour(0.1 * UP) == "amber"
    assert colour(1.0) == colour(3.0) == colour(1 / 3) == "amber"
    assert colour(1e9) == "red" and colour(1e-9) == "green"


def _gaussians(n_real: int, n_fake: int, *, apart: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Video P(fake) whose logits are N(-apart/2, 1) for reals and N(+apart/2, 1) for fakes."""
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.normal(-apart / 2, 1, n_real), rng.normal(apart / 2, 1, n_fake)])
    return 1 / (1 + np.exp(-z)), np.array([0] * n_real + [1] * n_fake)


def test_cllr_of_perfect_neutral_and_inverted_lrs():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert cllr(np.where(y == 1, 1e12, 1e-12), y) < 1e-9
    assert cllr(np.where(y == 1, math.inf, 0.0), y) == 0.0
    assert cllr(np.ones(6), y) == 1.0  # exactly: saying nothing costs one bit
    assert cllr(np.ones(6001), np.arange(6001) % 2) == 1.0
    inverted = cllr(np.where(y == 1, 0.1, 10.0), y)
    assert inverted == pytest.approx(math.log2(11)) and inverted > 1
    assert cllr(np.where(y == 1, 0.0, 1.0), y) == math.inf  # a fake called impossible
    # the textbook value: LR 4 for every fake and 1/4 for every real costs log2(1.25) bits
    assert cllr(np.where(y == 1, 4.0, 0.25), y) == pytest.approx(math.log2(1.25), abs=1e-12)


def test_cllr_refuses_what_it_cannot_measure():
    with pytest.raises(UsageError, match="both real and fake"):
        cllr([2.0, 3.0], [1, 1])
    with pytest.raises(UsageError, match=">= 0"):
        cllr([-1.0, 3.0], [0, 1])
    with pytest.raises(UsageError, match=">= 0"):
        cllr([math.nan, 3.0], [0, 1])
    with pytest.raises(UsageError, match="labels"):
        cllr([1.0, 3.0], [0, 2])
    with pytest.raises(UsageError, match="2 likelihood ratios but 3 labels"):
        cllr([1.0, 3.0], [0, 1, 1])


def test_cllr_min_separates_discrimination_from_calibration():
    p, y = _gaussians(400, 400, apart=2.0)
    z = np.log(p / (1 - p))
    right = cllr(np.exp(2 * z), y)  # N(+-1, 1): the true LR of a logit z is e^(2z), calibrated by construction
    overconfident = cllr(np.exp(8 * z), y)
    shifted = cllr(np.exp(2 * z) * 20, y)
    floor = cllr_min(p, y)
    assert floor <= right < overconfident and floor <= shifted
    assert right - floor < 0.06 < overconfident - floor and shifted - floor > 0.2
    assert cllr_min(np.exp(8 * z), y) == pytest.approx(floor)  # a monotone map leaves it unchanged
    assert cllr_min(p[::-1], y[::-1]) == pytest.approx(floor)  # so does the order of rows


def test_cllr_min_of_an_uninformative_score_is_about_one_and_of_a_separating_one_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    assert 0.95 < cllr_min(rng.random(2000), y) <= 1.0
    assert cllr_min(np.full(2000, 0.7), y) == pytest.approx(1.0)  # all tied: one pool, LR 1
    assert cllr_min([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0  # infinite PAV LRs, right ones: free


def test_cllr_min_pools_tied_scores():
    """Tied scores share one LR whatever the order of their rows: here the tie holds a real and a fake, so PAV's
    LRs are 0, 1, 1, inf and Cllr_min is exactly 1/2 (a stable sort without pooling would separate them: 0)."""
    s = [0.1, 0.5, 0.5, 0.9]
    assert cllr_min(s, [0, 0, 1, 1]) == cllr_min(s, [0, 1, 0, 1]) == 0.5


def test_eer_agrees_with_the_metrics_module():
    p, y = _gaussians(300, 200, apart=2.0, seed=2)
    assert eer(p, y) == pytest.approx(binary_metrics(y, p).eer)
    assert eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert eer([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 1.0
