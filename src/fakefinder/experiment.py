"""`train`: one tracked experiment — prepared data -> leak-free split -> features -> head -> honest metrics
-> model file -> MLflow run. The test part is predicted once, at the end, with the restored best weights.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from .manifest import MANIFEST, PREPARE_INFO, VIDEOS, features_dir
from .metrics import Evaluation
from .metrics import format_metric as fmt
from .training import History, TrainConfig


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_path: Path
    val: Evaluation | None
    test: Evaluation | None  # None when the run did not look at its test part (tuning trials)
    history: History
    split_by: str
    backbone_images: int  # crops pushed through the base in this run (0 when the cache had them all)
    seconds: float

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "model_path": str(self.model_path),
                "val": self.val.to_dict() if self.val else None, "test": self.test.to_dict() if self.test else None,
                "epochs_completed": self.history.completed, "best_epoch": self.history.best_epoch,
                "split": self.split_by, "leaky_split": self.split_by == "frame"}

    def summary(self) -> str:
        def part(name, ev):
            if ev is None:
                return f"{name}: -"
            v = ev.video
            return f"{name} video AUC {fmt(v.auc)} log loss {fmt(v.log_loss)} acc {fmt(v.accuracy)} (n={v.n})"

        leak = " [LEAKY frame split]" if self.split_by == "frame" else ""
        return (f"run {self.run_id}: {self.history.completed} epochs (best {self.history.best_epoch}); "
                f"{part('val', self.val)}; {part('test', self.test)}; {self.seconds:.1f} s{leak}")


@dataclass
class _Data:
    root: Path
    video_ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    crops: np.ndarray  # absolute paths
    no_face: tuple[np.ndarray, np.ndarray, np.ndarray]  # video_ids, groups, labels of videos without a face
    manifest_digest: str
    prepare_settings: dict
    dataset: str


def load_data(data: str | Path) -> _Data:
    """The prepared dataset's tables. Raises UsageError when missing, empty or of one class only."""
    import pyarrow.parquet as pq

    root = Path(data)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise UsageError(f"{root}: no manifest.parquet (run `fakefinder prepare SRC {root}` first)")
    t = pq.read_table(manifest, columns=["dataset", "video_id", "group", "label", "crop_path"]).to_pydict()
    if not t["video_id"]:
        raise UsageError(f"{manifest}: no face crops to train on")
    labels = np.asarray(t["label"], dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise UsageError(f"{manifest}: one class only (all {'FAKE' if labels[0] else 'REAL'}); need both")
    nf = ([], [], [])
    if (root / VIDEOS).is_file():
        v = pq.read_table(root / VIDEOS, columns=["video_id", "group", "label", "status"]).to_pydict()
        rows = [(i, g, y) for i, g, y, s in zip(v["video_id"], v["group"], v["label"], v["status"]) if s == "no_face"]
        nf = tuple(map(list, zip(*rows))) if rows else nf
    info = json.loads((root / PREPARE_INFO).read_text()) if (root / PREPARE_INFO).is_file() else {}
    return _Data(root, np.asarray(t["video_id"], dtype=object), np.asarray(t["group"], dtype=object), labels,
                 np.asarray([str(root / p) for p in t["crop_path"]], dtype=object),
                 tuple(np.asarray(a, dtype=object) for a in nf),
                 hashlib.sha256(manifest.read_bytes()).hexdigest()[:16], info.get("settings", {}),
                 t["dataset"][0])


def split_data(data: _Data, config: TrainConfig, split_file):
    """Split crops and no-face videos together, so that each no-face video is counted in its part."""
    from .splits import load_split, make_split

    nf_ids, nf_groups, nf_labels = data.no_face
    ids = np.concatenate([data.video_ids, nf_ids])
    groups = np.concatenate([data.groups, nf_groups])
    units = np.concatenate([data.crops, nf_ids])
    if split_file:
        return load_split(split_file, ids, groups, units)
    return make_split(ids, groups, np.concatenate([data.labels, nf_labels.astype(np.int64)]), units,
                      by=config.split, val=config.val, test=config.test, seed=config.seed)


class FineTuneModel(torch.nn.Module):
    """Base + head as one module; the base's BatchNorm layers keep their ImageNet statistics."""

    def __init__(self, backbone, head, pool: str, precision: str) -> None:
        super().__init__()
        self.backbone, self.base, self.head = backbone, backbone.module, head
        self.pool, self.precision = pool, precision

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.base.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x):
        from .features import pooled

        return self.head(pooled(self.backbone.features(x, precision=self.precision), self.pool))


