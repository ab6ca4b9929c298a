"""Do the bootstrap intervals of a video AUC cover the truth 95% of the time? Resampling videos one by one, and
resampling whole units (`fakefinder.metrics.bootstrap_auc(groups=...)`), on synthetic scores shaped like the
bench's collections, where the truth is known.

    python bench/intervals.py [--trials 200]

Two designs, each with a unit effect shared by every score of a unit (a person, a scene, a frame):
- `pairs`: 16 units, each 2 reals and 3 fakes made from them (xdev's FF++ pairs; DFDC's fake beside its real).
- `duplicates`: 100 units of one class each, 2 near-duplicates (xdev's real face crops: two frames a video).
Per design and unit effect: the true AUC (of a sample of 300 collections pooled), then, over the trials, how often
each interval held it and its mean width. Then the time one interval takes (1,000 resamples), against scoring
each resample's drawn rows with `roc_auc_score`, as the library did until 2026-12-06: the same draws, so the
same interval. Nothing here reads data: it checks the statistics the benches rely on.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from fakefinder._text import format_table
from fakefinder.metrics import bootstrap_auc

SHIFT = 1.0  # a fake's score above a real's, in units of the scores' own noise


def collection(rng: np.random.Generator, design: str, unit_sd: float) -> tuple[np.ndarray, ...]:
    """(labels, scores, units) of one synthetic collection."""
    y, s, g = [], [], []
    if design == "pairs":
        for unit in range(16):
            shared = rng.normal() * unit_sd
            y += [0, 0, 1, 1, 1]
            s += list(shared + np.array([0, 0, SHIFT, SHIFT, SHIFT]) + rng.normal(size=5))
            g += [unit] * 5
    else:
        for unit in range(100):
            label = unit % 2
            y += [label] * 2
            s += list(label * SHIFT + rng.normal() + 0.1 * rng.normal(size=2))  # two frames, nearly alike
            g += [unit] * 2
    return np.array(y), np.array(s), np.array(g)


def by_hand(y: np.ndarray, s: np.ndarray, rounds: int, seed: int) -> tuple[float, float]:
    """`bootstrap_auc`'s interval drawn and scored one resample at a time: the reference it is timed against."""
    rng = np.random.default_rng(seed)
    picks = (rng.integers(0, len(y), len(y)) for _ in range(rounds))
    low, high = np.percentile([roc_auc_score(y[k], s[k]) for k in picks if len(np.unique(y[k])) == 2], [2.5, 97.5])
    return float(low), float(high)


def speed() -> list[list[str]]:
    rows = []
    for videos in (30, 200, 2000):
        rng = np.random.default_rng(videos)
        y = rng.integers(0, 2, videos)
        s = np.round(y * SHIFT + rng.normal(size=videos), 2)  # ties, as rounded scores have
        seconds, results = [], []
        for interval in (by_hand, lambda *a: bootstrap_auc(*a[:2], rounds=a[2], seed=a[3])):
            start = time.perf_counter()
            results.append(interval(y, s, 1000, 0))
            seconds.append(time.perf_counter() - start)
        assert np.allclose(*results, atol=1e-12)  # the same interval
        rows.append([str(videos), f"{seconds[0]:.3f}", f"{seconds[1]:.4f}", f"{seconds[0] / seconds[1]:.0f}x"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=500)
    args = ap.parse_args()
    rows = []
    for design, unit_sds in (("pairs", (0.0, 1.0, 2.0)), ("duplicates", (0.0,))):
        for unit_sd in unit_sds:
            rng = np.random.default_rng(0)
            pooled = [collection(rng, design, unit_sd) for _ in range(300)]
            truth = roc_auc_score(np.concatenate([c[0] for c in pooled]), np.concatenate([c[1] for c in pooled]))
            held = {"videos": [], "units": []}
            width = {"videos": [], "units": []}
            for trial in range(args.trials):
                y, s, g = collection(rng, design, unit_sd)
                for name, groups in (("videos", None), ("units", g)):
                    low, high = bootstrap_auc(y, s, groups=groups, rounds=args.rounds, seed=trial)
                    held[name].append(low <= truth <= high)
                    width[name].append(high - low)
            rows.append([design, f"{unit_sd:g}", f"{truth:.3f}",
                         *(f"{np.mean(held[k]):.3f} ({np.mean(width[k]):.3f})" for k in ("videos", "units"))])
    print(format_table(["design", "unit effect sd", "true AUC", "videos: held (mean width)",
                        "units: held (mean width)"], rows))
    print()
    print(format_table(["videos", "roc_auc_score per resample, s", "bootstrap_auc, s", "faster"], speed()))


if __name__ == "__main__":
    main()
