"""The training core: a prepared dataset and a config in, a calibrated detector with honest metrics out.

No tracking and no tuning here (`experiment.train` adds a tracker, `tuning` calls this per trial). Steps: a
leak-free split; the base; with a frozen base, its cached features and a head trained on them; when fine-tuning,
first that head (a linear probe, cheap since the cache exists), then base and head on augmented images through a
DataLoader, in mixed precision, under DistributedDataParallel when `torchrun` started us; a calibration map and
a threshold fitted on the validation part; the test part predicted once, at the end.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .dataset import PreparedDataset, load_dataset
from .fitting import History, Loop, balanced_indices, fit, param_groups
from .metrics import Evaluation, evaluate_scores
from .modelcard import BaseCard, HeadSpec, ModelCard
from .modelfile import DeepfakeModel
from .progress import ProgressCallback
from .splits import PARTS, Split, load_split, split_dataset

RESIDENT_BYTES = 2 << 30  # features up to this size are copied to the device; larger ones stream from the memmap


@dataclass(frozen=True)
class TrainedDetector:
    """What the core produced: the model (card included), how it learned, and its metrics per part."""

    model: DeepfakeModel
    dataset: PreparedDataset
    split: Split
    history: History
    probe_history: History | None  # the linear probe that started a fine-tuning run
    logits: dict[str, np.ndarray]  # uncalibrated face logits of the scored parts ("val", "test")
    evaluations: dict[str, Evaluation]  # calibrated
    uncalibrated: dict[str, Evaluation]
    backbone_images: int  # crops pushed through the base (0 when the cache had them all and nothing was tuned)
    seconds: float
    device: str
    is_main: bool = True  # False in the other processes of a distributed run (they write nothing)

    @property
    def val(self) -> Evaluation | None:
        return self.evaluations.get("val")

    @property
    def test(self) -> Evaluation | None:
        return self.evaluations.get("test")

    def part_rows(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.split.parts[:len(self.dataset)] == part)


class FeatureRows:
    """Feature rows of one part: resident on the device when small, gathered from the memory map when not."""

    def __init__(self, table, rows: np.ndarray, device: str, budget: int = RESIDENT_BYTES) -> None:
        self.table, self.rows, self.device = table, rows, device
        self.resident = len(rows) * table.dim * 4 <= budget
        self.data = torch.from_numpy(table.take(rows)).to(device) if self.resident else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        if self.resident:
            return self.data[torch.as_tensor(positions, device=self.device)]
        return torch.from_numpy(self.table.take(self.rows[positions])).to(self.device)

    def chunks(self, size: int = 8192):
        for s in range(0, len(self.rows), size):
            yield self[np.arange(s, min(s + size, len(self.rows)))]


def head_logits(head, rows: FeatureRows) -> np.ndarray:
    """Logits of cached feature rows, chunk by chunk: how a frozen-base model scores data."""
    head.eval()
    with torch.no_grad():
        return np.concatenate([head(x).double().cpu().numpy() for x in rows.chunks()] or [np.zeros(0)])


class FineTuneModel(torch.nn.Module):
    """Base + head as one module. With `bn="frozen"` the base's BatchNorm layers keep their running statistics
    (small batches give noisy ones) while their scale and shift still learn."""

    def __init__(self, backbone, head, pool: str, precision: str, bn: str) -> None:
        super().__init__()
        self.backbone, self.base, self.head = backbone, backbone.module, head
        self.pool, self.precision, self.bn = pool, precision, bn

    def train(self, mode: bool = True):
        super().train(mode)
        if self.bn == "frozen":
            for m in self.base.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x):
        from .head import pooled

        return self.head(pooled(self.backbone.features(x, precision=self.precision), self.pool))


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run with `n` intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class _Dist:
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


def _distributed(device: str) -> _Dist:
    """The process group `torchrun` asks for (WORLD_SIZE > 1): gloo on CPUs, NCCL on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned)


def _new_head(in_features: int, config: TrainConfig, device: str):
    from .head import Head

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = Head(HeadSpec(in_features, config.n_layers, config.n_neurons, config.dropout, config.pool))
    return head.to(device)


def _start_head_from_checkpoint(head, weights: str) -> None:
    """A published detector's classifier starts the head when the head has its shape (n_layers 0, avg)."""
    from .backbones._weights import read_tensors
    from .checkpoints import identify

    if weights in ("imagenet", "none") or not Path(weights).is_file():
        return
    tensors = read_tensors(weights)
    layout = identify(tensors)
    if layout is None or head.spec.n_layers != 0 or head.spec.pool != "avg":
        return
    weight, bias = layout.head(tensors)
    if tuple(weight.shape) == tuple(head.layers[0].weight.shape):
        with torch.no_grad():
            head.layers[0].weight.copy_(weight.float())
            head.layers[0].bias.copy_(bias.float())


