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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..config import TrainSettings
from ..data.dataset import PreparedDataset, load_dataset
from ..data.manifest import features_dir
from ..data.splits import PARTS, Split, load_split, split_dataset
from ..errors import OptionError, UsageError
from ..hardware import Compute, resolve_device, resolve_precision
from ..metrics import AucInterval, Evaluation, evaluate_videos, sigmoid
from ..models.backbones import Recipe
from ..models.calibration import choose_verdict, fit_calibration
from ..models.features import FeatureCache, FeatureRows, head_logits
from ..models.head import in_features, pooled
from ..models.modelcard import BaseCard, Evidence, HeadSpec, ModelCard, StrengthCard
from ..models.modelfile import DeepfakeModel
from ..progress import ProgressCallback
from .augment import Augmenter, parse_augment
from .finetune import History, Loop, Processes, balanced_indices, batch_norms, epoch_rng, fit, param_groups
from .loader import CropDataset, EpochBatches, batches, default_workers, epoch_sides, iterate, make_loader
from .pseudofakes import METHOD, FreshBlends, with_pseudo_fakes

# The phases of a run whose wall time `TrainedDetector.phases` records: what precedes the first network pass
# (reading the data, the pseudo-fakes' meshes, building the base); the frozen base's features and the head fitted on
# them (a linear probe, or the whole frozen training); the fine-tuning epochs, their validation passes included
# (each epoch's own share is in its history row); the final scoring of the val and test parts; the calibration.
PHASES = ("start", "head", "fine_tune", "scoring", "calibration")


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
    phases: dict[str, float] = field(default_factory=dict)  # where `seconds` went: see `PHASES`

    @property
    def val(self) -> Evaluation | None:
        return self.evaluations.get("val")

    @property
    def test(self) -> Evaluation | None:
        return self.evaluations.get("test")

    def part_rows(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.split.parts[:len(self.dataset)] == part)


class FineTuneModel(torch.nn.Module):
    """Base + head as one module. With `bn="frozen"` the base's BatchNorm layers keep their running statistics
    (small batches give noisy ones) while their scale and shift still learn. With `blend_map` > 0, a 1 x 1
    convolution reads the base's last feature map as where the image was blended (`--blend-map`: trained beside the
    head, left out of the model file); given the masks, the model returns that loss with the logits."""

    def __init__(self, backbone, head, pool: str, precision: str, bn: str, blend_map: float = 0.0) -> None:
        super().__init__()
        self.backbone, self.base, self.head = backbone, backbone.module, head
        self.pool, self.precision, self.bn = pool, precision, bn
        self.blend_weight = blend_map
        self.blend_map = None
        if blend_map > 0:
            self.blend_map = torch.nn.Conv2d(backbone.spec.channels, 1, 1)
            torch.nn.init.zeros_(self.blend_map.weight)  # no draw from the RNG: the run's other draws stay as they were
            torch.nn.init.zeros_(self.blend_map.bias)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.bn == "frozen":
            for m in batch_norms(self.base):
                m.eval()
        return self

    def forward(self, x, mask=None, known=None):
        maps = self.backbone.features(x, precision=self.precision)
        logits = self.head(pooled(maps, self.pool))
        if mask is None or self.blend_map is None:
            return logits
        return logits, self.blend_weight * blend_map_loss(self.blend_map(maps), mask, known)


def blend_map_loss(z: torch.Tensor, mask: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Summed over the batch, as the classification loss is: each image's mean binary cross-entropy between the map's
    logits `z` (N, 1, h, w) and the share of each of its cells the mask covers, for the images whose mask is known."""
    target = torch.nn.functional.adaptive_avg_pool2d(mask[:, None].float(), z.shape[-2:])
    each = torch.nn.functional.binary_cross_entropy_with_logits(z.float(), target, reduction="none").mean((1, 2, 3))
    return (each * known).sum()


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run with `n` intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _distributed(device: str) -> Processes:
    """The process group `torchrun` asks for (WORLD_SIZE > 1): gloo on CPUs, NCCL on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned)


