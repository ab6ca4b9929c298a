"""Where self-blended fine-tuning spends a CPU's time: the bare training step (forward, backward and AdamW on
batches already in memory) against the input pipeline alone (a fresh pseudo-fake per real, augmentation and
preprocessing in the loader's worker processes) and the two together (the loop `train` runs, without its
validation), in one run, as images per second and as ratios to the bare step. The bare step is timed again at the
smaller sides that `--progressive` trains its early epochs at.

    python bench/trainspeed.py [--reals 256] [--steps 8] [--workers 0,1,2] [--sides 160,128]

The recipe is `train DATA --fakes self-blended` (EfficientNet-Lite0 at 224 px, the whole base trained, batch 32) on
the reals of ../shared/data/dfdc-faces-dev, prepared with --detector none (bench/generalize.py prepares them);
the step is timed at fp32 and, where the CPU runs bf16 natively, at bf16. The issue's floor is end to end within
10% of the bare step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from fakefinder import CollectionOptions, PrepareSettings, TrainSettings, prepare
from fakefinder._text import format_table
from fakefinder.data.dataset import load_dataset
from fakefinder.hardware import resolve_precision
from fakefinder.models.backbones import Recipe
from fakefinder.models.head import in_features
from fakefinder.training.augment import Augmenter
from fakefinder.training.core import FineTuneModel, _new_head, _unfreeze, training_data
from fakefinder.training.finetune import make_optimizer, param_groups
from fakefinder.training.loader import CropDataset, EpochBatches, default_workers, iterate, make_loader
from fakefinder.training.pseudofakes import FreshBlends

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "dfdc-faces-dev"


def model_and_optimizer(recipe: TrainSettings, precision: str):
    backbone = Recipe.of(recipe).build()
    channels, side, _ = backbone.feature_shape()
    head = _new_head(in_features(channels, side, recipe.pool), recipe, "cpu")
    units = _unfreeze(backbone, recipe.trainable_blocks)
    model = FineTuneModel(backbone, head, recipe.pool, precision, recipe.bn).train()
    return backbone, model, make_optimizer(param_groups(head, torch.nn.ModuleList(units), recipe), recipe)


def step(model, optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1).float(), y)
    loss.backward()
    optimizer.step()


def rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reals", type=int, default=256, help="real crops the pipeline blends from")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per row (after one untimed)")
    ap.add_argument("--workers", default="0,1,2", help="loader processes to time the pipeline with")
    ap.add_argument("--sides", default="160,128", help="smaller image sides to time the bare step at (none: '')")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "generalize" / "dfdc")
    args = ap.parse_args()
    recipe = TrainSettings.preset(fakes="self-blended")
    data = prepare(DEV, args.out, settings=PrepareSettings(detector="none"),
                   collection=CollectionOptions(labels=DEV / "labels.csv", dataset="dfdc")).out
    dataset = training_data(load_dataset(data), recipe)
    reals = np.flatnonzero(dataset.origins < 0)[:args.reals]
    rows = np.concatenate([reals, np.flatnonzero(np.isin(dataset.origins, reals))])
    together = np.where(dataset.origins >= 0, dataset.origins, np.arange(len(dataset)))
    batch = recipe.batch_size
    results: list[tuple[str, float]] = []

    native = resolve_precision("auto", "cpu")
    sides = [int(s) for s in args.sides.split(",") if s]
    for precision, side in [(p, 224) for p in dict.fromkeys(["fp32", native])] + [(native, s) for s in sides]:
        _, model, optimizer = model_and_optimizer(recipe, precision)
        x = torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (batch,)).float()
        step(model, optimizer, x, y)
        t = time.perf_counter()
        for _ in range(args.steps):
            step(model, optimizer, x, y)
        name = f"bare step, {precision}" + (f", {side} px" if side != 224 else "")
        results.append((name, rate(args.steps * batch, time.perf_counter() - t)))
        print(format_table(["row", "images/s"], [[n, f"{r:.1f}"] for n, r in results]), flush=True)

    backbone, model, optimizer = model_and_optimizer(recipe, native)
    pipeline = CropDataset(dataset.crop_files, dataset.labels, backbone.preprocess_one,
                           Augmenter.from_spec(recipe.augment, margin=dataset.margin), recipe.seed,
                           FreshBlends.of(dataset, recipe))
    for workers in map(int, args.workers.split(",")):
        sampler = EpochBatches(rows, batch, recipe.seed, shuffle=True, together=together)
        loader = make_loader(pipeline, sampler, workers=workers, device=torch.device("cpu"))
        batches = iterate(loader)
        next(batches)  # workers started, the first batch made
        t = time.perf_counter()
        for _ in range(args.steps):
            next(batches)
        results.append((f"pipeline alone, {workers} worker processes", rate(args.steps * batch,
                                                                            time.perf_counter() - t)))
        del batches, loader
        print(format_table(["row", "images/s"], [[n, f"{r:.1f}"] for n, r in results]), flush=True)

    workers = default_workers()
    sampler = EpochBatches(rows, batch, recipe.seed, shuffle=True, together=together)
    batches = iterate(make_loader(pipeline, sampler, workers=workers, device=torch.device("cpu")))
    x, y = next(batches)
    step(model, optimizer, x.contiguous(memory_format=torch.channels_last), y)
    t = time.perf_counter()
    for _ in range(args.steps):
        x, y = next(batches)
        step(model, optimizer, x.contiguous(memory_format=torch.channels_last), y)
    results.append((f"end to end, {native}, {workers} worker processes", rate(args.steps * batch,
                                                                               time.perf_counter() - t)))
    bare = dict(results)[f"bare step, {native}"]
    print("\n" + format_table(["row", "images/s", "of the bare step"],
                              [[n, f"{r:.1f}", f"{r / bare:.2f}x"] for n, r in results]), flush=True)


if __name__ == "__main__":
    main()
