"""Detector quality on real DFDC face crops: a frozen base against the same base fine-tuned, on one leak-free split.

    python bench/quality.py                                  # ../shared/data/dfdc-faces-dev, EfficientNet-Lite0
    python bench/quality.py --backbone efficientnet_b4 --device cuda --epochs 6 --batch 64

The crops (one per DFDC video, 2,000 real/fake pairs) are prepared once with `--detector none`. Both detectors
use the same split by source video (a fake stays with its original), choose everything on the validation part,
and are scored once on the test part: AUC, log loss and expected calibration error before and after the
calibration map fitted on validation, wall time and images/s. Ratios are against the frozen run of this run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fakefinder import CollectionOptions, Compute, PrepareSettings, TrainSettings, fit_detector, prepare
from fakefinder._text import shown

ROOT = Path(__file__).resolve().parents[1]


def row(name: str, trained, seconds: float) -> dict:
    cal, raw = trained.test.video, trained.uncalibrated["test"].video
    images = sum(e.get("images_per_s", 0) * e.get("seconds", 0) for e in trained.history.epochs)
    train_s = sum(e.get("seconds", 0) for e in trained.history.epochs)
    return {"detector": name, "test_auc": cal.auc, "log_loss_raw": raw.log_loss, "log_loss_cal": cal.log_loss,
            "ece_raw": raw.ece, "ece_cal": cal.ece, "accuracy": cal.accuracy, "n": cal.n,
            "epochs": trained.history.completed, "best_epoch": trained.history.best_epoch,
            "train_images_per_s": images / train_s if train_s else None, "wall_s": seconds,
            "threshold": trained.model.card.verdict.meaning()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dfdc-faces-dev")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--epochs", type=int, default=16, help="fine-tuning epochs (16: just under an hour on 2 cores)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--blocks", default="all", help="--trainable-blocks of the fine-tuned run")
    ap.add_argument("--workers", type=int, help="input pipeline processes")
    ap.add_argument("--augment", help="--augment of the fine-tuned run (default: the default)")
    ap.add_argument("--base-lr-scale", type=float, help="--base-lr-scale of the fine-tuned run")
    ap.add_argument("--lr", type=float, help="--lr of the fine-tuned run")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    prepared = prepare(args.data, args.out / "dfdc-faces-prepared",
                       settings=PrepareSettings(detector="none", margin=0.0, frames=1),
                       collection=CollectionOptions(labels=args.data / "labels.csv", dataset="dfdc-faces-dev"))
    print(prepared.summary().splitlines()[1])
    cache = args.out / "quality-cache"
    rows = []

    def run(name: str, config: TrainSettings) -> None:
        t = time.perf_counter()

        def show(event):
            if event.stage.endswith("epochs"):
                print(f"  {name} epoch {event.done}/{event.total}: " + " ".join(
                    f"{k}={v:.4g}" for k, v in event.info.items() if isinstance(v, float)), flush=True)

        trained = fit_detector(prepared.out, config, progress=show,
                               compute=Compute(cache_dir=cache, device=args.device, processes=args.workers))
        rows.append(row(name, trained, time.perf_counter() - t))
        r = rows[-1]
        print(f"{name}: test AUC {shown(r['test_auc'], 3)}, log loss {shown(r['log_loss_raw'], 3)} -> "
              f"{shown(r['log_loss_cal'], 3)}"
              f", ECE {shown(r['ece_raw'], 3)} -> {shown(r['ece_cal'], 3)}, {r['wall_s']:.0f} s", flush=True)

    run(f"frozen {args.backbone}", TrainSettings(backbone=args.backbone))
    blocks = args.blocks if args.blocks == "all" else int(args.blocks)
    extra = {k: v for k, v in (("augment", args.augment), ("base_lr_scale", args.base_lr_scale), ("lr", args.lr))
             if v is not None}
    run(f"fine-tuned {args.backbone} ({blocks} blocks)",
        TrainSettings(backbone=args.backbone, trainable_blocks=blocks, epochs=args.epochs, batch_size=args.batch,
                      **extra))

    head = ["detector", "test AUC", "log loss raw", "log loss cal", "ECE raw", "ECE cal", "epochs", "img/s", "wall s"]
    print("\n| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for r in rows:
        print(f"| {r['detector']} | {shown(r['test_auc'], 3)} | {shown(r['log_loss_raw'], 3)} | "
              f"{shown(r['log_loss_cal'], 3)} | "
              f"{shown(r['ece_raw'], 3)} | {shown(r['ece_cal'], 3)} | {r['epochs']} (best {r['best_epoch']}) | "
              f"{shown(r['train_images_per_s'], 1)} | {r['wall_s']:.0f} |")
    frozen, tuned = rows
    print(f"\nfine-tuned - frozen: test AUC {tuned['test_auc'] - frozen['test_auc']:+.3f}; calibration changed the "
          f"fine-tuned log loss by {tuned['log_loss_cal'] - tuned['log_loss_raw']:+.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
