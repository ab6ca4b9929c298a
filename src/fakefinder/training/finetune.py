"""The one training loop, for a head on cached features and for a base fine-tuned with its head.

Optimiser groups (the base at a fraction of the head's learning rate, no weight decay on biases and norms),
warmup then cosine decay, gradient clipping, mixed precision (fp16 with loss scaling), sharpness-aware steps, early
stopping on the validation loss with the best weights restored, weight averaging over the last steps, and a
checkpoint after every epoch from which `resume` continues to exactly the result of an uninterrupted run: every
epoch reseeds its shuffling, augmentation and dropout from (seed, epoch), so nothing else has to be saved. Global
RNG state is restored when the loop ends.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import TrainSettings
from ..errors import UsageError
from ..metrics import binary_log_loss, binary_metrics, sigmoid
from ..progress import ProgressCallback, emit

CHECKPOINT_FORMAT = 1


TIMING_KEYS = ("seconds", "images_per_s", "val_seconds")  # of a history row: how fast, not what was learned


@dataclass
class History:
    """Per-epoch metrics (train_loss, train_accuracy, val_loss, val_accuracy, val_auc, lr, images_per_s, seconds
    of training and val_seconds of validation) and the best epoch (1-based; the last one when early stopping is off)."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    # the validation rows' logits under the weights the model ended with, so that they need not be scored again
    # (None where those weights' epoch ran before a resume)
    val_logits: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def completed(self) -> int:
        return len(self.epochs)


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    """The random stream of one epoch (and of one sample in it): the same whatever ran before."""
    return np.random.default_rng([seed, epoch, *more])


def balanced_indices(y: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    """Rows to train on: all, or the majority class randomly cut to the minority's size (the reference)."""
    idx = np.arange(len(y))
    if how != "undersample":
        return idx
    pos, neg = idx[y == 1], idx[y == 0]
    if min(len(pos), len(neg)) == 0:
        return idx
    n = min(len(pos), len(neg))
    return np.sort(np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)]))


def param_groups(head: torch.nn.Module, base: torch.nn.Module | None, config: TrainSettings, *,
                 probed: bool = False) -> list[dict]:
    """The head at `lr` and the base's trainable parameters at `lr * base_lr_scale`; after a linear probe the head
    is trained already and moves as gently as the base. No weight decay on biases and norms."""
    fine = config.lr * config.base_lr_scale
    groups = []
    for module, lr in ((head, fine if probed else config.lr), (base, fine)):
        if module is None:
            continue
        params = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        plain = [p for p in params if p.ndim <= 1]
        groups += [{"params": decay, "lr": lr, "weight_decay": config.weight_decay},
                   {"params": plain, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(groups: list[dict], config: TrainSettings) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups)
    return torch.optim.RMSprop(groups, alpha=0.9, eps=1e-7)  # Keras' RMSprop defaults


def lr_factor(step: int, total: int, config: TrainSettings) -> float:
    """Linear warmup over the first `warmup` of the steps, then constant or cosine decay to zero."""
    warm = round(config.warmup * total)
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def loss_fn(y: np.ndarray, how: str, device) -> torch.nn.Module:
    """Summed over the batch: `fit` divides by the global batch, so that processes holding unequal shares of a
    batch (its last one) still average to the one-process loss."""
    pos = float((y == 1).sum())
    weight = (len(y) - pos) / pos if how == "weight" and pos > 0 else None
    return torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, device=device) if weight else None,
                                      reduction="sum")


def val_loss(y: np.ndarray, p: np.ndarray) -> float:
    """The loss early stopping watches, clipped as Keras clips (1e-7), not as the DFDC log loss (1e-15)."""
    return binary_log_loss(y, p, eps=1e-7)


@dataclass(frozen=True)
class Processes:
    """The processes of a run: one, or those `torchrun` started (each holds its share of every batch)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # we initialised the process group (and tear it down)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, arrays: np.ndarray) -> list[np.ndarray]:
        if self.world == 1:
            return [arrays]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, arrays)
        return out

    def agree(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        box = [flag]
        torch.distributed.broadcast_object_list(box, src=0)
        return bool(box[0])

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


@dataclass
class Loop:
    """What one call of `fit` trains and how it reaches the data."""

    model: torch.nn.Module  # called on x, returns logits; may be DistributedDataParallel
    batches: Callable[[int], Iterable]  # epoch -> (x, y) batches of this process
    steps_per_epoch: int
    images_per_epoch: int
    val_logits: Callable[[], np.ndarray] | None  # logits of the validation rows, or None
    val_y: np.ndarray | None
    train_y: np.ndarray  # labels of the training rows, for the loss weighting
    groups: list[dict]
    precision: str = "fp32"
    checkpoint: Path | None = None  # written by the main process after every epoch
    processes: Processes = field(default_factory=Processes)  # DistributedDataParallel averages their gradients
    global_batch: Callable[[int], int] | None = None  # step -> samples in that step's batch over all processes


@dataclass
class _Steps:
    """What takes a step: the optimiser, its schedule, the loss scaler, the loss and the parameters it clips."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: torch.nn.Module
    params: list

    def state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load(self, saved: dict) -> None:
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])


