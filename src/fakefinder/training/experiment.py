"""`train`: the training core plus a tracker — one recorded run with its model file, curves, split, predictions
and honest metrics. With `resume`, a killed fine-tuning run continues from its last epoch, in the same run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import json_digest, safe_run_id
from .._text import shown
from ..config import TrainSettings
from ..data.splits import is_leaky, load_split
from ..hardware import Compute
from ..metrics import Evaluation
from ..progress import ProgressCallback
from ..tracking.trackers import Recording, Tag, Tracker, git_commit, resolve_tracker
from .core import RunContext, TrainedDetector, fit_detector, one_detector, training_data


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_path: Path | None  # None in the other processes of a distributed run
    trained: TrainedDetector

    @property
    def val(self) -> Evaluation | None:
        return self.trained.val

    @property
    def test(self) -> Evaluation | None:
        return self.trained.test  # None when the run did not look at its test part (tuning trials)

    @property
    def history(self):
        return self.trained.history

    @property
    def backbone_images(self) -> int:
        return self.trained.backbone_images

    @property
    def seconds(self) -> float:
        return self.trained.seconds

    def to_json(self) -> dict:
        t = self.trained
        card = t.model.card
        return {"run_id": self.run_id, "model_path": str(self.model_path),
                "val": t.val.to_dict() if t.val else None, "test": t.test.to_dict() if t.test else None,
                "uncalibrated": {p: e.to_dict() for p, e in t.uncalibrated.items()},
                "calibration": {"method": card.calibration.method, "scale": card.calibration.scale,
                                "shift": card.calibration.shift},
                "threshold": card.verdict.threshold, "threshold_meaning": card.verdict.meaning(),
                "epochs_completed": t.history.completed, "best_epoch": t.history.best_epoch,
                "split": t.split.by, "leaky_split": t.split.leaky, "device": t.device,
                "precision": card.precision, "seconds": t.seconds, "phases": t.phases}

    def summary(self) -> str:
        def part(name, ev):
            if ev is None:
                return f"{name}: -"
            v = ev.video
            return (f"{name} video AUC {shown(v.auc, 3)} log loss {shown(v.log_loss, 3)} "
                    f"acc {shown(v.accuracy, 3)} (n={v.n})")

        t = self.trained
        leak = " [LEAKY frame split]" if t.split.leaky else ""
        return (f"run {self.run_id}: {t.history.completed} epochs (best {t.history.best_epoch}); "
                f"{part('val', t.val)}; {part('test', t.test)}; {t.seconds:.1f} s{leak}\n"
                f"verdict: {t.model.card.verdict.meaning()}")


def checkpoint_key(config: TrainSettings, data_digest: str, split_file) -> str:
    """What names a run's resume state: its settings, its data and its split."""
    return json_digest([config.to_params(), data_digest, str(split_file or "")])


def run_tags(dataset, split_by: str, recording: Recording) -> dict[str, str]:
    return {Tag.DATASET: dataset.name, Tag.MANIFEST_DIGEST: dataset.manifest_digest, Tag.GIT_COMMIT: git_commit(),
            Tag.DATA: str(dataset.root.resolve()), Tag.LEAKY_SPLIT: str(is_leaky(split_by)), **recording.tags}


def train(data: str | Path, config: TrainSettings | None = None, *,
          tracking: Recording | Tracker | str | None = None, compute: Compute | None = None,
          out: str | Path | None = None, split_file: str | Path | None = None, evaluate_test: bool = True,
          resume: bool = False, progress: ProgressCallback | None = None) -> TrainResult:
    """Train one detector on prepared `data` and record it as one run (`tracking`: a `Recording`, or a bare
    tracker: None records nothing, a URI is that MLflow store). The model file goes to `out` (default
    DATA/models/RUN_ID.safetensors); `compute` says where it computes. (`fakefinder.train` also trains the two of
    `--fakes both` and combines them: `workflows.training`.)

    Raises UsageError for unusable data or settings.
    """
    from .. import _files
    from ..models.modelfile import save_model

    config = config or TrainSettings()
    compute = compute or Compute()
    one_detector(config)  # before a run is started for it
    dataset = training_data(data, config, progress=progress)  # refused before a run is started for it
    main = int(os.environ.get("RANK", "0")) == 0
    recording = Recording.of(tracking)
    tracker = recording.resolve() if main else resolve_tracker(None)
    out_dir = Path(out) if out else dataset.root / "models"
    key = checkpoint_key(config, dataset.manifest_digest, split_file)
    checkpoint = None if config.frozen else out_dir / ".checkpoints" / f"{key}.pt"
    marker = out_dir / ".checkpoints" / f"{key}.json"  # the run a checkpoint belongs to
    resume_id = None
    if resume and checkpoint is not None and checkpoint.is_file() and marker.is_file():
        resume_id = json.loads(marker.read_text()).get("run_id")
    split_by = load_split(split_file, dataset).by if split_file else config.split
    name = recording.name or f"{dataset.name}-{config.backbone}"
    with tracker.start_run(name=name, tags=run_tags(dataset, split_by, recording),
                           parent_run_id=recording.parent_run_id, resume_run_id=resume_id) as run:
        safe_run_id(run.run_id)  # it names the model file
        if checkpoint is not None and main:
            _files.write_text(marker, json.dumps({"run_id": run.run_id}))
        run.log_params({**config.to_params(), "data": str(dataset.root), "split_file": str(split_file or "")})
        trained = fit_detector(dataset, config, compute=compute, split_file=split_file, evaluate_test=evaluate_test,
                               run=RunContext(run.run_id, name, checkpoint, resume_id is not None),
                               progress=progress)
        if not trained.is_main:
            return TrainResult(run.run_id, None, trained)
        run.log_params({"device": trained.device, "runtime": compute.runtime})  # the one that ran, not "auto"
        model_path = save_model(out_dir / f"{run.run_id}.safetensors", trained.model)
        result = TrainResult(run.run_id, model_path, trained)
        run.log_history(trained.history.epochs)
        run.log_metrics(_final_metrics(trained))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            trained.split.save(tmp / "split.json")
            write_predictions(tmp / "predictions.parquet", trained.dataset,
                              {part: (trained.part_rows(part), z) for part, z in trained.logits.items()},
                              trained.model.card.calibration)
            (tmp / "history.csv").write_text(_history_csv(trained.history.epochs))
            (tmp / "model_summary.txt").write_text(model_summary(trained, config))
            (tmp / "metrics.json").write_text(json.dumps(result.to_json(), indent=2))
            from ..tracking.plots import learning_curves

            learning_curves({run.run_id[:8]: trained.history.epochs}, tmp / "learning_curves.png",
                            title=f"{config.backbone} {'(leaky frame split)' if trained.split.leaky else ''}")
            run.log_artifacts(tmp)
        run.log_file(model_path, "model")
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # finished and saved: nothing left to resume
        marker.unlink(missing_ok=True)
    return result


