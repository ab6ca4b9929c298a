"""Strength of evidence: the verbal scale's every edge, the headline and colour, Cllr, and the score-to-LR map
with its ELUB bounds, its cap for pseudo-fakes, its percentiles, its card form and its sentence."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from fakefinder.errors import OptionError, UsageError
from fakefinder.metrics import binary_metrics
from fakefinder.models.strength import (
    BANDS,
    KEPT,
    PSEUDO_CAP,
    Strength,
    StrengthMap,
    cllr,
    cllr_min,
    colour,
    eer,
    elub,
    fit_strength,
    headline,
    support,
)

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


def _benefit_bounds(log10_lrs, y, *, step=1e-4):
    """ELUB by brute force over a grid of thresholds: the first t (log10) away from 0 where the system, with one
    misleading pseudo-observation per proposition, no longer beats LR 1 in expected benefit."""
    lrs, y = np.asarray(log10_lrs), np.asarray(y)
    fake, real = lrs[y == 1], lrs[y == 0]

    def wins(t):  # per unit of the authentic prior: C_fake / 10^t + C_real against max(1, 1/10^t)
        c_fake = (fake > t).sum() / (len(fake) + 1)
        c_real = (real < t).sum() / (len(real) + 1)
        return c_fake / 10**t + c_real > max(1.0, 1 / 10**t)

    grid = np.arange(step, 6, step)
    upper = next(t for t in grid if not wins(t))
    lower = next(-t for t in grid if not wins(-t))
    return lower, upper


def test_elub_is_where_the_benefit_falls_to_that_of_saying_nothing():
    rng = np.random.default_rng(3)
    y = np.array([0] * 40 + [1] * 25)
    lrs = np.where(y == 1, rng.normal(1.0, 0.8, 65), rng.normal(-0.8, 0.8, 65))
    lower, upper = elub(lrs, y)
    brute_lower, brute_upper = _benefit_bounds(lrs, y)
    assert upper == pytest.approx(brute_upper, abs=2e-4) and lower == pytest.approx(brute_lower, abs=2e-4)
    assert 0 < upper < math.log10(40 + 1) and -math.log10(25 + 1) < lower < 0


def test_elub_of_separated_lrs_comes_to_the_counts():
    y = np.array([0] * 300 + [1] * 50)
    lower, upper = elub(np.where(y == 1, 8.0, -8.0), y)
    assert upper == pytest.approx(math.log10(301 * 50 / 51))  # about n_real + 1
    assert lower == pytest.approx(-math.log10(51 * 300 / 301))  # about 1/(n_fake + 1)
    assert elub(np.where(y == 1, np.inf, -np.inf), y) == (lower, upper)  # infinite LRs: the same bounds


def test_elub_of_a_system_no_better_than_saying_nothing_closes_on_one():
    y = np.array([0] * 30 + [1] * 30)
    assert elub(np.zeros(60), y) == (0.0, 0.0)
    assert elub(np.where(y == 1, -2.0, 2.0), y) == (0.0, 0.0)  # backwards
    with pytest.raises(UsageError):
        elub([np.nan, 1.0], [0, 1])


@pytest.fixture(scope="module")
def separated():
    p, y = _gaussians(300, 300, apart=4.0, seed=4)
    return fit_strength(p, y, fakes="real"), p, y


def test_the_lr_rises_with_the_score_within_the_bounds(separated):
    m, _, _ = separated
    grid = np.linspace(0, 1, 401)
    lrs = m.likelihood_ratios(grid)
    assert (np.diff(lrs) >= 0).all() and lrs[-1] > 10 * lrs[200] > 100 * lrs[0]
    assert 1 / (m.n_fake + 1) < lrs.min() and lrs.max() < m.n_real + 1
    middle = (lrs > lrs.min()) & (lrs < lrs.max())
    assert middle.sum() > 100 and (np.diff(lrs[middle]) > 0).all()  # strictly, where unbounded
    assert [m.assess(float(v)).likelihood_ratio for v in grid[::40]] == pytest.approx(lrs[::40].tolist())
    top, bottom, even = m.assess(1.0), m.assess(1e-12), m.assess(0.5)
    assert top.bounded and top.limit == "validation" and top.likelihood_ratio == pytest.approx(10**m.log10_upper)
    assert bottom.bounded and bottom.likelihood_ratio == pytest.approx(10**m.log10_lower)
    assert not even.bounded and even.limit == "none" and 0.5 < even.likelihood_ratio < 2


def test_the_fitted_lrs_are_calibrated_on_new_videos(separated):
    m, _, _ = separated
    p, y = _gaussians(2000, 2000, apart=4.0, seed=5)
    assert cllr(m.likelihood_ratios(p), y) < cllr_min(p, y) + 0.1 < 0.5


def test_the_lr_does_not_depend_on_the_share_of_fakes_in_validation():
    """The regression's posterior odds carry the validation prior; the map divides it out: ten times fewer fakes
    leave the LRs as they were (without the correction they would fall tenfold)."""
    p, y = _gaussians(3000, 3000, apart=2.0, seed=9)
    few = (y == 0) | (np.arange(len(y)) % 10 == 0)
    grid = np.array([0.3, 0.5, 0.7])
    balanced, skewed = fit_strength(p, y, fakes="real"), fit_strength(p[few], y[few], fakes="real")
    assert skewed.n_fake == 300 and skewed.likelihood_ratios(grid) == pytest.approx(balanced.likelihood_ratios(grid),
                                                                                    rel=0.1)


def test_fakes_of_one_source_count_once():
    """Five fakes made from one real are one piece of evidence: with sources, counts, bounds and percentiles are
    of sources; five identical copies of each fake change nothing; without sources every video counts."""
    p, y = _gaussians(40, 40, apart=14.0, seed=11)  # separated: only the counts limit the LR
    fakes = np.flatnonzero(y == 1)
    copies = np.concatenate([np.flatnonzero(y == 0), np.repeat(fakes, 5)])
    sources = [f"r{i}" if y[i] == 0 else f"f{i}" for i in copies]
    grouped = fit_strength(p[copies], y[copies], fakes="real", sources=sources)
    once = fit_strength(p, y, fakes="real")
    assert (grouped.n_real, grouped.n_fake) == (once.n_real, once.n_fake) == (40, 40)
    assert grouped.log10_lower == pytest.approx(once.log10_lower) and grouped.slope == pytest.approx(once.slope,
                                                                                                    rel=1e-4)
    assert grouped.fake_scores == once.fake_scores
    each = fit_strength(p[copies], y[copies], fakes="real")
    assert each.n_fake == 200 and each.log10_lower < grouped.log10_lower - 0.5  # claims five times the evidence
    with pytest.raises(UsageError, match="80 scores but 3 sources"):
        fit_strength(p, y, fakes="real", sources=["a", "b", "c"])


def test_separable_validation_videos_give_a_finite_slope():
    m = fit_strength([0.4, 0.1, 0.3, 0.2, 0.5, 0.9, 0.6, 0.8, 0.7], [0] * 4 + [1] * 5, fakes="real")
    assert 0.2 < m.slope < 5 and math.isfinite(m.shift)
    assert m.log10_upper < math.log10(5) and m.log10_lower > -math.log10(6)


def test_three_hundred_real_videos_support_at_most_moderately_strong():
    p, y = _gaussians(300, 3000, apart=14.0, seed=6)  # never overlapping: only the counts limit the LR
    m = fit_strength(p, y, fakes="real")
    top = m.assess(1.0)
    assert top.likelihood_ratio < 301 and top.support == "moderately strong support for manipulation"
    assert top.bounded and "cannot support more" in top.sentence()
    # 3000 fakes allow more the other way
    assert m.assess(0.0).support == "strong support for authenticity"
    assert 1 / m.assess(0.0).likelihood_ratio < 3001


def test_self_blended_fakes_support_at_most_weak_evidence():
    p, y = _gaussians(300, 3000, apart=14.0, seed=6)
    m = fit_strength(p, y, fakes="self-blended")
    assert m.cap == PSEUDO_CAP and 10**m.cap < 10
    top, bottom = m.assess(1.0), m.assess(0.0)
    assert top.support == "weak support for manipulation" and top.limit == "pseudo-fakes" and top.bounded
    assert bottom.support == "weak support for authenticity" and bottom.limit == "pseudo-fakes"
    assert colour(top.likelihood_ratio) == "amber" == colour(bottom.likelihood_ratio)
    assert "not deepfakes" in top.sentence() and "self-blended (pseudo-fake) validation videos" in top.sentence()
    with pytest.raises(OptionError, match="cap"):
        fit_strength(p, y, fakes="self-blended", cap=2.0)
    with pytest.raises(OptionError, match="cap"):
        dataclasses.replace(m, cap=1.0)
    assert fit_strength(p, y, fakes="real", cap=1.0).assess(1.0).limit == "pseudo-fakes"  # a cap given


def test_percentiles_on_a_hand_made_example():
    reals, fakes = [0.4, 0.1, 0.3, 0.2], [0.5, 0.9, 0.6, 0.8, 0.7]
    m = fit_strength(reals + fakes, [0] * 4 + [1] * 5, fakes="real")
    assert m.real_scores == (0.1, 0.2, 0.3, 0.4) and m.n_real == 4 and m.n_fake == 5
    for score, real, fake in ((0.3, 0.5, 0.0), (0.65, 1.0, 0.4), (0.5, 1.0, 0.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                              (0.05, 0.0, 0.0), (0.31, 0.75, 0.0), (0.9, 1.0, 0.8)):
        got = m.assess(score)
        assert (got.real_percentile, got.fake_percentile) == (real, fake), score


def test_percentiles_of_many_videos_keep_their_resolution():
    rng = np.random.default_rng(7)
    reals, fakes = rng.beta(2, 5, 20_000), rng.beta(5, 2, 700)
    m = fit_strength(np.concatenate([reals, fakes]), [0] * 20_000 + [1] * 700, fakes="real")
    assert len(m.real_scores) == len(m.fake_scores) == KEPT
    assert m.real_scores[0] == reals.min() and m.real_scores[-1] == reals.max()
    for score in np.linspace(0, 1, 97):
        got = m.assess(float(score))
        assert abs(got.real_percentile - (reals < score).mean()) <= 1 / (KEPT - 1) + 1 / 20_000, score
        assert abs(got.fake_percentile - (fakes < score).mean()) <= 1 / (KEPT - 1) + 1 / 700, score
    assert len(json.dumps(m.to_dict())) < 30_000


@pytest.mark.parametrize("n_real", [4, 20_000])
def test_a_map_round_trips_through_its_json_form(n_real):
    rng = np.random.default_rng(8)
    p = np.concatenate([rng.beta(2, 5, n_real), rng.beta(5, 2, 30)])
    m = fit_strength(p, [0] * n_real + [1] * 30, fakes="both")
    back = StrengthMap.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back == m and back.assess(0.42) == m.assess(0.42)
    assert Strength(**json.loads(json.dumps(m.assess(0.42).to_dict()))) == m.assess(0.42)


@pytest.mark.parametrize("change, name", [
    ({"n_real": -1}, "n_real"), ({"n_fake": 0}, "n_fake"), ({"n_real": 2.5}, "n_real"), ({"slope": "NaN"}, "slope"),
    ({"slope": float("nan")}, "slope"), ({"shift": float("inf")}, "shift"), ({"slope": -1.0}, "slope"),
    ({"fakes": "deepfakes"}, "fakes"), ({"cap": -0.5}, "cap"), ({"log10_upper": 3.0}, "log10_upper"),
    ({"log10_lower": -0.8}, "log10_lower"), ({"real_scores": [0.1, float("nan"), 0.3, 0.4]}, "real_scores"),
    ({"real_scores": [0.4, 0.3, 0.2, 0.1]}, "real_scores"), ({"fake_scores": [0.5]}, "fake_scores"),
    ({"fake_scores": "0.5"}, "fake_scores"), ({"real_scores": [0.1, 0.2, 0.3, 1.5]}, "real_scores"),
    ({"real_scores": [0.1, True, 0.3, 0.4]}, "real_scores"), ({"colour": "red"}, "colour")])
def test_a_map_refuses_bad_values(change, name):
    m = fit_strength([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9], [0, 0, 0, 0, 1, 1, 1, 1], fakes="real")
    values = m.to_dict() | change
    with pytest.raises(OptionError) as caught:
        StrengthMap.from_dict(values, prefix="strength.")
    assert caught.value.problems[0][0] == f"strength.{name}", caught.value.problems


def test_a_map_refuses_missing_fields_and_non_objects():
    m = fit_strength([0.1, 0.9], [0, 1], fakes="real")
    values = m.to_dict()
    del values["n_fake"], values["fake_scores"]
    with pytest.raises(OptionError, match="n_fake is missing; fake_scores is missing"):
        StrengthMap.from_dict(values)
    with pytest.raises(OptionError, match="strength must be an object"):
        StrengthMap.from_dict([1, 2])
    with pytest.raises(OptionError, match="n_real"):
        dataclasses.replace(m, n_real=-1)


@pytest.mark.parametrize("scores, labels, match", [
    ([0.1, 1.2], [0, 1], r"\[0, 1\]"), ([0.1, math.nan], [0, 1], "finite"), ([0.1, 0.2], [1, 1], "both"),
    ([0.1, 0.2], [0, 1, 1], "labels")])
def test_fit_refuses_what_it_cannot_fit(scores, labels, match):
    with pytest.raises(UsageError, match=match):
        fit_strength(scores, labels, fakes="real")


def test_a_fit_refuses_an_unknown_kind_of_fakes_and_assess_a_bad_score(separated):
    with pytest.raises(OptionError, match="fakes"):
        fit_strength([0.1, 0.9], [0, 1], fakes="deepfakes")
    m, _, _ = separated
    for bad in (-0.1, 1.1, math.nan, "0.5", None):
        with pytest.raises(UsageError, match="P\\(fake\\)"):
            m.assess(bad)


def test_the_sentence_in_both_directions():
    forward = Strength(2.1, False, 0.81, 0.3, support(2.1), 300, 200, "real", "none")
    assert forward.sentence() == (
        "Scores like this are 2.1 times as common among the model's manipulated validation videos as among its real "
        "ones (higher than 81% of real validation videos): weak support for manipulation.")
    back = Strength(1 / 45, False, 0.29, 0.12, support(1 / 45), 300, 200, "real", "none")
    assert back.sentence() == (
        "Scores like this are 45 times as common among the model's real validation videos as among its manipulated "
        "ones (higher than 12% of manipulated validation videos): moderate support for authenticity.")
    even = Strength(1.02, False, 0.5, 0.4, support(1.02), 300, 200, "real", "none")
    assert even.sentence().startswith("Scores like this are as common among the model's manipulated validation "
                                      "videos as among its real ones (higher than 50% of real")
    assert even.sentence().endswith(": no support either way.")
    capped = Strength(4500.0, True, 1.0, 0.999, support(4500.0), 9000, 800, "both", "validation")
    assert capped.sentence() == (
        "Scores like this are 4,500 times as common among the model's manipulated or self-blended validation videos "
        "as among its real ones (higher than 100% of real validation videos): strong support for manipulation. "
        "Its validation videos (9000 real and 800 manipulated or self-blended sources) cannot support more than "
        "this.")


def test_a_fitted_sentence_states_the_assessed_numbers(separated):
    m, _, _ = separated
    for score in (0.15, 0.3, 0.7, 0.9):
        got = m.assess(score)
        text = got.sentence()
        times = max(got.likelihood_ratio, 1 / got.likelihood_ratio)
        shown = f"{times:.1f}" if times < 9.95 else f"{float(f'{times:.2g}'):,.0f}"
        share = got.real_percentile if got.likelihood_ratio >= 1 else got.fake_percentile
        assert f" {shown} times as common" in text and f"higher than {math.floor(100 * share + 1e-9)}%" in text
        assert f": {got.support}." in text and ("cannot support more" in text) == got.bounded
        assert ("manipulated validation videos as among its real ones" in text) == (got.likelihood_ratio >= 1)


def test_a_strength_refuses_words_that_do_not_match_its_ratio():
    with pytest.raises(OptionError, match="support"):
        Strength(2.1, False, 0.81, 0.3, "strong support for manipulation", 300, 200, "real", "none")
    with pytest.raises(OptionError, match="bounded"):
        Strength(2.1, True, 0.81, 0.3, support(2.1), 300, 200, "real", "none")
    with pytest.raises(OptionError, match="likelihood_ratio"):
        Strength(0.0, False, 0.81, 0.3, support(2.1), 300, 200, "real", "none")
