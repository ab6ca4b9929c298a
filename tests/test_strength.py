"""Strength of evidence: the verbal scale's every edge, the headline and colour, Cllr, and the score-to-LR map
with its ELUB bounds, its cap for pseudo-fakes, its percentiles, its card form and its sentence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fakefinder.errors import UsageError
from fakefinder.models.strength import BANDS, colour, headline, support

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