def _new_head(in_features: int, config: TrainConfig, device: str):
    from .head import Head, HeadSpec

    torch.manual_seed(config.seed)
    return Head(HeadSpec(in_features, config.n_layers, config.n_neurons, config.dropout)).to(device)


RESIDENT_BYTES = 2 << 30  # features up to this size are copied to the device; larger ones stream from the memmap


class FeatureRows:
    """Feature rows of one part: resident on the device when small, gathered from the memory map when not."""

    def __init__(self, table, rows: np.ndarray, device: str, budget: int) -> None:
        self.table, self.rows, self.device = table, rows, device
        self.resident = len(rows) * table.dim * 4 <= budget
        self.data = torch.from_numpy(table.take(rows)).to(device) if self.resident else None

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        if self.resident:
            return self.data[torch.as_tensor(positions, device=self.device)]
        return torch.from_numpy(self.table.take(self.rows[positions])).to(self.device)

    def chunks(self, size: int = 8192):
        for s in range(0, len(self.rows), size):
            yield self[np.arange(s, min(s + size, len(self.rows)))]


def head_scores(head, rows: FeatureRows) -> np.ndarray:
    """P(fake) of cached feature rows, chunk by chunk: how a frozen-base model scores data it was trained on."""
    with torch.no_grad():
        return np.concatenate([torch.sigmoid(head(x)).double().cpu().numpy() for x in rows.chunks()]
                              or [np.zeros(0)])


def frozen_setup(table, labels: np.ndarray, parts: dict, train_rows: np.ndarray, config: TrainConfig, device: str,
                 *, resident_bytes: int = RESIDENT_BYTES):
    """A head and its data over cached features: (head, model to fit, batches, predict)."""
    y_fit = torch.from_numpy(labels[train_rows].astype(np.float32)).to(device)
    X = {p: FeatureRows(table, rows, device, resident_bytes) for p, rows in {**parts, "fit": train_rows}.items()}
    head = _new_head(table.dim, config, device)

    def batches(epoch_rng):
        order = epoch_rng.permutation(len(train_rows))
        for s in range(0, len(order), config.batch_size):
            b = order[s:s + config.batch_size]
            yield X["fit"][b], y_fit[torch.as_tensor(b, device=device)]

    def predict(part):
        return head_scores(head, X[part])

    return head, head, batches, predict


def finetune_setup(backbone, crops: np.ndarray, labels: np.ndarray, parts: dict, train_rows: np.ndarray,
                   config: TrainConfig, device: str):
    """Base (last K blocks trainable) + head on augmented images: (head, model to fit, batches, predict)."""
    from .augment import augment
    from .features import load_crops
    from .modelfile import DeepfakeModel

    y_all = labels.astype(np.float32)
    c, h, w = backbone.feature_shape()
    head = _new_head(c * h * w if config.pool == "flatten" else c, config, device)
    for block in backbone.blocks()[-config.trainable_blocks:]:
        for p in block.parameters():
            p.requires_grad_(True)
    model = FineTuneModel(backbone, head, config.pool, config.precision).to(device)

    def batches(epoch_rng):
        order = epoch_rng.permutation(train_rows)
        for s in range(0, len(order), config.batch_size):
            b = order[s:s + config.batch_size]
            images = [augment(im, epoch_rng) for im in load_crops(crops[b])]
            yield backbone.preprocess(images).to(device), torch.from_numpy(y_all[b]).to(device)

    def predict(part):
        return DeepfakeModel(backbone, head, config.pool, precision=config.precision).predict_files(crops[parts[part]])

    return head, model, batches, predict


