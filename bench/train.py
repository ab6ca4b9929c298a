"""Benchmark training: feature extraction overhead, cached-feature heads vs the naive pipeline, bf16.

    python bench/train.py --make 40            # synthesise + prepare 40 videos first (needs PyAV)
    python bench/train.py --data DIR [--device cuda] [--backbone vgg16 --weights none]

1. Extraction: fakefinder's FeatureCache (PNG read + digest + preprocess + base + memory-mapped write) vs a
   bare PyTorch loop over the same crops (read + preprocess + base): images/s and overhead.
2. One head run (E epochs) on cached features vs the naive pipeline that reruns the frozen base every epoch
   (what the reference did): the naive run is measured for 1 epoch and multiplied by E. Ratio and images/s.
3. fp32 vs bf16 autocast in the base: extraction images/s, and the val AUC of the same head on each.
Every ratio compares numbers measured in this run, on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fakefinder.backbones import NORMALIZATIONS, create_backbone
from fakefinder.experiment import finetune_setup, frozen_setup, load_data, split_data
from fakefinder.features import FeatureCache, load_crops, pooled
from fakefinder.metrics import binary_metrics, video_scores
from fakefinder.training import TrainConfig, balanced_indices, fit


def make(n: int, root: Path) -> Path:
    from fakefinder import PrepareSettings, prepare, synth

    made = synth(root / f"synth{n}", videos=n, seed=5, seconds=3, sizes=((640, 360), (854, 480)))
    return prepare(made.out, root / f"prepared{n}", settings=PrepareSettings(fps=2)).out


def bare_loop(backbone, paths, batch: int, device: str, precision: str) -> float:
    """The minimum any pipeline must do: read, resize, normalise, run the base. Returns seconds."""
    import cv2

    mean, std = (np.asarray(v, np.float32) for v in NORMALIZATIONS[backbone.normalization])
    size, module = backbone.input_size, backbone.module.to(device)
    sync()
    t = time.perf_counter()
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                                                enabled=precision == "bf16"):
        for s in range(0, len(paths), batch):
            ims = [cv2.resize(cv2.imread(str(p)), (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1]
                   for p in paths[s:s + batch]]
            x = torch.from_numpy((np.stack(ims).astype(np.float32) - mean) / std).permute(0, 3, 1, 2)
            x = x.contiguous(memory_format=torch.channels_last).to(device)
            out = module.forward_features(x).float().cpu()
    sync()
    del out
    return time.perf_counter() - t


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def head_run(table, data, parts, config, device):
    rows = parts["train"][balanced_indices(data.labels[parts["train"]], config.balance,
                                           np.random.default_rng(config.seed))]
    head, model, batches, predict = frozen_setup(table, data.labels, parts, rows, config, device)
    t = time.perf_counter()
    history = fit(model, batches, predict, data.labels[rows].astype(np.float32),
                  data.labels[parts["val"]].astype(np.float32), config)
    sync()
    p = predict("val")
    _, vy, vp = video_scores(data.video_ids[parts["val"]], data.labels[parts["val"]], p)
    return time.perf_counter() - t, len(rows) * history.completed, binary_metrics(data.labels[parts["val"]], p).auc, \
        binary_metrics(vy, vp).auc


def naive_epoch(backbone, data, rows, config, device) -> float:
    """One epoch the reference's way: every batch goes through the frozen base again, then the head."""
    from fakefinder.head import Head, HeadSpec

    c, h, w = backbone.feature_shape()
    head = Head(HeadSpec(c * h * w if config.pool == "flatten" else c, config.n_layers, config.n_neurons)).to(device)
    opt = torch.optim.RMSprop(head.parameters(), lr=config.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    backbone.module.to(device)
    y = torch.from_numpy(data.labels.astype(np.float32))
    sync()
    t = time.perf_counter()
    for s in range(0, len(rows), config.batch_size):
        b = rows[s:s + config.batch_size]
        x = backbone.preprocess(load_crops(data.crops[b])).to(device)
        with torch.no_grad():
            f = pooled(backbone.features(x), config.pool)
        opt.zero_grad()
        loss_fn(head(f), y[b].to(device)).backward()
        opt.step()
    sync()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--make", type=int, help="synthesise and prepare this many videos into bench/out")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--input-size", type=int)
    ap.add_argument("--pool", default="avg")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="extraction batch size")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions of each extraction (best kept)")
    ap.add_argument("--finetune-blocks", type=int, default=0,
                    help="also time one fine-tuning epoch of the last K blocks")
    args = ap.parse_args()
    data_dir = make(args.make, Path("bench/out")) if args.make else args.data
    data = load_data(data_dir)
    config = TrainConfig(backbone=args.backbone, pool=args.pool, epochs=args.epochs, patience=None, device=args.device)
    split = split_data(data, config, None)
    parts = {p: np.flatnonzero(split.parts[:len(data.labels)] == p) for p in ("train", "val", "test")}
    paths = list(data.crops)
    cpu = f"CPU ({torch.get_num_threads()} threads)"
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu
    print(f"{len(paths)} crops from {data_dir}; {args.backbone} ({args.weights}); device {name}; "
          f"torch {torch.__version__}")

    tables, results = {}, {}
    for precision in ("fp32",) if args.skip_bf16 else ("fp32", "bf16"):
        backbone = create_backbone(args.backbone, weights=args.weights, input_size=args.input_size)
        bare, ours = [], []
        for _ in range(args.repeats):  # alternate the two, keep each one's best: no order or warm-up bias
            bare.append(bare_loop(backbone, paths, args.batch, args.device, precision))
            with tempfile.TemporaryDirectory() as tmp:
                cache = FeatureCache(tmp, backbone, args.pool, precision=precision)
                sync()
                t = time.perf_counter()
                cache.features(paths, batch_size=args.batch, device=args.device)
                sync()
                ours.append(time.perf_counter() - t)
        bare, ours = min(bare), min(ours)
        with tempfile.TemporaryDirectory() as tmp:
            table = FeatureCache(tmp, backbone, args.pool, precision=precision).features(
                paths, batch_size=args.batch, device=args.device)
            tables[precision] = table.take(np.arange(len(paths)))
            head_run(table, data, parts, config, args.device)  # warm-up: first-call costs are not the head's
            secs, images, frame_auc, video_auc = head_run(table, data, parts, config, args.device)
        results[precision] = (bare, ours, secs, images, frame_auc, video_auc)
        print(f"\n[{precision}] extraction: bare loop {len(paths) / bare:8.1f} img/s, fakefinder cache "
              f"{len(paths) / ours:8.1f} img/s, overhead {ours / bare - 1:+.1%}")
        print(f"[{precision}] head on cached features: {args.epochs} epochs in {secs:.2f} s "
              f"({images / secs:,.0f} img/s); val AUC frame {frame_auc:.4f} video {video_auc:.4f}")

    backbone = create_backbone(args.backbone, weights=args.weights, input_size=args.input_size)
    naive_epoch(backbone, data, parts["train"][:config.batch_size], config, args.device)  # warm-up
    one = naive_epoch(backbone, data, parts["train"], config, args.device)
    bare, ours, secs, images, *_ = results["fp32"]
    naive_total = one * args.epochs
    print(f"\nnaive (base rerun every epoch): 1 epoch {one:.2f} s -> {args.epochs} epochs ~{naive_total:.1f} s "
          f"({len(parts['train']) / one:,.0f} img/s)")
    print(f"cached head run: {secs:.2f} s -> {naive_total / secs:,.0f}x faster than naive for the head run; "
          f"{naive_total / (secs + ours):.1f}x including the one-time extraction")
    if "bf16" in results:
        diff = np.abs(tables["bf16"] - tables["fp32"]).max() / (np.abs(tables["fp32"]).max() + 1e-9)
        print(f"\nbf16 vs fp32: extraction speed x{results['fp32'][1] / results['bf16'][1]:.2f}; "
              f"max feature difference {diff:.2e} of the largest feature; val AUC change frame "
              f"{results['bf16'][4] - results['fp32'][4]:+.4f}, video {results['bf16'][5] - results['fp32'][5]:+.4f}")

    if args.finetune_blocks:
        ft = TrainConfig(backbone=args.backbone, pool=args.pool, epochs=1, patience=None, device=args.device,
                         trainable_blocks=args.finetune_blocks, batch_size=32)
        backbone = create_backbone(args.backbone, weights=args.weights, input_size=args.input_size)
        head, model, batches, predict = finetune_setup(backbone, data.crops, data.labels, parts, parts["train"], ft,
                                                       args.device)
        sync()
        t = time.perf_counter()
        fit(model, batches, predict, data.labels[parts["train"]].astype(np.float32),
            data.labels[parts["val"]].astype(np.float32), ft)
        sync()
        secs = time.perf_counter() - t
        print(f"\nfine-tuning the last {args.finetune_blocks} blocks with augmentation: 1 epoch "
              f"({len(parts['train'])} train + {len(parts['val'])} val crops) in {secs:.2f} s")


if __name__ == "__main__":
    main()