def _new_head(in_features: int, config: TrainSettings, device: str):
    from ..models.head import Head

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = Head(HeadSpec(in_features, config.n_layers, config.n_neurons, config.dropout, config.pool))
    return head.to(device)


def _start_head_from_checkpoint(head, weights: str) -> None:
    """A published detector's classifier starts the head when the head has its shape (n_layers 0, avg)."""
    from ..models.backbones import read_checkpoint

    if weights in ("imagenet", "none") or not Path(weights).is_file():
        return
    checkpoint = read_checkpoint(weights)
    if checkpoint.layout is None or head.spec.n_layers != 0 or head.spec.pool != "avg":
        return
    weight, bias = checkpoint.head()
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


@dataclass(frozen=True)
class _Parts:
    """The dataset as the loops see it: crop files, labels, and the rows of each part."""

    files: np.ndarray
    y: np.ndarray  # float32 labels of every crop
    rows: dict[str, np.ndarray]  # part -> manifest rows
    train_rows: np.ndarray  # the training rows after class balancing
    scored: list[str]  # the parts predicted at the end ("val", and "test" unless left out)
    margin: float  # of the crops, for the augmentations that find face parts
    fresh: FreshBlends | None = None  # when fine-tuning on pseudo-fakes: made anew every epoch
    part_boxes: np.ndarray | None = None  # per row, where its eyes, nose and mouth are (for `parts`)
    together: np.ndarray | None = None  # per row, its real crop's row (itself for a real): batched side by side


@dataclass(frozen=True)
class RunContext:
    """The recorded run a training belongs to: its id and name (both on the model card; the name defaults to the
    dataset's and the backbone's), and its checkpoint, written after every fine-tuning epoch, which `resume`
    continues from."""

    run_id: str = ""
    name: str | None = None
    checkpoint: Path | None = None
    resume: bool = False


@dataclass(frozen=True)
class _Run:
    """Where and how this run computes, and the run it belongs to."""

    device: str
    precision: str
    processes: Processes
    progress: ProgressCallback | None
    loader_processes: int
    context: RunContext


def training_data(data: str | Path | PreparedDataset, config: TrainSettings, *,
                  progress: ProgressCallback | None = None) -> PreparedDataset:
    """The crops a run learns from: the prepared data, with self-blended pseudo-fakes made from its reals when
    `config.fakes` asks (a dataset that has them already is taken as it is). Raises UsageError for data that
    cannot train: one class only with `--fakes real`, no reals to blend."""
    dataset = data if isinstance(data, PreparedDataset) else load_dataset(data, need_both_classes=False)
    if config.fakes != "real":
        return dataset if (dataset.methods == METHOD).any() else with_pseudo_fakes(dataset, config,
                                                                                    progress=progress)
    if len(np.unique(dataset.labels)) < 2:
        kind = "FAKE" if dataset.labels[0] else "REAL"
        hint = ": --fakes self-blended learns from pseudo-fakes made from them" if kind == "REAL" else ""
        raise UsageError(f"{dataset.root}: one class only (all {kind}); --fakes real needs both{hint}")
    return dataset


def one_detector(config: TrainSettings) -> None:
    """Raises OptionError for settings that ask for several detectors (`workflows.training` builds those)."""
    if config.ensemble > 1:
        raise OptionError("ensemble", f"{config.ensemble} trains {config.ensemble} detectors and combines them, which "
                                      "`fakefinder train` does: this trains one (give 1)")
    if config.combined:
        raise OptionError("both", "combined trains two detectors and combines them, which `fakefinder train` does: "
                                  "this trains one (give mixed for one detector on both kinds of fakes)")