def train(data: str | Path, *, config: TrainConfig | None = None, out: str | Path | None = None,
          split_file: str | Path | None = None, tracking_uri: str | None = None, experiment: str = "fakefinder",
          run_name: str | None = None, cache_dir: str | Path | None = None, parent_run_id: str | None = None,
          evaluate_test: bool = True, progress: bool = True, tags: dict[str, str] | None = None) -> TrainResult:
    """Train a detector on a prepared dataset and record everything as one MLflow run.

    Raises UsageError for unusable data or options (missing manifest, one class, empty split, no weights).
    """
    from .backbones import create_backbone
    from .metrics import evaluate_scores
    from .modelfile import DeepfakeModel, save_model
    from .plots import learning_curves
    from .tracking import configure, git_commit
    from .training import balanced_indices, fit, resolve_device

    t0 = time.perf_counter()
    config = config or TrainConfig()
    config.validate()
    data_ = load_data(data)
    split = split_data(data_, config, split_file)
    n = len(data_.labels)
    parts = {p: np.flatnonzero(split.parts[:n] == p) for p in ("train", "val", "test")}
    no_face_parts = split.parts[n:]
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    backbone = create_backbone(config.backbone, weights=config.weights, input_size=config.input_size,
                               normalization=config.normalization, seed=config.seed)
    rng = np.random.default_rng(config.seed)
    y_all = data_.labels.astype(np.float32)
    train_rows = parts["train"][balanced_indices(data_.labels[parts["train"]], config.balance, rng)]
    frozen = config.trainable_blocks == 0

    if frozen:
        from .features import FeatureCache

        cache = FeatureCache(cache_dir or features_dir(data_.root), backbone, config.pool,
                             precision=config.precision)
        table = cache.features(list(data_.crops), device=device, progress=progress)
        head, model, batches, predict = frozen_setup(table, data_.labels, parts, train_rows, config, device)
    else:
        head, model, batches, predict = finetune_setup(backbone, data_.crops, data_.labels, parts, train_rows,
                                                       config, device)

    mlflow = configure(tracking_uri, experiment)
    run_tags = {"fakefinder.dataset": data_.dataset, "fakefinder.manifest_digest": data_.manifest_digest,
                "fakefinder.split_digest": split.digest(), "fakefinder.leaky_split": str(split.leaky),
                "fakefinder.git_commit": git_commit(), "fakefinder.data": str(data_.root.resolve())}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run_tags.update(tags or {})
    with mlflow.start_run(run_name=run_name, tags=run_tags) as run:
        mlflow.log_params({**config.to_params(), "data": str(data_.root), "split_file": str(split_file or "")})

        from mlflow.entities import Metric

        epoch_metrics: list = []

        def on_epoch(epoch: int, row: dict) -> None:
            now = int(time.time() * 1000)
            epoch_metrics.extend(Metric(k, v, now, epoch) for k, v in row.items() if v == v)

        # A head on cached features is many tiny steps: one CPU thread runs them several times faster than two.
        with _cpu_threads(1 if frozen and device == "cpu" else torch.get_num_threads()):
            history = fit(model, batches, predict, y_all[train_rows], y_all[parts["val"]], config,
                          on_epoch=on_epoch)
        for start in range(0, len(epoch_metrics), 1000):  # a few writes, not one per epoch (MLflow's cap: 1000)
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=epoch_metrics[start:start + 1000])

        scored = [p for p in ("val", "test") if len(parts[p]) and (p == "val" or evaluate_test)]
        predictions = {p: predict(p) for p in scored}

        def evaluation(part):
            if part not in predictions:
                return None
            rows = parts[part]
            return evaluate_scores(data_.video_ids[rows], data_.labels[rows], predictions[part],
                                   rule=config.video_rule, no_face_videos=int(np.sum(no_face_parts == part)))

        val, test = evaluation("val"), evaluation("test")
        out_dir = Path(out) if out else data_.root / "models"
        model_path = out_dir / f"{run.info.run_id}.safetensors"
        final = DeepfakeModel(backbone, head, config.pool, threshold=0.5, precision=config.precision)
        extra = {"prepare": data_.prepare_settings, "video_rule": config.video_rule, "seed": config.seed,
                 "train": config.to_params(), "run_id": run.info.run_id}
        if config.weights not in ("imagenet", "none"):
            extra["weights_path"] = str(Path(config.weights).resolve())
        save_model(model_path, final, include_base=not frozen, extra=extra)
        seconds = time.perf_counter() - t0
        result = TrainResult(run.info.run_id, model_path, val, test, history, split.by,
                             backbone.images_seen, seconds)
        final_metrics = {"epochs_completed": history.completed, "best_epoch": history.best_epoch,
                         "wall_seconds": seconds, "backbone_images": backbone.images_seen}
        for name, ev in (("val", val), ("test", test)):
            for level in ("frame", "video"):
                for k, v in (ev.to_dict()[level].items() if ev else []):
                    if v is not None:
                        final_metrics[f"{name}_{level}_{k}"] = v
        mlflow.log_metrics(final_metrics)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            split.save(tmp / "split.json")
            _write_predictions(tmp / "predictions.parquet", data_, parts, predictions)
            (tmp / "history.csv").write_text(_history_csv(history))
            (tmp / "model_summary.txt").write_text(model_summary(final, config))
            (tmp / "metrics.json").write_text(json.dumps(result.to_json(), indent=2))
            learning_curves({run.info.run_id[:8]: history.epochs}, tmp / "learning_curves.png",
                            title=f"{config.backbone} {'(leaky frame split)' if split.leaky else ''}")
            mlflow.log_artifacts(str(tmp))
            mlflow.log_artifact(str(model_path), artifact_path="model")
    return result


