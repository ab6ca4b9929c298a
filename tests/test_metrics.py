from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as sk

from fakefinder.metrics import (
    AucInterval,
    binary_log_loss,
    binary_metrics,
    bootstrap_auc,
    bootstrap_difference,
    direction,
    evaluate_scores,
    video_scores,
)

Y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.9, 0.6])


def test_frame_metrics_match_scikit_learn():
    m = binary_metrics(Y, P)
    assert m.accuracy == pytest.approx(sk.accuracy_score(Y, P >= 0.5))
    assert m.auc == pytest.approx(sk.roc_auc_score(Y, P))
    assert m.ap == pytest.approx(sk.average_precision_score(Y, P))
    assert m.log_loss == pytest.approx(sk.log_loss(Y, P))
    assert m.n == 8


def test_eer_by_hand():
    # Scores separate all but one pair: at the threshold 0.6 one real of four is called fake and one fake of
    # four is missed, so false positive rate = false negative rate = 0.25.
    assert binary_metrics(Y, P).eer == pytest.approx(0.25)
    assert binary_metrics([0, 1], [0.2, 0.9]).eer == 0.0


def test_log_loss_clips_like_dfdc():
    assert binary_metrics([1], [0.0]).log_loss == pytest.approx(-math.log(1e-15))
    assert binary_metrics([0, 1], [0.0, 1.0]).log_loss < 1e-12


def test_paired_difference_tells_apart_what_separate_intervals_cannot():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 60)
    shared = rng.normal(size=120)  # what the rows themselves make hard, common to both detectors
    better = y + shared + 0.3 * rng.normal(size=120)
    worse = y + shared + 0.9 * rng.normal(size=120)
    diff, low, high = bootstrap_difference(y, better, worse)
    assert diff == pytest.approx(sk.roc_auc_score(y, better) - sk.roc_auc_score(y, worse))
    assert 0 < low < diff < high
    assert bootstrap_auc(y, worse)[1] > bootstrap_auc(y, better)[0]  # apart, the two intervals overlap
    assert bootstrap_difference(y, better, better) == (0.0, 0.0, 0.0)
    p_better, p_worse = 1 / (1 + np.exp(-better)), 1 / (1 + np.exp(-worse))
    ll, ll_low, ll_high = bootstrap_difference(y, p_better, p_worse, metric="log_loss")
    assert ll == pytest.approx(binary_log_loss(y, p_better) - binary_log_loss(y, p_worse))
    assert ll_low <= ll <= ll_high < 0


def test_paired_difference_over_seeds_is_of_their_means():
    y = np.array([0, 0, 0, 1, 1, 1])
    a = np.array([[0.1, 0.2, 0.3, 0.6, 0.7, 0.8], [0.1, 0.7, 0.3, 0.6, 0.2, 0.8]])
    b = np.array([0.5, 0.4, 0.3, 0.2, 0.6, 0.1])
    means = np.mean([sk.roc_auc_score(y, s) for s in a]) - sk.roc_auc_score(y, b)
    assert bootstrap_difference(y, a, b, rounds=50)[0] == pytest.approx(means)
    assert all(math.isnan(v) for v in bootstrap_difference([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1]))
    with pytest.raises(ValueError, match="for 6 rows"):
        bootstrap_difference(y, a[:, :5], b)


def test_intervals_score_each_resample_as_sklearn_scores_the_rows_it_drew():
    """The resamples are scored all at once from how often each row was drawn: the interval must be the one that
    drawing the rows and scoring them one resample at a time gives, tied scores and one-class draws included."""
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 12)
    p = np.round(rng.random(12) + 0.3 * y, 1)  # ties

    def picks():
        draw = np.random.default_rng(4)
        return [draw.integers(0, 12, 12) for _ in range(300)]

    aucs = [sk.roc_auc_score(y[k], p[k]) for k in picks() if len(np.unique(y[k])) == 2]
    assert len(aucs) < 300  # some draws held one class and were left out
    assert bootstrap_auc(y, p, rounds=300, seed=4) == pytest.approx(tuple(np.percentile(aucs, [2.5, 97.5])))
    losses = [binary_log_loss(y[k], p[k]) - math.log(2) for k in picks()]  # against a coin, every draw counts
    _, low, high = bootstrap_difference(y, p, np.full(12, 0.5), metric="log_loss", rounds=300, seed=4)
    assert (low, high) == pytest.approx(tuple(np.percentile(losses, [2.5, 97.5])))
    with pytest.raises(ValueError, match="finite"):  # as roc_auc_score refuses them
        bootstrap_auc(y, np.r_[p[:-1], np.nan])