def _unfreeze(backbone, blocks) -> list:
    units = backbone.blocks() if blocks == "all" else backbone.blocks()[-int(blocks):]
    for unit in units:
        for p in unit.parameters():
            p.requires_grad_(True)
    return units


def fit_detector(data: str | Path | PreparedDataset, config: TrainConfig | None = None, *,
                 split_file: str | Path | None = None, device: str = "auto", cache_dir: str | Path | None = None,
                 evaluate_test: bool = True, progress: ProgressCallback | None = None,
                 checkpoint: str | Path | None = None, resume: bool = False, workers: int | None = None,
                 executor=None, run_id: str = "") -> TrainedDetector:
    """Train a detector on prepared data. Raises UsageError for unusable data or settings.

    `checkpoint` is written after every fine-tuning epoch; `resume` continues from it. `workers` are the input
    pipeline's processes; `executor` spreads feature extraction (see `executors`).
    """
    from .backbones import create_backbone
    from .calibration import choose_verdict, fit_calibration
    from .features import FeatureCache, Recipe
    from .hardware import resolve_device, resolve_precision
    from .head import in_features
    from .loader import default_workers
    from .manifest import features_dir

    t0 = time.perf_counter()
    config = config or TrainConfig()
    dataset = data if isinstance(data, PreparedDataset) else load_dataset(data)
    split = (load_split(split_file, dataset) if split_file else
             split_dataset(dataset, by=config.split, val=config.val, test=config.test, seed=config.seed))
    n = len(dataset)
    parts = {p: np.flatnonzero(split.parts[:n] == p) for p in PARTS}
    dist = _distributed(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    device = resolve_device(device, local_rank=dist.local_rank)
    precision = resolve_precision(config.precision, device)
    backbone = create_backbone(config.backbone, weights=config.weights, input_size=config.input_size,
                               normalization=config.normalization, seed=config.seed)
    y = dataset.labels.astype(np.float32)
    train_rows = parts["train"][balanced_indices(dataset.labels[parts["train"]], config.balance,
                                                 np.random.default_rng(config.seed))]
    channels, side, _ = backbone.feature_shape()
    head = _new_head(in_features(channels, side, config.pool), config, device)
    _start_head_from_checkpoint(head, config.weights)
    files = dataset.crop_files
    scored = [p for p in ("val", "test") if len(parts[p]) and (p == "val" or evaluate_test)]
    logits: dict[str, np.ndarray] = {}
    probe_history = None

    if config.frozen or config.probe:
        cache = FeatureCache(cache_dir or features_dir(dataset.root), backbone, config.pool, precision=precision)
        if not dist.main:
            dist.barrier()  # the first process extracts; the others then read the cache
        table = cache.features(list(files), device=device, progress=progress, executor=executor,
                               recipe=Recipe.of(backbone, config.weights, config.seed))
        if dist.main:
            dist.barrier()
        rows = {p: FeatureRows(table, r, device) for p, r in {**parts, "fit": train_rows}.items()}
        y_fit = torch.from_numpy(y[train_rows]).to(device)

        def cached_batches(epoch: int):
            from .fitting import epoch_rng

            order = epoch_rng(config.seed, epoch).permutation(len(train_rows))
            for s in range(0, len(order), config.batch_size):
                b = order[s:s + config.batch_size]
                yield rows["fit"][b], y_fit[torch.as_tensor(b, device=device)]

        loop = Loop(head, cached_batches, -(-len(train_rows) // config.batch_size), len(train_rows),
                    (lambda: _sigmoid(head_logits(head, rows["val"]))) if len(parts["val"]) else None,
                    y[parts["val"]], y[train_rows], param_groups(head, None, config))
        # A head on cached features is many tiny steps: one CPU thread runs them several times faster than two.
        with cpu_threads(1 if device == "cpu" else torch.get_num_threads()):
            head_history = fit(loop, config, progress=progress, stage="head")
        if config.frozen:
            history = head_history
            logits = {p: head_logits(head, rows[p]) for p in scored}
        else:
            probe_history = head_history

    if not config.frozen:
        history, logits = _fine_tune(backbone, head, files, y, parts, train_rows, scored, config, device, precision,
                                     dist, workers if workers is not None else default_workers(), progress,
                                     Path(checkpoint) if checkpoint else None, resume,
                                     getattr(dataset.settings, "margin", 0.3))

    val_rows = parts["val"]
    calibration = fit_calibration(logits.get("val", []), dataset.labels[val_rows], config.calibration)
    probs = {p: calibration.apply(z) for p, z in logits.items()}
    verdict = choose_verdict(dataset.video_ids[val_rows], dataset.labels[val_rows], probs.get("val", np.zeros(0)),
                             video_rule=config.video_rule, threshold=config.threshold, target_fpr=config.target_fpr)

    def evaluation(part: str, p: np.ndarray) -> Evaluation:
        rows_ = parts[part]
        return evaluate_scores(dataset.video_ids[rows_], dataset.labels[rows_], p, threshold=verdict.threshold,
                               rule=config.video_rule,
                               no_face_videos=int(np.sum(split.parts[n:] == part)))

    evaluations = {p: evaluation(p, probs[p]) for p in scored}
    uncalibrated = {p: evaluation(p, _sigmoid(logits[p])) for p in scored}
    base = BaseCard(backbone.spec.name, backbone.weights, backbone.weights_digest, backbone.input_size,
                    backbone.normalization, not config.frozen,
                    str(Path(config.weights).resolve()) if config.frozen and Path(config.weights).is_file() else None)
    card = ModelCard(base=base, head=head.spec, calibration=calibration, verdict=verdict, precision=precision,
                     prepare=dataset.settings, data_digest=dataset.manifest_digest, dataset=dataset.name,
                     run_id=run_id, seed=config.seed, train=config.to_params())
    model = DeepfakeModel(backbone, head.eval(), card).to("cpu")  # one device for base and head
    if dist.owned:
        torch.distributed.destroy_process_group()
    return TrainedDetector(model, dataset, split, history, probe_history, logits, evaluations, uncalibrated,
                           backbone.images_seen, time.perf_counter() - t0, device, dist.main)


def _sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, dtype=np.float64), -60, 60)))