@dataclass
class _Watch:
    """Early stopping's state: the best monitored loss so far, its weights, and the epochs waited since."""

    loss: float = math.inf
    state: dict | None = None
    waited: int = 0
    val_logits: np.ndarray | None = None  # of the best epoch (not checkpointed)


class _Average:
    """Stochastic weight averaging, densely (Izmailov et al. 2018; Cha et al. 2021, SWAD): the mean of the weights
    after each of the last steps, a flatter point of the loss than any one of them, which SWAD found to hold up
    better on unseen domains (bench/generalize.py: not for the self-blended recipe on 2 CPU cores). Validation, early
    stopping and the model kept see the mean once it has begun; the steps train the weights themselves. The
    parameters are averaged, not the BatchNorm statistics (the recipes fine-tune with them frozen)."""

    def __init__(self, model: torch.nn.Module, first_step: int) -> None:
        from torch.optim.swa_utils import AveragedModel

        self.model, self.first_step = model, first_step
        self.mean = AveragedModel(model)

    @property
    def begun(self) -> bool:
        return int(self.mean.n_averaged) > 0

    def after(self, step: int) -> None:
        """After global step `step` (1-based)."""
        if step >= self.first_step:
            self.mean.update_parameters(self.model)

    def _load(self, params: Iterable[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, q in zip(self.model.parameters(), params, strict=True):
                p.copy_(q)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The mean in the model for the block (where it has begun), its own weights back after."""
        if not self.begun:
            yield
            return
        with _put_back(list(self.model.parameters())):
            self._load(self.mean.module.parameters())
            yield

    def keep(self) -> None:
        if self.begun:
            self._load(self.mean.module.parameters())


def fit(loop: Loop, config: TrainSettings, *, resume: bool = False, progress: ProgressCallback | None = None,
        stage: str = "train", on_epoch: Callable[[int, dict], None] | None = None) -> History:
    """Train until `epochs` or early stopping, restore the best epoch's weights (or keep the weights' mean over
    the last steps: `average_weights`), and return the history."""
    device = next(p for g in loop.groups for p in g["params"]).device
    optimizer = make_optimizer(loop.groups, config)
    total_steps = config.epochs * loop.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, config))
    steps = _Steps(optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=loop.precision == "fp16"),
                   loss_fn(loop.train_y, config.balance, device), [p for g in loop.groups for p in g["params"]])
    average = (_Average(_unwrap(loop.model), total_steps - max(1, round(config.average_weights * total_steps)) + 1)
               if config.average_weights > 0 else None)
    history, best, start = History(), _Watch(), 1
    if resume and loop.checkpoint is not None and loop.checkpoint.is_file():
        saved = read_checkpoint(loop.checkpoint, device)
        _unwrap(loop.model).load_state_dict(saved["model"])
        steps.load(saved)
        if average is not None and saved.get("average") is not None:
            average.mean.load_state_dict(saved["average"])
        history = History(list(saved["history"]), int(saved["best_epoch"]))
        best = _Watch(float(saved["best_loss"]), saved["best_state"], int(saved["waited"]))
        start = int(saved["epoch"]) + 1
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for epoch in range(start, config.epochs + 1):
            if best.waited >= config.patience > 0:
                break  # a resumed run that had already stopped early
            torch.manual_seed(config.seed * 100_003 + epoch)  # dropout, stochastic depth
            row = _one_epoch(loop, epoch, steps, config, progress, stage, average)
            with average.applied() if average is not None else contextlib.nullcontext():
                z = _validate(loop, row)
                history.epochs.append(row)
                if on_epoch:
                    on_epoch(epoch, row)
                monitored = row.get("val_loss", row["train_loss"])
                history.val_logits = z  # of the weights now: those the model ends with unless an earlier epoch's
                if monitored < best.loss - 1e-6:
                    best.loss, best.waited, history.best_epoch, best.val_logits = monitored, 0, epoch, z
                    if config.patience > 0:
                        best.state = copy.deepcopy({k: v.detach().clone() for k, v in
                                                    _unwrap(loop.model).state_dict().items()})
                else:
                    best.waited += 1
            stop = loop.processes.agree(config.patience > 0 and "val_loss" in row and best.waited >= config.patience)
            if loop.checkpoint is not None and loop.processes.main:
                _save_checkpoint(loop.checkpoint, epoch, loop.model, steps, history, best, average)
            emit(progress, stage + " epochs", epoch, config.epochs, "epoch", **{k: v for k, v in row.items()})
            if stop:
                break
    if config.patience > 0 and best.state is not None:
        _unwrap(loop.model).load_state_dict(best.state)  # Keras' restore_best_weights
        history.val_logits = best.val_logits  # None where the best epoch ran before a resume
    else:
        history.best_epoch = history.completed
        if average is not None:
            average.keep()
    loop.model.eval()
    return history


def _validate(loop: Loop, row: dict) -> np.ndarray | None:
    """The validation rows' logits under the model's weights now, their metrics added to the epoch's `row`."""
    if loop.val_logits is None or loop.val_y is None or not len(loop.val_y):
        return None
    t0 = time.perf_counter()
    z = loop.val_logits()
    p = sigmoid(z)
    m = binary_metrics(loop.val_y, p)
    row.update(val_loss=val_loss(loop.val_y, p), val_accuracy=m.accuracy, val_auc=m.auc,
               val_seconds=time.perf_counter() - t0)
    return z


def _one_epoch(loop: Loop, epoch: int, steps: _Steps, config: TrainSettings, progress: ProgressCallback | None,
               stage: str, average: _Average | None) -> dict:
    loop.model.train()
    optimizer, scaler = steps.optimizer, steps.scaler
    total, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
    for step, batch in enumerate(loop.batches(epoch), 1):
        y = batch[1]
        optimizer.zero_grad(set_to_none=True)
        whole = loop.global_batch(step) if loop.global_batch else len(y)
        logits, summed, loss = _forward(loop, steps, batch, whole)
        scaler.scale(loss).backward()
        if config.sam > 0:
            _sharpness_aware(loop, steps, batch, config.sam, whole)
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(steps.params, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        steps.scheduler.step()
        if average is not None:
            average.after((epoch - 1) * loop.steps_per_epoch + step)
        total += float(summed.detach())
        correct += int(((logits.detach() >= 0) == (y >= 0.5)).sum())
        seen += len(y)
        elapsed = time.perf_counter() - t0
        rate = seen / elapsed if elapsed > 0 else 0.0
        emit(progress, stage, step, loop.steps_per_epoch, "batch", epoch=epoch, loss=total / seen,
             images_per_s=rate, eta_s=(loop.steps_per_epoch - step) * elapsed / step)
    seconds = time.perf_counter() - t0
    return {"train_loss": total / max(1, seen), "train_accuracy": correct / max(1, seen),
            "lr": optimizer.param_groups[0]["lr"], "images_per_s": seen / seconds if seconds > 0 else 0.0,
            "seconds": seconds}


def _forward(loop: Loop, steps: _Steps, batch: tuple, whole: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's logits, its loss summed over this process's share (in fp32 whatever the compute precision), and
    the loss to differentiate: with `whole` the samples of the step over all processes, DDP's average over processes
    is then the mean over the whole batch. A batch of (x, y, *more) gives the model x and `more`; the model then
    returns its logits and a second loss, summed over the share too (`--blend-map`'s), which is differentiated
    with the first and left out of the loss reported."""
    x, y, *more = batch
    out = loop.model(x, *more)
    logits, second = out if isinstance(out, tuple) else (out, None)
    summed = steps.criterion(logits.float(), y)
    total = summed if second is None else summed + second
    return logits, summed, total * loop.processes.world / whole


def _sharpness_aware(loop: Loop, steps: _Steps, batch: tuple, rho: float, whole: int) -> None:
    """SAM (Foret et al. 2021): replace the gradients with those taken at the weights moved `rho` along the
    normalised gradient (the steepest ascent nearby), so that the step lowers the neighbourhood's worst loss, not
    only the point's. The gradients' scale (fp16's loss scaling) leaves the direction alone; BatchNorm statistics
    that train are not updated a second time."""
    params = [p for p in steps.params if p.grad is not None]
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        if not torch.isfinite(norm) or norm == 0:
            return  # an overflowing fp16 step: the scaler skips it as it is
    with _put_back(params):
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=float(rho / norm))
        steps.optimizer.zero_grad(set_to_none=True)
        with _statistics_held(loop.model):
            steps.scaler.scale(_forward(loop, steps, batch, whole)[2]).backward()


@contextlib.contextmanager
def _put_back(params: list[torch.Tensor]) -> Iterator[None]:
    """The parameters' values now, put back after the block by copy (exactly, not as w + e - e)."""
    saved = [p.detach().clone() for p in params]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved, strict=True):
                p.copy_(value)


@contextlib.contextmanager
def _statistics_held(model: torch.nn.Module) -> Iterator[None]:
    """The running statistics of the BatchNorm layers that train left as they are by the block's forward passes."""
    norms = [m for m in batch_norms(model) if m.training]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def batch_norms(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The BatchNorm layers inside `module`."""
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def read_checkpoint(path: Path, device) -> dict:
    """What `_save_checkpoint` wrote at `path`. Raises UsageError for a checkpoint of another format."""
    saved = torch.load(path, map_location=device, weights_only=True)
    found = saved.get("format") if isinstance(saved, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise UsageError(f"{path}: a checkpoint of format {found}, not {CHECKPOINT_FORMAT}: resume it with the "
                         "fakefinder that wrote it, or train again without --resume")
    return saved


def _save_checkpoint(path: Path, epoch: int, model, steps: _Steps, history: History, best: _Watch,
                     average: _Average | None) -> None:
    from .. import _files

    state = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": _unwrap(model).state_dict(), **steps.state(),
             "history": history.epochs, "best_epoch": history.best_epoch, "best_loss": best.loss,
             "best_state": best.state, "waited": best.waited,
             "average": average.mean.state_dict() if average is not None and average.begun else None}
    with _files.atomic_path(path) as tmp:
        torch.save(state, tmp)
