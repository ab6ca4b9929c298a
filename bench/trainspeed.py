"""Where self-blended fine-tuning spends a CPU's time: the bare training step (forward, backward and AdamW on
batches already in memory) against the input pipeline alone (a fresh pseudo-fake per real, augmentation and
preprocessing in the loader's worker processes) and the two together (the loop `train` runs, without its
validation), in one run, as images per second and as ratios to the bare step. The bare step is timed again at the
smaller sides that `--progressive` trains its early epochs at, compiled (`--compile`), and with only the upper blocks
trained (`--upper K`): the whole network's step under `--trainable-blocks K`, the frozen lower part's forward alone
(what caching its output for pre-made blends costs once) and the upper part's step on that output (what each epoch
over such a cache would cost), and the forward alone, as validation runs it. Like the fakefinder command, it runs
PyTorch's OpenMP threads passive (`hardware.passive_openmp`); `GOMP_SPINCOUNT=300000 python bench/trainspeed.py`
times them spinning as OpenMP does by default.

    python bench/trainspeed.py [--reals 256] [--steps 8] [--workers 0,1,2] [--sides 160,128] [--compile]
        [--upper 12]

The recipe is `train DATA --fakes self-blended` (EfficientNet-Lite0 at 224 px, the whole base trained, batch 32) on
the reals of ../shared/data/dfdc-faces-dev, prepared with --detector none (bench/generalize.py prepares them);
the step is timed at fp32 and, where the CPU runs bf16 natively, at bf16. The issue's floor is end to end within
10% of the bare step.
"""

from __future__ import annotations

from fakefinder.hardware import passive_openmp

passive_openmp()  # before PyTorch loads, as the fakefinder command does (GOMP_SPINCOUNT=300000: OpenMP's own default)

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from fakefinder import CollectionOptions, PrepareSettings, TrainSettings, prepare
from fakefinder._text import format_table
from fakefinder.data.dataset import load_dataset
from fakefinder.hardware import autocast, resolve_precision
from fakefinder.models.backbones import Recipe
from fakefinder.models.head import in_features, pooled
from fakefinder.training.augment import Augmenter
from fakefinder.training.core import FineTuneModel, _new_head, _unfreeze, training_data
from fakefinder.training.finetune import make_optimizer, param_groups
from fakefinder.training.loader import CropDataset, EpochBatches, default_workers, iterate, make_loader
from fakefinder.training.pseudofakes import FreshBlends

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "dfdc-faces-dev"


def recipe_rows(out: Path, reals: int):
    """The recipe, its training data (dfdc-faces-dev prepared with --detector none in `out`, resumed when it is
    there) and the rows of its first `reals` reals beside their pseudo-fakes."""
    recipe = TrainSettings.preset(fakes="self-blended")
    data = prepare(DEV, out, settings=PrepareSettings(detector="none"),
                   collection=CollectionOptions(labels=DEV / "labels.csv", dataset="dfdc")).out
    dataset = training_data(load_dataset(data), recipe)
    first = np.flatnonzero(dataset.origins < 0)[:reals]
    return recipe, dataset, np.concatenate([first, np.flatnonzero(np.isin(dataset.origins, first))])


def recipe_pipeline(recipe: TrainSettings, dataset, preprocess) -> CropDataset:
    """The recipe's input pipeline: a crop read, a new pseudo-fake of each real, its augmentations, `preprocess`."""
    return CropDataset(dataset.crop_files, dataset.labels, preprocess,
                       Augmenter.from_spec(recipe.augment, margin=dataset.margin), recipe.seed,
                       FreshBlends.of(dataset, recipe))


def model_and_optimizer(recipe: TrainSettings, precision: str):
    """The recipe's model in training mode and its optimizer, over the blocks `recipe.trainable_blocks` names."""
    backbone = Recipe.of(recipe).build()
    channels, side, _ = backbone.feature_shape()
    head = _new_head(in_features(channels, side, recipe.pool), recipe, "cpu")
    units = _unfreeze(backbone, recipe.trainable_blocks)
    model = FineTuneModel(backbone, head, recipe.pool, precision, recipe.bn).train()
    return backbone, model, make_optimizer(param_groups(head, torch.nn.ModuleList(units), recipe), recipe)