def part_metrics(evaluations: dict[str, Evaluation]) -> dict[str, float]:
    """Each part's metrics at both levels, named as runs record them (`val_video_auc`)."""
    return {f"{part}_{level}_{k}": v for part, ev in evaluations.items() for level in ("frame", "video")
            for k, v in ev.to_dict()[level].items() if v is not None}


def _final_metrics(t: TrainedDetector) -> dict[str, float]:
    card = t.model.card
    out = {"epochs_completed": t.history.completed, "best_epoch": t.history.best_epoch, "wall_seconds": t.seconds,
           "backbone_images": t.backbone_images, "threshold": card.verdict.threshold,
           "calibration_scale": card.calibration.scale, "calibration_shift": card.calibration.shift,
           **part_metrics(t.evaluations), **{f"seconds_{phase}": v for phase, v in t.phases.items()}}
    for name, ev in t.uncalibrated.items():
        for level in ("frame", "video"):
            for k in ("log_loss", "ece"):
                v = ev.to_dict()[level][k]
                if v is not None:
                    out[f"{name}_{level}_{k}_uncalibrated"] = v
    if card.verdict.false_alarm_rate is not None:
        out["val_false_alarm_rate"] = card.verdict.false_alarm_rate
    return out


def write_predictions(path: Path, dataset, parts: dict[str, tuple[np.ndarray, np.ndarray]], calibration) -> None:
    """Face-level logits (`parts`: part -> its rows of `dataset` and their logits) and calibrated P(fake), with
    each face's track: what ROC curves, confusion matrices and the hardest-videos gallery of a report need, its
    videos scored as training scored them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, list] = {"part": [], "video_id": [], "crop_path": [], "label": [], "logit": [], "p_fake": [],
                             "track": []}
    tracks = dataset.tracks()
    for part, (idx, z) in parts.items():
        rows["part"] += [part] * len(idx)
        rows["video_id"] += dataset.video_ids[idx].tolist()
        rows["crop_path"] += dataset.crop_paths[idx].tolist()
        rows["label"] += dataset.labels[idx].tolist()
        rows["logit"] += np.asarray(z, dtype=np.float64).tolist()
        rows["p_fake"] += calibration.apply(z).tolist()
        rows["track"] += tracks[idx].tolist()
    pq.write_table(pa.table(rows), path)


def _history_csv(epochs: list[dict]) -> str:
    buf = io.StringIO()
    fields = sorted({k for e in epochs for k in e})
    writer = csv.DictWriter(buf, fieldnames=["epoch", *fields])
    writer.writeheader()
    for i, row in enumerate(epochs, 1):
        writer.writerow({"epoch": i, **row})
    return buf.getvalue()


def model_summary(t: TrainedDetector, config: TrainSettings) -> str:
    """A Keras-like summary: base, pooling and every head layer with its parameter count, and the verdict."""
    model = t.model
    base_params = sum(p.numel() for p in model.backbone.module.parameters())
    tuned = ("frozen" if config.frozen else "fine-tuned: all" if config.trainable_blocks == "all"
             else f"fine-tuned: last {config.trainable_blocks} blocks")
    lines = [f"base: {model.backbone.spec.name} ({model.backbone.weights}, {base_params:,} parameters, {tuned})",
             f"input: {model.backbone.input_size}x{model.backbone.input_size}, normalisation "
             f"{model.backbone.normalization}, precision {model.card.precision}; features "
             f"{model.backbone.feature_shape()} -> {config.pool}"]
    total = 0
    for name, layer in model.head.layers.named_children():
        count = sum(p.numel() for p in layer.parameters())
        total += count
        lines.append(f"  head.{name:3} {layer!s:60} {count:>12,}")
    lines.append(f"head parameters: {total:,}")
    c = model.card.calibration
    lines.append(f"calibration: {c.method} (P = sigmoid({c.scale:.4g} * logit + {c.shift:.4g}))")
    lines.append(f"verdict: {model.card.verdict.meaning()}")
    return "\n".join(lines) + "\n"