def test_intervals_resample_sources_whole_not_their_videos_apart():
    """Six videos of one source are one piece of evidence: drawn whole, they give the interval of the sources alone;
    drawn apart, an interval as narrow as if there were six times as many sources."""
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 15)
    p, q = (1 / (1 + np.exp(-(y - 0.5 + k * rng.normal(size=30)))) for k in (1.0, 1.5))  # two detectors' P(fake)
    names = rng.permutation([f"source {k}" for k in range(30)])  # met in an order that is not their sorted one
    y6, p6, q6, names6 = (np.repeat(v, 6) for v in (y, p, q, names))
    r = {"rounds": 200}
    assert bootstrap_auc(y6, p6, groups=names6, **r) == pytest.approx(bootstrap_auc(y, p, **r))
    for metric in ("auc", "log_loss"):
        assert bootstrap_difference(y6, p6, q6, metric=metric, groups=names6, **r) == pytest.approx(
            bootstrap_difference(y, p, q, metric=metric, **r))
    low, high = bootstrap_auc(y6, p6, **r)
    whole_low, whole_high = bootstrap_auc(y, p, **r)
    assert high - low < 0.6 * (whole_high - whole_low)
    assert bootstrap_auc(y, p, groups=names, **r) == bootstrap_auc(y, p, **r)  # a video a source: the same draws
    stated = AucInterval.of(y6, p6, list(names6), seed=2)  # what a card and `evaluate` state
    assert (stated.low, stated.high, stated.sources) == (*bootstrap_auc(y6, p6, groups=names6, seed=2), 30)
    assert AucInterval.of(y6[y6 == 1], p6[y6 == 1], list(names6[y6 == 1])) == AucInterval(None, None, 15)
    with pytest.raises(ValueError, match="5 groups for 30 rows"):
        bootstrap_auc(y, p, groups=names[:5])


def test_one_class_has_no_auc_but_still_a_log_loss():
    m = binary_metrics([1, 1, 1], [0.9, 0.8, 0.4])
    assert math.isnan(m.auc) and m.accuracy == pytest.approx(2 / 3) and m.to_dict()["auc"] is None


def test_video_level_means_and_confident_rule():
    ids = ["a"] * 5 + ["b"] * 5
    y = [1] * 5 + [0] * 5
    p = [0.9, 0.95, 0.85, 0.1, 0.2] + [0.1, 0.05, 0.1, 0.15, 0.1]
    names, vy, vp = video_scores(ids, y, p)
    assert names == ["a", "b"] and vy.tolist() == [1, 0] and vp == pytest.approx([0.6, 0.1])
    _, _, conf = video_scores(ids, y, p, rule="confident")
    assert conf == pytest.approx([0.9, 0.1])  # 3 of 5 confident fakes (> 40%): their mean
    # Two people in video a, one swapped: the rule over each face track, and the most suspicious track decides
    _, _, tracked = video_scores(ids, y, p, tracks=[0, 0, 0, 1, 1] + [0, 1, 0, 1, 0])
    assert tracked == pytest.approx([0.9, np.mean([0.1, 0.1, 0.1])])
    _, _, one = video_scores(ids, y, p, tracks=[3] * 10)
    assert one == pytest.approx(vp)  # one track: the rule over the whole video


def test_evaluation_confusion_and_no_face_count():
    ev = evaluate_scores(["a", "a", "b", "c"], [1, 1, 0, 0], [0.9, 0.7, 0.6, 0.2], no_face_videos=2)
    assert ev.confusion == ((1, 1), (0, 1)) and ev.video.n == 3 and ev.frame.n == 4
    assert ev.to_dict()["no_face_videos"] == 2


@pytest.mark.parametrize("key, way", [("val_video_auc", "maximize"), ("val_video_log_loss", "minimize"),
                                      ("val_video_log_loss_uncalibrated", "minimize"),
                                      ("test_frame_ece_uncalibrated", "minimize"), ("val_false_alarm_rate", "minimize"),
                                      ("val_video_ap", "maximize"), ("wall_seconds", "minimize"),
                                      ("train_loss", "minimize"), ("val_accuracy", "maximize")])
def test_every_tracked_metric_knows_which_way_is_better(key, way):
    assert direction(key) == way