class Upper(torch.nn.Module):
    """EfficientNet's blocks from `start` on, its head conv and the detector's head: the part a cache of the lower
    blocks' output would train."""

    def __init__(self, model, start: int) -> None:
        super().__init__()
        self.net, self.model, self.start = model.base, model, start

    def forward(self, x):
        net = self.net
        with autocast(x.device.type, self.model.precision):
            for block in net._blocks[self.start:]:
                x = block(x)
            x = net.act(net._bn1(net._conv_head(x))).float()
        return self.model.head(pooled(x, self.model.pool))


def lower(model, start: int, x: torch.Tensor) -> torch.Tensor:
    """The frozen stem and blocks before `start`: their output is what the cache would hold."""
    net = model.base
    with torch.no_grad(), autocast(x.device.type, model.precision):
        x = net.act(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:start]:
            x = block(x)
    return x


def timed_steps(model, optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, float]:
    """(seconds of the first step, which compiles where compiled; images/s of the `steps` after it)."""
    t = time.perf_counter()
    step(model, optimizer, x, y)
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step(model, optimizer, x, y)
    return first, rate(steps * x.shape[0], time.perf_counter() - t)


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
    ap.add_argument("--workers", default="0,1,2", help="loader processes to time the pipeline with (none: '')")
    ap.add_argument("--sides", default="160,128", help="smaller image sides to time the bare step at (none: '')")
    ap.add_argument("--compile", action="store_true", help="time the bare step under torch.compile too")
    ap.add_argument("--upper", type=int, default=0, help="K: time training only the last K blocks (0: not)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "generalize" / "dfdc")
    args = ap.parse_args()
    recipe, dataset, rows = recipe_rows(args.out, args.reals)
    together = np.where(dataset.origins >= 0, dataset.origins, np.arange(len(dataset)))
    batch = recipe.batch_size
    results: list[tuple[str, float]] = []

    native = resolve_precision("auto", "cpu")
    sides = [int(s) for s in args.sides.split(",") if s]
    precisions = list(dict.fromkeys(["fp32", native]))  # one row where the CPU has no native bf16
    y = torch.randint(0, 2, (batch,)).float()

    def show() -> None:
        print(format_table(["row", "images/s"], [[n, f"{r:.1f}"] for n, r in results]), flush=True)

    for precision, side in [(p, 224) for p in precisions] + [(native, s) for s in sides]:
        _, model, optimizer = model_and_optimizer(recipe, precision)
        x = torch.randn(batch, 3, side, side).contiguous(memory_format=torch.channels_last)
        name = f"bare step, {precision}" + (f", {side} px" if side != 224 else "")
        results.append((name, timed_steps(model, optimizer, x, y, args.steps)[1]))
        show()
    _, model, _ = model_and_optimizer(recipe, native)
    x = torch.randn(64, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model.eval()(x)
        t = time.perf_counter()
        for _ in range(args.steps):
            model(x)
    results.append((f"forward, {native}, no gradient, batch 64 (validation's)", rate(args.steps * 64,
                                                                                   time.perf_counter() - t)))
    show()
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    for precision in precisions if args.compile else ():
        _, model, optimizer = model_and_optimizer(recipe, precision)
        first, r = timed_steps(torch.compile(model), optimizer, x, y, args.steps)
        results.append((f"bare step, {precision}, torch.compile (first step {first:.0f} s)", r))
        show()
    if args.upper:
        _, model, optimizer = model_and_optimizer(recipe.replace(trainable_blocks=args.upper), native)
        results.append((f"bare step, {native}, --trainable-blocks {args.upper}",
                        timed_steps(model, optimizer, x, y, args.steps)[1]))
        start = len(model.backbone.blocks()) - args.upper - 1  # the MBConv blocks before the K trained units
        t = time.perf_counter()
        for _ in range(args.steps):
            cached = lower(model, start, x)
        results.append((f"lower blocks' forward, {native}, no grad (output {tuple(cached.shape[1:])})",
                        rate(args.steps * batch, time.perf_counter() - t)))
        results.append((f"upper {args.upper} blocks' step on that output, {native}",
                        timed_steps(Upper(model, start), optimizer, cached.float(), y, args.steps)[1]))
        show()

    backbone, model, optimizer = model_and_optimizer(recipe, native)
    pipeline = recipe_pipeline(recipe, dataset, backbone.preprocess_one)
    for workers in (int(w) for w in args.workers.split(",") if w):
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
        show()

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