def _fine_tune(backbone, head, files, y, parts, train_rows, scored, config: TrainConfig, device: str,
               precision: str, dist: _Dist, workers: int, progress, checkpoint: Path | None, resume: bool,
               margin: float) -> tuple[History, dict[str, np.ndarray]]:
    """Base (its last K blocks, or all) + head on augmented images; returns (history, logits per scored part)."""
    from .augment import Augmenter
    from .loader import CropDataset, EpochBatches, batches, iterate, make_loader

    dev = torch.device(device)
    units = _unfreeze(backbone, config.trainable_blocks)
    model = FineTuneModel(backbone, head, config.pool, precision, config.bn).to(dev)
    base_params = torch.nn.ModuleList(units)
    groups = param_groups(head, base_params, config, probed=config.probe)
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    augmenter = Augmenter.from_spec(config.augment, margin=margin)
    train_set = CropDataset(files, y, backbone.preprocess_one, augmenter, config.seed)
    plain_set = CropDataset(files, y, backbone.preprocess_one, None, config.seed)
    sampler = EpochBatches(train_rows, config.batch_size, config.seed, shuffle=True, rank=dist.rank,
                           world=dist.world)
    train_loader = make_loader(train_set, sampler, workers=workers, device=dev)
    scoring = {part: make_loader(plain_set, EpochBatches(np.array_split(parts[part], dist.world)[dist.rank], 64,
                                                         config.seed, shuffle=False),
                                 workers=min(workers, 2), device=dev) for part in {"val", *scored}}

    def predict(part: str) -> np.ndarray:
        """Logits of a part: each process scores its share, then all gather (in order)."""
        loader = scoring[part]
        model.eval()
        out = []
        with torch.inference_mode():
            for x, _ in iterate(loader):
                out.append(model(x.to(dev).contiguous(memory_format=torch.channels_last)).double().cpu().numpy())
        mine_logits = np.concatenate(out) if out else np.zeros(0)
        return np.concatenate(dist.gather(mine_logits))

    loop = Loop(net, batches(train_loader, dev), len(sampler), len(train_rows),
                (lambda: _sigmoid(predict("val"))) if len(parts["val"]) else None, y[parts["val"]], y[train_rows],
                groups, precision, checkpoint, dist.main, dist.agree, dist.world, sampler.global_size)
    history = fit(loop, config, resume=resume, progress=progress, stage="fine-tune")
    logits = {p: predict(p) for p in scored}
    for p in backbone.module.parameters():
        p.requires_grad_(False)
    return history, logits
