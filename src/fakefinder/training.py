"""Training loops: a head on cached features (frozen base), or base + head on images (fine-tuning).

Both are seeded and deterministic on the CPU; both stop early on validation loss with `patience` and then
restore the best epoch's weights. The test part never reaches this module.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from .errors import UsageError
from .metrics import binary_metrics

Optimizer = Literal["rmsprop", "adam"]
Balance = Literal["undersample", "weight", "none"]


@dataclass(frozen=True)
class TrainConfig:
    """Every option of `fakefinder train`; defaults in code, presets replace some of them."""

    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"  # "imagenet" | "none" | path to .pth/.safetensors
    input_size: int | None = None  # None: the backbone's own
    normalization: str | None = None  # None: what the weights were trained with
    pool: Literal["flatten", "avg"] = "avg"
    n_layers: int = 1
    n_neurons: int = 256
    dropout: float = 0.0
    optimizer: Optimizer = "rmsprop"
    lr: float = 1e-3
    epochs: int = 30
    batch_size: int = 32
    patience: int | None = 5  # None: no early stopping
    balance: Balance = "undersample"
    trainable_blocks: int = 0  # > 0: fine-tune the last K blocks of the base, with augmentation, no cache
    split: Literal["source", "video", "frame"] = "source"
    val: float = 0.2
    test: float = 0.2
    seed: int = 0
    video_rule: Literal["mean", "confident"] = "mean"
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast in the base (see README for its measured effect)

    @classmethod
    def reference(cls, **overrides) -> TrainConfig:
        """The reference study: VGG16 on 0-1 pixels at 150 px, Flatten, Dense(256), RMSprop 2e-5, 10 epochs."""
        base = dict(backbone="vgg16", input_size=150, normalization="rescale", pool="flatten", n_layers=1,
                    n_neurons=256, optimizer="rmsprop", lr=2e-5, epochs=10, batch_size=10, patience=None,
                    balance="undersample")
        return cls(**{**base, **overrides})

    @classmethod
    def reference_tuned(cls, **overrides) -> TrainConfig:
        """The study's tuned variant: 128 neurons, lr 1e-5, up to 100 epochs, early stopping patience 3."""
        return cls.reference(**{"n_neurons": 128, "lr": 1e-5, "epochs": 100, "patience": 3, **overrides})

    def validate(self) -> None:
        """Raises UsageError naming the first unusable option."""
        checks = [(self.n_layers >= 0, "--n-layers must be >= 0"), (self.n_neurons >= 1, "--n-neurons must be >= 1"),
                  (0 <= self.dropout < 1, "--dropout must be in [0, 1)"), (self.lr > 0, "--lr must be positive"),
                  (self.epochs >= 1, "--epochs must be >= 1"), (self.batch_size >= 1, "--batch-size must be >= 1"),
                  (self.patience is None or self.patience >= 1, "--patience must be >= 1"),
                  (self.trainable_blocks >= 0, "--trainable-blocks must be >= 0"),
                  (self.optimizer in ("rmsprop", "adam"), "--optimizer must be rmsprop or adam"),
                  (self.balance in ("undersample", "weight", "none"), "--balance must be undersample, weight or none"),
                  (self.pool in ("flatten", "avg"), "--pool must be flatten or avg"),
                  (self.precision in ("fp32", "bf16"), "--precision must be fp32 or bf16")]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def to_params(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass
class History:
    """Per-epoch metrics (train_loss, train_accuracy, val_loss, val_accuracy, val_auc) and the best epoch."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; 0 = none

    @property
    def completed(self) -> int:
        return len(self.epochs)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here")
    return device


def balanced_indices(y: np.ndarray, how: Balance, rng: np.random.Generator) -> np.ndarray:
    """Rows to train on: all, or the majority class randomly cut to the minority's size (the reference)."""
    idx = np.arange(len(y))
    if how != "undersample":
        return idx
    pos, neg = idx[y == 1], idx[y == 0]
    if min(len(pos), len(neg)) == 0:
        return idx
    n = min(len(pos), len(neg))
    keep = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    return np.sort(keep)


def _optimizer(params, config: TrainConfig):
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, eps=1e-7)  # Keras' RMSprop defaults


def _loss_fn(y: np.ndarray, how: Balance, device: str):
    import torch

    pos = float((y == 1).sum())
    weight = (len(y) - pos) / pos if how == "weight" and pos > 0 else None
    pos_weight = torch.tensor(weight, device=device) if weight else None
    return torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)


def fit(model, batches: Callable, predict: Callable, train_y: np.ndarray, val_y: np.ndarray | None,
        config: TrainConfig, *, on_epoch: Callable[[int, dict], None] | None = None) -> History:
    """The one training loop. `batches(epoch_rng)` yields (x, y) tensors of one shuffled epoch over the
    training rows; `predict("val")` returns P(fake) for the validation rows. Restores the best epoch's weights.
    """
    device = next(model.parameters()).device
    rng = np.random.default_rng(config.seed)
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], config)
    loss_fn = _loss_fn(train_y, config.balance, device)
    history, best_loss, best_state, waited = History(), math.inf, None, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, correct, seen = 0.0, 0, 0
        for x, y in batches(rng):
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            correct += int(((logits >= 0) == (y >= 0.5)).sum())
            seen += len(y)
        row = {"train_loss": total / seen, "train_accuracy": correct / seen}
        if val_y is not None and len(val_y):
            p = predict("val")
            # The loss early stopping watches clips as Keras does (1e-7), not as the DFDC log loss (1e-15).
            q = np.clip(p, 1e-7, 1 - 1e-7)
            row["val_loss"] = float(-np.mean(val_y * np.log(q) + (1 - val_y) * np.log(1 - q)))
            m = binary_metrics(val_y, p)
            row["val_accuracy"], row["val_auc"] = m.accuracy, m.auc
        history.epochs.append(row)
        if on_epoch:
            on_epoch(epoch, row)
        monitored = row.get("val_loss", row["train_loss"])
        if monitored < best_loss - 1e-6:
            best_loss, waited, history.best_epoch = monitored, 0, epoch
            best_state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
        else:
            waited += 1
            if config.patience is not None and "val_loss" in row and waited >= config.patience:
                break
    if config.patience is not None and best_state is not None:
        model.load_state_dict(best_state)  # restore_best_weights
    else:
        history.best_epoch = history.completed
    model.eval()
    return history
