"""Benchmark `tune` on the reference-size grid: 243 configurations on ~5,000 face crops, frozen Lite0 features.

    python bench/tune.py [--videos 200 --seconds 5 --fps 5] [--workers 2]

Grid: n_neurons {64,128,256} x n_layers {1,2,3} x lr {1e-5,2e-5,1e-4} x epochs {10,20,30} x batch {10,32,64}.
Baseline, measured in the same run: the naive reference pipeline (the frozen base recomputed every epoch) for
one epoch over the training crops, extrapolated to every epoch of every configuration of the grid.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train import naive_epoch  # noqa: E402 - the same naive loop as bench/train.py

from fakefinder import (  # noqa: E402
    PrepareSettings,
    SynthSettings,
    TrainSettings,
    TuneSettings,
    load_dataset,
    prepare,
    synth,
)
from fakefinder.data.manifest import features_dir  # noqa: E402
from fakefinder.data.splits import split_dataset  # noqa: E402
from fakefinder.models.backbones import create_backbone  # noqa: E402
from fakefinder.tuning.search import load_grid, tune  # noqa: E402

GRID = """flags:
  n_neurons: [64, 128, 256]
  n_layers: [1, 2, 3]
  lr: [1e-5, 2e-5, 1e-4]
  epochs: [10, 20, 30]
  batch_size: [10, 32, 64]
fixed:
  patience: 0
  optimizer: rmsprop
  schedule: constant
  warmup: 0
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/out/tune"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    made = synth(args.out / "videos", SynthSettings(videos=args.videos, seconds=args.seconds, seed=21,
                                                    sizes=((640, 360),)))
    data = prepare(made.out, args.out / "prepared", settings=PrepareSettings(fps=args.fps)).out
    d = load_dataset(data)
    print(f"data: {args.videos} videos -> {len(d)} crops ({time.perf_counter() - t:.0f} s to make)", flush=True)
    grid = args.out / "grid.yml"
    grid.write_text(GRID)
    spec = load_grid(grid)
    configs = spec.points(seed=0)

    # Naive baseline: one epoch of the reference's way on the training part, batch 32.
    config = TrainSettings(batch_size=32)
    parts = split_dataset(d, seed=0).parts[:len(d)]
    train_rows = np.flatnonzero(parts == "train")
    backbone = create_backbone("efficientnet_lite0")
    naive_epoch(backbone, d.crop_files, d.labels, train_rows[:32], config, "cpu")  # warm-up
    one_epoch = naive_epoch(backbone, d.crop_files, d.labels, train_rows, config, "cpu")
    total_epochs = sum(c["epochs"] for c in configs)
    naive_total = one_epoch * total_epochs
    print(f"naive: 1 epoch over {len(train_rows)} train crops = {one_epoch:.1f} s; {len(configs)} configurations, "
          f"{total_epochs} epochs -> ~{naive_total / 86400:.1f} days", flush=True)

    shutil.rmtree(features_dir(data), ignore_errors=True)  # time the extraction too
    for name in ("optuna.db", "mlflow.db", "mlruns"):
        p = args.out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    t = time.perf_counter()
    result = tune(data, grid, TuneSettings(concurrent_trials=args.workers), study="bench243",
                  storage=f"sqlite:///{(args.out / 'optuna.db').resolve()}",
                  tracking=f"sqlite:///{(args.out / 'mlflow.db').resolve()}")
    wall = time.perf_counter() - t
    print(f"\n{result.table(top=10)}\n\n{result.test_line()}")
    print(f"\ntune: {len(result.rows)} configurations in {wall / 60:.1f} min with {args.workers} workers "
          f"(feature extraction included); naive ~{naive_total / 3600:.0f} h -> {naive_total / wall:,.0f}x faster")


if __name__ == "__main__":
    main()
