"""Benchmark training: feature extraction, the head on cached features, and the fine-tuning loop, each against a
bare PyTorch loop doing the same work, measured in the same run.

    python bench/train.py --make 40             # synthesise + prepare 40 videos first
    python bench/train.py --data DIR [--device cuda] [--backbone efficientnet_b4] [--finetune-batch 32]

1. Extraction: fakefinder's FeatureCache (read + digest + preprocess + base + checksummed shard) against a bare
   loop (read + preprocess + base): images/s and overhead, fp32 and bf16 autocast, and what bf16 changes.
2. A head run (E epochs) on cached features against the naive pipeline that reruns the frozen base every
   epoch (the reference's way), measured for one epoch and multiplied by E.
3. Fine-tuning: one epoch of fakefinder's loop (DataLoader workers decoding and augmenting, channels-last,
   autocast) against a bare loop over tensors already in memory (the model's own speed): the loader must not
   be the bottleneck.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fakefinder import Compute, TrainSettings, fit_detector, load_dataset
from fakefinder.data.splits import split_dataset
from fakefinder.hardware import autocast
from fakefinder.models.backbones import create_backbone
from fakefinder.models.features import FeatureCache, load_crops
from fakefinder.models.head import Head, pooled
from fakefinder.models.modelcard import HeadSpec


def make(n: int, root: Path) -> Path:
    from fakefinder import PrepareSettings, SynthSettings, prepare, synth

    made = synth(root / f"synth{n}", SynthSettings(videos=n, seed=5, seconds=3, sizes=((640, 360), (854, 480))))
    return prepare(made.out, root / f"prepared{n}", settings=PrepareSettings(fps=2)).out


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_extraction(backbone, files, batch: int, device: str, precision: str) -> float:
    """The minimum any pipeline must do: read, resize, normalise, run the base. Returns seconds."""
    module = backbone.module.to(device)
    sync()
    t = time.perf_counter()
    with torch.inference_mode(), autocast(torch.device(device).type, precision):
        for s in range(0, len(files), batch):
            x = backbone.preprocess(load_crops(files[s:s + batch])).to(device)
            module.forward_features(x).float().cpu()
    sync()
    module.to("cpu")
    return time.perf_counter() - t


def naive_epoch(backbone, files, labels, rows, config: TrainSettings, device: str) -> float:
    """One epoch the reference's way: every batch goes through the frozen base again, then the head."""
    c, h, _ = backbone.feature_shape()
    head = Head(HeadSpec(c * h * h if config.pool == "flatten" else c, config.n_layers, config.n_neurons,
                         pool=config.pool)).to(device)
    opt = torch.optim.RMSprop(head.parameters(), lr=config.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    backbone.module.to(device)
    y = torch.from_numpy(labels.astype(np.float32))
    sync()
    t = time.perf_counter()
    for s in range(0, len(rows), config.batch_size):
        b = rows[s:s + config.batch_size]
        x = backbone.preprocess(load_crops(files[b])).to(device)
        with torch.no_grad():
            f = pooled(backbone.features(x), config.pool)
        opt.zero_grad()
        loss_fn(head(f), y[b].to(device)).backward()
        opt.step()
    sync()
    backbone.module.to("cpu")
    return time.perf_counter() - t


def bare_finetune(backbone_name: str, weights: str, files, labels, batch: int, device: str, precision: str,
                  steps: int) -> float:
    """images/s of forward + backward + AdamW on tensors already in memory (no decoding, no augmentation)."""
    backbone = create_backbone(backbone_name, weights=weights)
    for p in backbone.module.parameters():
        p.requires_grad_(True)
    model = backbone.module.to(device).train()
    c = backbone.feature_shape()[0]
    head = torch.nn.Linear(c, 1).to(device)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-4)
    x = backbone.preprocess(load_crops(files[:batch])).to(device)
    y = torch.from_numpy(labels[:batch].astype(np.float32)).to(device)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for i in range(steps + 1):
        if i == 1:  # the first step pays one-time costs
            sync()
            t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(torch.device(device).type, precision):
            maps = model.forward_features(x)
        loss_fn(head(maps.float().mean(dim=(2, 3))).squeeze(-1), y).backward()
        opt.step()
    sync()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--make", type=int, help="synthesise and prepare this many videos into bench/out")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="extraction batch size")
    ap.add_argument("--finetune-batch", type=int, default=32)
    ap.add_argument("--workers", type=int, help="input pipeline processes of the fine-tuning loop")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions of each extraction (best kept)")
    args = ap.parse_args()
    data = load_dataset(make(args.make, Path("bench/out")) if args.make else args.data)
    files, labels = data.crop_files, data.labels
    split = split_dataset(data, seed=0)
    rows = {p: np.flatnonzero(split.parts[:len(data)] == p) for p in ("train", "val", "test")}
    cpu = f"CPU ({torch.get_num_threads()} threads)"
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu
    print(f"{len(files)} crops from {data.root}; {args.backbone} ({args.weights}); {device_name}; "
          f"torch {torch.__version__}")
    precisions = ("fp32",) if args.skip_bf16 else ("fp32", "bf16")

    # 1. extraction
    features = {}
    for precision in precisions:
        backbone = create_backbone(args.backbone, weights=args.weights)
        bare, ours = [], []
        for _ in range(args.repeats):  # alternate the two, keep each one's best: no order or warm-up bias
            bare.append(bare_extraction(backbone, list(files), args.batch, args.device, precision))
            with tempfile.TemporaryDirectory() as tmp:
                sync()
                t = time.perf_counter()
                table = FeatureCache(tmp, backbone, "avg", precision=precision).features(
                    list(files), batch_size=args.batch, device=args.device)
                sync()
                ours.append(time.perf_counter() - t)
                features[precision] = table.take(np.arange(len(files)))
        print(f"[{precision}] extraction: bare loop {len(files) / min(bare):8.1f} img/s, fakefinder's cache "
              f"{len(files) / min(ours):8.1f} img/s, overhead {min(ours) / min(bare) - 1:+.1%}")
    if "bf16" in features:
        diff = np.abs(features["bf16"] - features["fp32"]).max() / (np.abs(features["fp32"]).max() + 1e-9)
        print(f"bf16 changes the features by at most {diff:.1e} of the largest one")

    # 2. the head on cached features against the naive pipeline
    config = TrainSettings(backbone=args.backbone, weights=args.weights, epochs=args.epochs, patience=0,
                           precision="fp32")
    with tempfile.TemporaryDirectory() as cache:
        fit_detector(data, config, compute=Compute(cache_dir=cache,
                                                   device=args.device))  # fills the cache (timed above)
        t = time.perf_counter()
        trained = fit_detector(data, config, compute=Compute(cache_dir=cache, device=args.device))
        head_s = time.perf_counter() - t
    backbone = create_backbone(args.backbone, weights=args.weights)
    naive_epoch(backbone, files, labels, rows["train"][:config.batch_size], config, args.device)  # warm-up
    one = naive_epoch(backbone, files, labels, rows["train"], config, args.device)
    print(f"\nhead run, {args.epochs} epochs on cached features (split, calibration, metrics included): "
          f"{head_s:.2f} s; naive: 1 epoch {one:.2f} s -> ~{one * args.epochs:.1f} s: "
          f"{one * args.epochs / head_s:,.0f}x; val AUC {trained.val.frame.auc:.3f}")

    # 3. the fine-tuning loop against the model's own speed
    for precision in precisions:
        bare = bare_finetune(args.backbone, args.weights, files, labels, args.finetune_batch, args.device,
                             precision, steps=8)
        ft = TrainSettings(backbone=args.backbone, weights=args.weights, trainable_blocks="all", epochs=1,
                           batch_size=args.finetune_batch, probe=False, calibration="none", precision=precision,
                           patience=0)
        trained = fit_detector(data, ft, evaluate_test=False, compute=Compute(device=args.device,
                                                                              processes=args.workers))
        ours = trained.history.epochs[0]["images_per_s"]
        print(f"[{precision}] fine-tuning (all blocks, batch {args.finetune_batch}): bare loop on tensors in memory "
              f"{bare:.1f} img/s; fakefinder's loop with decoding and augmentation {ours:.1f} img/s "
              f"({ours / bare:.0%} of the model's own speed)")


if __name__ == "__main__":
    main()