@contextmanager
def _cpu_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_predictions(path: Path, data: _Data, parts: dict, predictions: dict) -> None:
    """Face-level P(fake) of the scored parts: what ROC curves, confusion matrices and error galleries need."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"part": [], "video_id": [], "crop_path": [], "label": [], "p_fake": []}
    for part, p in predictions.items():
        idx = parts[part]
        rows["part"] += [part] * len(idx)
        rows["video_id"] += data.video_ids[idx].tolist()
        rows["crop_path"] += [str(Path(c).relative_to(data.root)) for c in data.crops[idx]]
        rows["label"] += data.labels[idx].tolist()
        rows["p_fake"] += np.asarray(p, dtype=np.float64).tolist()
    pq.write_table(pa.table(rows), path)


def _history_csv(history: History) -> str:
    buf = io.StringIO()
    fields = sorted({k for e in history.epochs for k in e})
    writer = csv.DictWriter(buf, fieldnames=["epoch", *fields])
    writer.writeheader()
    for i, row in enumerate(history.epochs, 1):
        writer.writerow({"epoch": i, **row})
    return buf.getvalue()


def model_summary(model, config: TrainConfig) -> str:
    """A Keras-like summary: base, pooling and every head layer with its parameter count."""
    base_params = sum(p.numel() for p in model.backbone.module.parameters())
    lines = [f"base: {model.backbone.spec.name} ({model.backbone.weights}, {base_params:,} parameters, "
             f"{f'fine-tuned: last {config.trainable_blocks} blocks' if config.trainable_blocks else 'frozen'})",
             f"input: {model.backbone.input_size}x{model.backbone.input_size}, normalisation "
             f"{model.backbone.normalization}; features {model.backbone.feature_shape()} -> {config.pool}"]
    total = 0
    for name, layer in model.head.layers.named_children():
        count = sum(p.numel() for p in layer.parameters())
        total += count
        lines.append(f"  head.{name:3} {layer!s:60} {count:>12,}")
    lines.append(f"head parameters: {total:,}")
    return "\n".join(lines) + "\n"