def fit_detector(data: str | Path | PreparedDataset, config: TrainSettings | None = None, *,
                 compute: Compute | None = None, split_file: str | Path | None = None, evaluate_test: bool = True,
                 run: RunContext | None = None, progress: ProgressCallback | None = None) -> TrainedDetector:
    """Train a detector on prepared data. Raises UsageError for unusable data or settings.

    `compute` says where: the device, the input pipeline's processes, an executor that spreads feature extraction
    (see `executors`), the feature cache, and the runtime ("onnx" extracts a frozen base's features with ONNX
    Runtime, at fp32, so the card says fp32). `run` is the recorded run it belongs to (its checkpoint included).
    """
    t0 = time.perf_counter()
    config = config or TrainSettings()
    compute, context = compute or Compute(), run or RunContext()
    one_detector(config)
    runtime = compute.runtime
    if runtime == "onnx":
        from ..models.onnxfile import require_onnx

        if not config.frozen:
            raise OptionError("runtime", "onnx extracts a frozen base's features: fine-tuning the base needs torch")
        if config.precision not in ("auto", "fp32"):
            raise OptionError("runtime", f"onnx computes the base at fp32: give --precision fp32 or auto, not "
                                         f"{config.precision}")
        require_onnx("--runtime onnx")
    dataset = training_data(data, config, progress=progress)
    split = (load_split(split_file, dataset) if split_file else
             split_dataset(dataset, by=config.split, val=config.val, test=config.test, seed=config.seed))
    rows = {p: np.flatnonzero(split.parts[:len(dataset)] == p) for p in PARTS}
    train_rows = rows["train"][balanced_indices(dataset.labels[rows["train"]], config.balance,
                                                np.random.default_rng(config.seed))]
    fresh = None if config.frozen else FreshBlends.of(dataset, config)
    own = np.arange(len(dataset)) if dataset.origins is None else np.where(dataset.origins >= 0, dataset.origins,
                                                                           np.arange(len(dataset)))
    wants_parts = not config.frozen and any(name == "parts" for name, _ in parse_augment(config.augment))
    # batched side by side: a real crop and its pseudo-fakes, or (--pair-batches) a fake and its original
    together = own if fresh is not None else dataset.pair_keys() if config.pair_batches else None
    parts = _Parts(dataset.crop_files, dataset.labels.astype(np.float32), rows, train_rows,
                   [p for p in ("val", "test") if len(rows[p]) and (p == "val" or evaluate_test)], dataset.margin,
                   fresh=fresh, together=together,
                   part_boxes=_part_boxes(dataset, own, train_rows, progress) if wants_parts else None)
    device = resolve_device(compute.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))  # torchrun's
    setup = _Run(device, "fp32" if runtime == "onnx" else resolve_precision(config.precision, device),
                 _distributed(device), progress,
                 default_workers() if compute.processes is None else compute.processes,
                 replace(context, name=context.name or f"{dataset.name}-{config.backbone}"))
    backbone = Recipe.of(config).build()
    sides = _sides(config, backbone.input_size)  # checked before any work
    channels, side, _ = backbone.feature_shape()
    head = _new_head(in_features(channels, side, config.pool), config, device)
    _start_head_from_checkpoint(head, config.weights)

    phases = {"start": time.perf_counter() - t0}
    logits: dict[str, np.ndarray] = {}
    history = probe_history = None
    if config.frozen or config.probe:
        with _timed(phases, "head"):
            cache = FeatureCache(compute.cache_dir or features_dir(dataset.root), backbone, config.pool,
                                 precision=setup.precision, runtime=runtime)
            # a probe's head is a starting point: the weights' mean (--average-weights) is fine-tuning's
            probe = config if config.frozen else config.replace(average_weights=0.0)
            history, logits = _fit_head(cache, head, parts, probe, setup, compute.executor, score=config.frozen)
    if not config.frozen:
        probe_history = history
        history, logits = _fine_tune(backbone, head, parts, config, setup, phases, sides)

    with _timed(phases, "calibration"):
        model, evaluations, uncalibrated = _calibrated(backbone, head, dataset, split, logits, config, setup)
    if setup.processes.owned:
        torch.distributed.destroy_process_group()
    return TrainedDetector(model, dataset, split, history, probe_history, logits, evaluations, uncalibrated,
                           backbone.images_seen, time.perf_counter() - t0, device, setup.processes.main, phases)


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0


