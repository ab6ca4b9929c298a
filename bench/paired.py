"""Is one training recipe better than another? Their difference in video AUC and log loss, with a paired bootstrap
95% interval: both rows' models score the same videos, and each resample is drawn once for both. A resample draws
the collection's independent units (bench/sources.py: a DFDC fake with its real, an FF++ pair with its fakes), not
videos alone, since videos that share a person or a frame are not independent evidence.

    python bench/paired.py --rows self-blended,self-blended-plain [--seeds 0,1]
    python bench/paired.py --rows self-blended+finetuned,self-blended-plain+finetuned

Runs after `bench/generalize.py --rows A,B --seeds 0,1`, whose kept models, split and prepared collections it reads
(bench/out/generalize). Separate intervals (generalize's, about +-0.1 on xdev's 82 clips) mostly measure how hard
the videos are, which both rows share; the paired interval of the difference leaves that out. Per collection (DFDC's
test part; the xdev clips framed as DFDC's crops are; xdev's face crops of NeuralTextures and of Face2Face, each
against all the real crops, the reenactment methods the clips hold least or none of) and per seed, then over the
seeds (the difference of the seeds' means): A's figure, B's, A - B [95%]. A is better only where the interval of A -
B leaves out 0 on the side that favours A. Video scores follow each model's own video rule, as `predict` does. A row
`A+B` is the two rows' models combined as bench/combine.py's `max` combines them (a face as suspicious as the more
suspicious member finds it, before the combined file's own calibration; the first member's video rule).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from combine import member_logits
from sources import independent_units

from fakefinder._files import write_text
from fakefinder._text import format_table, shown
from fakefinder.data.dataset import load_dataset
from fakefinder.data.splits import load_split
from fakefinder.metrics import binary_metrics, bootstrap_difference, sigmoid
from fakefinder.models.modelfile import read_card

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"auc": "video AUC", "log_loss": "video log loss"}


def verdict(low: float, high: float, metric: str) -> str:
    if not low <= 0 <= high:
        return "A better" if (low > 0) == (metric == "auc") else "A worse"
    return "not told apart"


def mean_metric(y: np.ndarray, scores: np.ndarray, metric: str) -> float:
    """`metric` ("auc" or "log_loss") of each row of video scores, averaged over the rows (seeds, or ensembles)."""
    return float(np.mean([getattr(binary_metrics(y, s), metric) for s in scores]))


def collections_of(src: Path, models: list[Path]) -> tuple[dict, dict]:
    """(the collections a model's logits cache holds, by key; per collection measured: its key and rows): DFDC's test
    part, unless one of `models` trained on it (`--test 0`), the xdev clips framed as DFDC's crops are, and xdev's
    face crops of each reenactment method against all its real crops (each crop its own video: the crops carry no
    video id; the intervals resample the units bench/sources.py links them into)."""
    clips_dir = next(p for p in sorted(src.glob("xdev-clips-m*")) if p.is_dir())
    dfdc, clips = load_dataset(src / "dfdc"), load_dataset(clips_dir, need_both_classes=False)
    faces = load_dataset(src / "xdev-faces")
    parts = load_split(src / "split.json", dfdc).parts[:len(dfdc)]
    cached = {"dfdc": dfdc, "clips": clips, "faces": faces}
    collections = {"DFDC test": ("dfdc", parts == "test"), "xdev clips": ("clips", np.ones(len(clips), bool)),
                   **{f"xdev faces {m}": ("faces", (faces.labels == 0) | (faces.methods == m))
                      for m in ("NeuralTextures", "Face2Face")}}
    if any(read_card(m).evidence.test_videos == 0 for m in models):
        del collections["DFDC test"]
    return cached, collections


def video_scores(models: list[Path], cached: dict, collections: dict, reduce=np.max
                 ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per collection (video ids, labels, P(fake) per video) of `models` combined face by face: `reduce` (np.max,
    as `fakefinder combine` does; np.mean, as `--rule mean` does) over their calibrated logits, then the first
    model's video rule."""
    z = [member_logits(m, cached, m.with_suffix(".logits.npz")) for m in models]
    rule = read_card(models[0]).verdict.video_rule  # the header alone: no weights loaded
    out = {}
    for name, (key, rows) in collections.items():
        p = sigmoid(reduce([logits[key][rows] for logits in z], axis=0))
        out[name] = cached[key].videos(np.flatnonzero(rows), p, rule)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", required=True, help="A,B: the candidate row, then the baseline")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--generalize", type=Path, default=ROOT / "bench" / "out" / "generalize")
    args = ap.parse_args()
    src = args.generalize
    rows_ab = args.rows.split(",")
    if len(rows_ab) != 2:
        ap.error("--rows takes two rows: the candidate, then the baseline")
    seeds = [*map(int, args.seeds.split(","))]
    cached, collections = collections_of(src, [src / f"{member}-seed{seed}.safetensors" for row in rows_ab
                                               for member in row.split("+") for seed in seeds])
    scores: dict[str, dict[str, list[np.ndarray]]] = {c: {r: [] for r in rows_ab} for c in collections}
    videos: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for row in rows_ab:
        for seed in seeds:
            models = [src / f"{member}-seed{seed}.safetensors" for member in row.split("+")]
            for name, (ids, vy, vp) in video_scores(models, cached, collections).items():
                if name in videos and not np.array_equal(videos[name], ids):
                    raise SystemExit(f"{models[0]}: its {name} videos are not those of the other models")
                videos[name], labels[name] = ids, vy
                scores[name][row].append(vp)
    table, results = [], {}
    for name, (key, _) in collections.items():
        y, units = labels[name], independent_units(cached[key], videos[name])
        for metric, label in METRICS.items():
            for which, pick in [*((str(s), [i]) for i, s in enumerate(seeds)), ("mean", list(range(len(seeds))))]:
                a, b = (np.array(scores[name][r])[pick] for r in rows_ab)
                diff, low, high = bootstrap_difference(y, a, b, metric=metric, groups=units, seed=seeds[0])
                fig_a, fig_b = (mean_metric(y, m, metric) for m in (a, b))
                results[f"{name}/{metric}/{which}"] = {"a": fig_a, "b": fig_b, "difference": diff, "ci": [low, high]}
                table.append([name, label, which, shown(fig_a, 3), shown(fig_b, 3),
                              f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]", verdict(low, high, metric)])
    print(format_table(["collection", "metric", "seed", f"A: {rows_ab[0]}", f"B: {rows_ab[1]}", "A - B [95%]",
                        "paired"], table))
    write_text(src / f"paired-{rows_ab[0]}-vs-{rows_ab[1]}.json", json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
