"""Does a recipe trained with two seeds and averaged beat one run of it, and another recipe given the same time?

    python bench/ensemble.py --row self-blended-plain --seeds 0,1,2
    python bench/ensemble.py --row self-blended-quick --seeds 0,1 --against self-blended-plain --against-seeds 0,1,2

Runs after `bench/generalize.py --rows ROW --seeds ...`, whose kept models, split and prepared collections it reads
(bench/out/generalize). For each pair of ROW's seeds, the two models combined as `fakefinder combine --rule mean`
combines them (the mean of their calibrated face logits, then the first model's video rule), against the two models
alone (the recipe at half the time), and against AGAINST's single seeds (another recipe; default ROW itself). Per
collection (`bench/paired.py`'s: DFDC's test part, the xdev clips, xdev's NeuralTextures and Face2Face crops): video
AUC and log loss, each difference with a paired bootstrap 95% interval over bench/sources.py's units (as
`bench/paired.py`'s); "all pairs" compares the means over the pairs. The intervals leave out which seeds were
drawn: a gain every pair shows is the evidence, not one pair's interval.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from paired import METRICS, collections_of, mean_metric, verdict, video_scores
from sources import independent_units

from fakefinder._files import write_text
from fakefinder._text import format_table, shown
from fakefinder.metrics import bootstrap_difference

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", required=True, help="the recipe whose seeds are averaged")
    ap.add_argument("--seeds", default="0,1", help="its seeds: every pair of them is one ensemble")
    ap.add_argument("--against", help="the baseline row, one seed a run (default: --row)")
    ap.add_argument("--against-seeds", help="the baseline's seeds (default: --seeds)")
    ap.add_argument("--generalize", type=Path, default=ROOT / "bench" / "out" / "generalize")
    args = ap.parse_args()
    src = args.generalize
    seeds = [*map(int, args.seeds.split(","))]
    if len(seeds) < 2:
        ap.error("--seeds needs two seeds at least: an ensemble is a pair of them")
    against = args.against or args.row
    against_seeds = [*map(int, (args.against_seeds or args.seeds).split(","))]
    model = {(row, s): src / f"{row}-seed{s}.safetensors" for row, ss in ((args.row, seeds), (against, against_seeds))
             for s in ss}
    cached, collections = collections_of(src, list(model.values()))
    alone = {key: video_scores([path], cached, collections) for key, path in model.items()}
    pairs = list(itertools.combinations(seeds, 2))
    ensembles = {pair: video_scores([model[args.row, s] for s in pair], cached, collections, reduce=np.mean)
                 for pair in pairs}
    table, results = [], {}
    for name, (key, _) in collections.items():
        ids, y, _ = alone[args.row, seeds[0]][name]
        units = independent_units(cached[key], ids)
        base = np.array([alone[against, s][name][2] for s in against_seeds])
        for which, chosen in [*((f"{a}+{b}", [(a, b)]) for a, b in pairs), ("all pairs", pairs)]:
            ens = np.array([ensembles[p][name][2] for p in chosen])
            members = np.array([alone[args.row, s][name][2] for p in chosen for s in p])
            for metric, label in METRICS.items():
                f_ens, f_members, f_base = (mean_metric(y, s, metric) for s in (ens, members, base))
                d_members = bootstrap_difference(y, ens, members, metric=metric, groups=units, seed=seeds[0])
                d_base = bootstrap_difference(y, ens, base, metric=metric, groups=units, seed=seeds[0])
                results[f"{name}/{metric}/{which}"] = {
                    "ensemble": f_ens, "members": f_members, "against": f_base,
                    "minus_members": list(d_members), "minus_against": list(d_base)}
                table.append([name, label, which, shown(f_ens, 3), shown(f_members, 3),
                              f"{d_members[0]:+.3f} [{d_members[1]:+.3f}, {d_members[2]:+.3f}]",
                              verdict(*d_members[1:], metric), shown(f_base, 3),
                              f"{d_base[0]:+.3f} [{d_base[1]:+.3f}, {d_base[2]:+.3f}]", verdict(*d_base[1:], metric)])
    print(format_table(["collection", "metric", "seeds", "ensemble", "members alone", "E - members [95%]", "paired",
                        f"{against} {args.against_seeds or args.seeds}", "E - it [95%]", "paired"], table))
    write_text(src / f"ensemble-{args.row}-vs-{against}.json", json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