def _part_boxes(dataset: PreparedDataset, own: np.ndarray, train_rows: np.ndarray, progress) -> np.ndarray | None:
    """Per row, the boxes of its face's parts from the face mesh of its crop (a pseudo-fake's: its real's); NaN for
    rows that are not trained on. None without the mesh model: the crops' geometry places the parts."""
    from ..data.landmarks import face_mesh_installed
    from .augment import FACE_PARTS, mesh_part_boxes

    if not face_mesh_installed():
        return None
    crops, inverse = np.unique(own[train_rows], return_inverse=True)
    meshes = dataset.landmarks(crops, progress=progress)
    boxes = np.full((len(dataset), len(FACE_PARTS), 4), np.nan, dtype=np.float32)
    boxes[train_rows] = np.stack([mesh_part_boxes(m) for m in meshes])[inverse]
    return boxes


def _fit_head(cache: FeatureCache, head, parts: _Parts, config: TrainSettings, run: _Run, executor, *,
              score: bool) -> tuple[History, dict[str, np.ndarray]]:
    """The head on the frozen base's cached features (extracted first where missing); returns (history, logits per
    scored part, when `score`: a probe that fine-tuning continues scores nothing, so it extracts only the rows it
    fits and watches, not the test part or training rows left out, and a cold first run saves that pass)."""
    processes, device = run.processes, run.device
    used = {"fit": parts.train_rows, "val": parts.rows["val"]}
    if score:
        used.update({p: parts.rows[p] for p in parts.scored})
    needed = np.arange(len(parts.files)) if score else np.unique(np.concatenate(list(used.values())))
    if not processes.main:
        processes.barrier()  # the first process extracts; the others then read the cache
    table = cache.features(list(parts.files[needed]), device=device, progress=run.progress, executor=executor)
    if processes.main:
        processes.barrier()
    position = np.full(len(parts.files), -1)
    position[needed] = np.arange(len(needed))
    rows = {p: FeatureRows(table, position[r], device) for p, r in used.items()}
    y_fit = torch.from_numpy(parts.y[parts.train_rows]).to(device)

    def cached_batches(epoch: int):
        order = epoch_rng(config.seed, epoch).permutation(len(parts.train_rows))
        for s in range(0, len(order), config.batch_size):
            b = order[s:s + config.batch_size]
            yield rows["fit"][b], y_fit[torch.as_tensor(b, device=device)]

    has_val = len(parts.rows["val"]) > 0
    loop = Loop(model=head, batches=cached_batches, steps_per_epoch=-(-len(parts.train_rows) // config.batch_size),
                images_per_epoch=len(parts.train_rows),
                val_logits=(lambda: head_logits(head, rows["val"])) if has_val else None,
                val_y=parts.y[parts.rows["val"]], train_y=parts.y[parts.train_rows],
                groups=param_groups(head, None, config))
    # A head on cached features is many tiny steps: one CPU thread runs them several times faster than two.
    with cpu_threads(1 if device == "cpu" else torch.get_num_threads()):
        history = fit(loop, config, progress=run.progress, stage="head")
    return history, {p: head_logits(head, rows[p]) for p in parts.scored} if score else {}


_NO_VIDEOS: tuple[list, np.ndarray, np.ndarray] = ([], np.zeros(0, dtype=np.int64), np.zeros(0))  # a part not scored


def _calibrated(backbone, head, dataset: PreparedDataset, split: Split, logits: dict[str, np.ndarray],
                config: TrainSettings, run: _Run):
    """The calibration map and threshold fitted on validation, the model with its card (the evidence a reader
    weighs its verdicts by, and the strength-of-evidence map), and the evaluations of the scored parts, calibrated
    and not."""
    val_rows = np.flatnonzero(split.parts[:len(dataset)] == "val")
    calibration = fit_calibration(logits.get("val", []), dataset.labels[val_rows], config.calibration)
    probs = {p: calibration.apply(z) for p, z in logits.items()}
    rows = {p: np.flatnonzero(split.parts[:len(dataset)] == p) for p in logits}
    videos = {p: dataset.videos(rows[p], probs[p], config.video_rule) for p in logits}  # (ids, labels, scores)
    _, vy, vp = videos.get("val", _NO_VIDEOS)
    verdict = choose_verdict(vy, vp, video_rule=config.video_rule, threshold=config.threshold,
                             target_fpr=config.target_fpr, band=config.inconclusive)

    def evaluation(part: str, p: np.ndarray, scored: tuple[list, np.ndarray, np.ndarray]) -> Evaluation:
        return evaluate_videos(dataset.labels[rows[part]], p, *scored[1:], threshold=verdict.threshold,
                               no_face_videos=int(np.sum(split.parts[len(dataset):] == part)))

    evaluations = {p: evaluation(p, probs[p], videos[p]) for p in logits}
    raw = {p: sigmoid(z) for p, z in logits.items()}
    uncalibrated = {p: evaluation(p, raw[p], dataset.videos(rows[p], raw[p], config.video_rule)) for p in logits}
    base = BaseCard(backbone.spec.name, backbone.weights, backbone.weights_digest, backbone.input_size,
                    backbone.normalization, not config.frozen,
                    str(Path(config.weights).resolve()) if config.frozen and Path(config.weights).is_file() else None)
    evidence = _evidence(run.context.name, dataset, split, videos.get("test"), evaluations.get("test"), config)
    card = ModelCard(base=base, head=head.spec, calibration=calibration, verdict=verdict, precision=run.precision,
                     prepare=dataset.settings, data_digest=dataset.manifest_digest, dataset=dataset.name,
                     evidence=evidence, run_id=run.context.run_id, seed=config.seed, train=config.to_params(),
                     face_fill=dataset.face_fill(), strength=_strength(dataset, videos, config,
                                                                       evidence.val_fakes))
    model = DeepfakeModel(backbone, head.eval(), card).to("cpu")  # one device for base and head
    return model, evaluations, uncalibrated


def _evidence(name: str, dataset: PreparedDataset, split: Split, tested: tuple[list, np.ndarray, np.ndarray] | None,
              test: Evaluation | None, config: TrainSettings) -> Evidence:
    """How many videos each part held (faceless ones too), which fakes validation held, and the test part's video
    AUC (as evaluated) with its 95% bootstrap interval over the test videos' sources."""
    ids = np.concatenate([dataset.video_ids, dataset.no_face.video_ids])
    val_fakes = dataset.methods[(split.parts[:len(dataset)] == "val") & (dataset.labels == 1)]
    pseudo = val_fakes == METHOD
    validated = "both" if pseudo.any() and not pseudo.all() else "self-blended" if pseudo.any() else "real"
    videos = {p: len(set(ids[split.parts == p])) for p in PARTS}
    auc = low = high = None
    if tested is not None and test is not None and not np.isnan(test.video.auc):
        ids, vy, vp = tested
        interval = AucInterval.of(vy, vp, dataset.sources(ids), seed=config.seed)
        auc, low, high = test.video.auc, interval.low, interval.high
    return Evidence(name, videos["train"], videos["val"], videos["test"], auc, low, high, validated)


def _strength(dataset: PreparedDataset, scored: dict[str, tuple[list, np.ndarray, np.ndarray]], config: TrainSettings,
              fakes: str) -> StrengthCard:
    """The score-to-LR map fitted on the validation videos' calibrated video scores (`scored`, per part: one per
    video, by the card's video rule; counted by source), and its LRs' Cllr, Cllr_min and EER on the test videos;
    each left out (None) where its part is not both real and fake."""
    from ..models.strength import cllr, cllr_min, eer, fit_strength

    def videos(part: str) -> tuple[np.ndarray, np.ndarray, list]:
        ids, vy, vp = scored.get(part, _NO_VIDEOS)
        return vy, vp, dataset.sources(ids)

    def both(y: np.ndarray) -> bool:
        return len(np.unique(y)) == 2

    vy, vp, sources = videos("val")
    if not both(vy):
        return StrengthCard(config.conclusive_lr)
    fitted = fit_strength(vp, vy, fakes=fakes, sources=sources)
    ty, tp, _ = videos("test")
    if not both(ty):
        return StrengthCard(config.conclusive_lr, len(ty), map=fitted)
    return StrengthCard(config.conclusive_lr, len(ty), cllr(fitted.likelihood_ratios(tp), ty), cllr_min(tp, ty),
                        eer(tp, ty), fitted)


def _sides(config: TrainSettings, full: int) -> tuple[int, ...] | None:
    """The image side of each fine-tuning epoch, where `progressive` resizing asks for them."""
    if config.progressive is None:
        return None
    if config.progressive > full:
        raise OptionError("progressive", f"{config.progressive} is above the base's input size {full}: it is where "
                          "the images start, growing to the input size")
    return epoch_sides(config.progressive, full, config.epochs)


def _fine_tune(backbone, head, parts: _Parts, config: TrainSettings, run: _Run, phases: dict[str, float],
               sides: tuple[int, ...] | None) -> tuple[History, dict[str, np.ndarray]]:
    """Base (its last K blocks, or all) + head on augmented images, at `sides` per epoch where given; returns
    (history, logits per scored part)."""
    dev, processes = torch.device(run.device), run.processes
    units = _unfreeze(backbone, config.trainable_blocks)
    model = FineTuneModel(backbone, head, config.pool, run.precision, config.bn, config.blend_map).to(dev)
    groups = param_groups(head, torch.nn.ModuleList(units), config, probed=config.probe)
    if model.blend_map is not None:  # new, so at the head's learning rate
        groups += param_groups(model.blend_map, None, config)
    net = model
    if processes.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    augmenter = Augmenter.from_spec(config.augment, margin=parts.margin)
    train_set = CropDataset(parts.files, parts.y, backbone.preprocess_one, augmenter, config.seed, parts.fresh,
                            parts.part_boxes, draws=parts.together if config.pair_augment == "alike" else None,
                            sides=sides, blend_map=config.blend_map > 0)
    plain_set = CropDataset(parts.files, parts.y, backbone.preprocess_one, None, config.seed)
    sampler = EpochBatches(parts.train_rows, config.batch_size, config.seed, shuffle=True, rank=processes.rank,
                           world=processes.world, together=parts.together)
    train_loader = make_loader(train_set, sampler, workers=run.loader_processes, device=dev)
    mine = {part: np.array_split(parts.rows[part], processes.world)[processes.rank] for part in {"val", *parts.scored}}
    scoring = {part: make_loader(plain_set, EpochBatches(rows, 64, config.seed, shuffle=False),
                                 workers=min(run.loader_processes, 2), device=dev) for part, rows in mine.items()}

    def predict(part: str) -> np.ndarray:
        """Logits of a part: each process scores its share, then all gather (in order)."""
        model.eval()
        out = []
        with torch.inference_mode():
            for x, _ in iterate(scoring[part]):
                out.append(model(x.to(dev).contiguous(memory_format=torch.channels_last)).double().cpu().numpy())
        return np.concatenate(processes.gather(np.concatenate(out) if out else np.zeros(0)))

    has_val = len(parts.rows["val"]) > 0
    loop = Loop(model=net, batches=batches(train_loader, dev), steps_per_epoch=len(sampler),
                images_per_epoch=len(parts.train_rows),
                val_logits=(lambda: predict("val")) if has_val else None,
                val_y=parts.y[parts.rows["val"]], train_y=parts.y[parts.train_rows], groups=groups,
                precision=run.precision, checkpoint=run.context.checkpoint, processes=processes,
                global_batch=sampler.global_size)
    with _timed(phases, "fine_tune"):
        history = fit(loop, config, resume=run.context.resume, progress=run.progress, stage="fine-tune")
    with _timed(phases, "scoring"):  # validation scored the weights the model ends with: those logits stand
        logits = {p: history.val_logits if p == "val" and history.val_logits is not None else predict(p)
                  for p in parts.scored}
    for p in backbone.module.parameters():
        p.requires_grad_(False)
    return history, logits
