"""Are a self-blended and a supervised detector complementary? Their face logits combined, fitted on held-out
videos, against each member alone, on DFDC's test part (in-domain) and on FaceForensics++ c23 clips (never seen).

    python bench/combine.py [--members self-blended,finetuned-pairs-alike] [--seeds 0,1]

Runs after `bench/generalize.py --rows self-blended,finetuned-pairs-alike --seeds 0,1` (the members `train --fakes both`
trains; first measured as `--members self-blended-plain,finetuned`), whose kept models, split and prepared
collections it reads (bench/out/generalize). Per seed, each member scores every DFDC crop and every crop of the 82
xdev clips framed as DFDC's crops are (the margin `evaluate` names). Combinations, each giving P(fake) per face and
then the members' own video rule over each face track, the most suspicious track deciding (as `predict` does):

- `mean`: the mean of the members' calibrated logits (nothing fitted);
- `fitted`: logistic regression on the members' logits, fitted on the DFDC validation part's faces (videos no
  member trained on; the split is by source);
- `max`: the larger of the members' calibrated P(fake).

Columns: video AUC with a bootstrap 95% interval over videos (1,000 resamples) and log loss, on DFDC's test part and on
the xdev clips. A combination is kept only where, over both seeds, it beats each member on both collections.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sources import scored

from fakefinder import load_detector
from fakefinder._files import atomic_path, write_text
from fakefinder._text import format_table, shown
from fakefinder.data.dataset import load_dataset
from fakefinder.data.splits import load_split
from fakefinder.inference.evaluation import dataset_logits
from fakefinder.metrics import sigmoid
from fakefinder.models.modelfile import read_card

ROOT = Path(__file__).resolve().parents[1]


def member_logits(model: Path, collections: dict[str, object], cache: Path) -> dict[str, np.ndarray]:
    """Calibrated logits of every crop of each collection, kept beside the model's name so a rerun reads them (and
    scores only the collections the cache lacks)."""
    kept: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as saved:
            kept = {k: saved[k] for k in saved.files}
    missing = [name for name in collections if name not in kept]
    if missing:
        detector = load_detector(model, device="cpu")
        kept |= {name: detector.card.calibration.logit(dataset_logits(detector, collections[name])) for name in missing}
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:  # a run stopped mid-write leaves no broken cache
            np.savez(f, **kept)
    return {name: kept[name] for name in collections}


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="self-blended,finetuned-pairs-alike")  # what `--fakes both` pairs
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--generalize", type=Path, default=ROOT / "bench" / "out" / "generalize")
    args = ap.parse_args()
    src = args.generalize
    clips_dir = next(p for p in sorted(src.glob("xdev-clips-m*")) if p.is_dir())
    dfdc, clips = load_dataset(src / "dfdc"), load_dataset(clips_dir, need_both_classes=False)
    parts = load_split(src / "split.json", dfdc).parts[:len(dfdc)]
    val, test, every = parts == "val", parts == "test", np.ones(len(clips), bool)
    members = args.members.split(",")
    rows, results = [], {}
    for seed in map(int, args.seeds.split(",")):
        z = {m: member_logits(src / f"{m}-seed{seed}.safetensors", {"dfdc": dfdc, "clips": clips},
                              src / f"{m}-seed{seed}.logits.npz") for m in members}
        rule = read_card(src / f"{members[0]}-seed{seed}.safetensors").verdict.video_rule
        fit = LogisticRegression(C=1.0).fit(np.column_stack([z[m]["dfdc"][val] for m in members]), dfdc.labels[val])
        candidates = {m: {k: sigmoid(v) for k, v in z[m].items()} for m in members}
        candidates["mean"] = {k: sigmoid(np.mean([z[m][k] for m in members], axis=0)) for k in ("dfdc", "clips")}
        candidates["fitted"] = {k: fit.predict_proba(np.column_stack([z[m][k] for m in members]))[:, 1]
                                for k in ("dfdc", "clips")}
        candidates["max"] = {k: np.max([sigmoid(z[m][k]) for m in members], axis=0) for k in ("dfdc", "clips")}
        for name, p in candidates.items():
            d_auc, d_ci, d_ll = scored(dfdc, test, p["dfdc"], rule, seed)
            c_auc, c_ci, c_ll = scored(clips, every, p["clips"], rule, seed)
            results[f"{name}-seed{seed}"] = {"dfdc_auc": d_auc, "dfdc_ci": d_ci, "dfdc_log_loss": d_ll,
                                             "clips_auc": c_auc, "clips_ci": c_ci, "clips_log_loss": c_ll}
            rows.append([name, str(seed), f"{shown(d_auc, 3)} [{shown(d_ci[0], 2)}, {shown(d_ci[1], 2)}]",
                         shown(d_ll, 3), f"{shown(c_auc, 3)} [{shown(c_ci[0], 2)}, {shown(c_ci[1], 2)}]",
                         shown(c_ll, 3)])
        results[f"fitted-seed{seed}"]["weights"] = [*map(float, fit.coef_[0]), float(fit.intercept_[0])]
        print(f"seed {seed}: fitted weights {dict(zip([*members, 'bias'], results[f'fitted-seed{seed}']['weights']))}",
              flush=True)
    print(format_table(["combination", "seed", "DFDC test video AUC [95%]", "log loss", "xdev clips video AUC [95%]",
                        "log loss"], rows))
    write_text(src / "combine.json", json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
