"""`train`: one detector (`training.experiment`), or several trained apart on one split, each its own recorded run
under one parent run, then carried in one model file calibrated on the split's validation part and measured on its
test part (`inference.recalibration.combine`): for `--fakes both` (`--both combined`, the default) a self-blended and a
supervised detector, a face as suspicious as the more suspicious finds it; for `--ensemble K` one recipe with K seeds,
a face scored by the mean of their logits. A workflow, since it joins training and inference.

Why apart: bench/combine.py measured the pair, combined, above one detector that learns both kinds of fakes as
one class, on DFDC's test part and on FaceForensics++ clips alike; bench/ensemble.py measured two seeds averaged above
either alone. A killed run continues with `resume`: a member that finished is not trained again, one that was killed
continues from its last epoch.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _files
from .._files import safe_run_id
from .._text import shown
from ..config import TrainSettings
from ..data.dataset import load_dataset
from ..data.splits import load_split, split_dataset
from ..errors import OptionError, UsageError
from ..hardware import Compute
from ..inference.recalibration import CalibrateResult
from ..metrics import Evaluation
from ..progress import ProgressCallback
from ..tracking.trackers import Recording, Tracker
from ..training import experiment
from ..training.core import training_data
from ..training.experiment import TrainResult


@dataclass(frozen=True)
class Member:
    kind: str  # its name in `TrainSettings.members`
    run_id: str
    model_path: Path
    seconds: float | None  # None: trained before a resumed run


@dataclass(frozen=True)
class CombinedTrainResult:
    """What `train` returns for a combined run: the members, and the model file that carries them."""

    run_id: str
    model_path: Path | None  # None in the other processes of a distributed run
    members: tuple[Member, ...]
    split_path: Path
    calibrated: CalibrateResult | None
    seconds: float

    @property
    def val(self) -> Evaluation | None:
        return self.calibrated.val if self.calibrated else None

    @property
    def test(self) -> Evaluation | None:
        return self.calibrated.test if self.calibrated else None

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "model_path": str(self.model_path), "split": str(self.split_path),
                "members": [{"kind": m.kind, "run_id": m.run_id, "model_path": str(m.model_path),
                             "seconds": m.seconds} for m in self.members],
                **(self.calibrated.to_dict() if self.calibrated else {}), "seconds": self.seconds}

    def summary(self) -> str:
        members = ", ".join(f"{m.kind} (run {m.run_id[:8]})" for m in self.members)
        c = self.calibrated
        if c is None or c.test is None:
            return f"run {self.run_id}: combined {members}"
        v = c.test.video
        return (f"run {self.run_id}: combined {members}; calibrated on {c.val_videos} validation videos; test video "
                f"AUC {shown(v.auc, 3)} ({shown(c.test_auc_low, 3)}-{shown(c.test_auc_high, 3)}) log loss "
                f"{shown(v.log_loss, 3)} acc {shown(v.accuracy, 3)} (n={v.n}); {self.seconds:.1f} s\n"
                f"verdict: {c.verdict}")


def train(data: str | Path, config: TrainSettings | None = None, *,
          tracking: Recording | Tracker | str | None = None, compute: Compute | None = None,
          out: str | Path | None = None, split_file: str | Path | None = None, evaluate_test: bool = True,
          resume: bool = False, progress: ProgressCallback | None = None) -> TrainResult | CombinedTrainResult:
    """`training.experiment.train`'s one detector, or with `config.combined` (`--fakes both`, `--ensemble K`) several
    trained apart on one split and combined in one file, each member its own run under the combined one (a split of
    its own is saved as OUT/RUN_ID.split.json). Raises UsageError for unusable data or settings."""
    config = config or TrainSettings()
    if config.combined and not evaluate_test:
        option, one = ("ensemble", "--ensemble 1") if config.ensemble > 1 else ("both", "mixed")
        raise OptionError(option, "a combined run is calibrated on the validation part and measured on the test "
                                  f"part: it cannot leave the test part alone (give {one} for one detector)")
    if not config.combined:
        return experiment.train(data, config, tracking=tracking, compute=compute, out=out, split_file=split_file,
                                evaluate_test=evaluate_test, resume=resume, progress=progress)
    return _train_combined(data, config, recording=Recording.of(tracking), compute=compute or Compute(),
                           out_dir=Path(out) if out else None, split_file=split_file, resume=resume,
                           progress=progress)


def _train_combined(data: str | Path, config: TrainSettings, *, recording: Recording, compute: Compute,
                    out_dir: Path | None, split_file: str | Path | None, resume: bool,
                    progress: ProgressCallback | None) -> CombinedTrainResult:
    from ..inference.detector import LoadOptions
    from ..inference.recalibration import combine_scored
    from ..models.modelfile import read_card

    t0 = time.perf_counter()
    dataset = load_dataset(data, need_both_classes=False)
    if config.fakes == "both" and not (dataset.labels == 1).any():
        raise UsageError(f"{dataset.root}: no fakes: --fakes both trains its supervised member on the data's "
                         "fakes (--fakes self-blended learns from reals alone)")
    # What the split deals and the combination is fitted and measured on: the data's real fakes for --fakes both,
    # else the crops an ensemble's first member learns from (its pseudo-fakes made now, and kept for its run).
    scored = dataset if config.fakes == "both" else training_data(dataset, next(iter(config.members().values())),
                                                                  progress=progress)
    out_dir = out_dir or dataset.root / "models"
    key = experiment.checkpoint_key(config, dataset.manifest_digest, split_file)
    state_file = out_dir / ".checkpoints" / f"{key}.combined.json"
    state = json.loads(state_file.read_text()) if resume and state_file.is_file() else {}
    main = int(os.environ.get("RANK", "0")) == 0
    tracker = recording.resolve() if main else Recording().resolve()
    name = recording.name or f"{dataset.name}-{config.backbone}"
    split_by = load_split(split_file, dataset).by if split_file else config.split
    with tracker.start_run(name=name, tags=experiment.run_tags(dataset, split_by, recording),
                           parent_run_id=recording.parent_run_id, resume_run_id=state.get("run_id")) as run:
        safe_run_id(run.run_id)  # it names the model file and the split
        split_path = Path(split_file or state.get("split") or out_dir / f"{run.run_id}.split.json")
        if not split_path.is_file():  # every process deals the same split; the write is atomic
            split_dataset(scored, by=config.split, val=config.val, test=config.test, seed=config.seed
                          ).save(split_path)
        state = {"run_id": run.run_id, "split": str(split_path), "members": state.get("members", {})}
        run.log_params({**config.to_params(), "data": str(dataset.root), "split_file": str(split_path)})
        members = []
        for kind, settings in config.members().items():
            done = state["members"].get(kind)
            if done and Path(done["model"]).is_file():
                members.append(Member(kind, done["run_id"], Path(done["model"]), None))
                continue
            member = Recording(tracker, recording.experiment, f"{name}-{kind}", run.run_id, recording.tags)
            result = experiment.train(data, settings, tracking=member, compute=compute, out=out_dir,
                                      split_file=split_path, resume=resume, progress=progress)
            if result.model_path is None:  # another process of a distributed run
                continue
            members.append(Member(kind, result.run_id, result.model_path, result.seconds))
            state["members"][kind] = {"run_id": result.run_id, "model": str(result.model_path)}
            _files.write_text(state_file, json.dumps(state))
        if not main:
            return CombinedTrainResult(run.run_id, None, (), split_path, None, time.perf_counter() - t0)
        calibrated, logits, parts = combine_scored(
            [m.model_path for m in members], scored, out_dir / f"{run.run_id}.safetensors", split=split_path,
            seed=config.seed, load=LoadOptions(device=compute.device), name=name, run_id=run.run_id,
            rule=config.combine_rule, pseudo_fakes=config.fakes == "self-blended", progress=progress)
        card = read_card(calibrated.path)
        result = CombinedTrainResult(run.run_id, calibrated.path, tuple(members), split_path, calibrated,
                                     time.perf_counter() - t0)
        measured = {"val": calibrated.val, "test": calibrated.test}
        run.log_metrics({"wall_seconds": result.seconds, "threshold": card.verdict.threshold,
                         "calibration_scale": card.calibration.scale, "calibration_shift": card.calibration.shift,
                         "test_video_auc_low": calibrated.test_auc_low, "test_video_auc_high": calibrated.test_auc_high,
                         **experiment.part_metrics(measured)})
        with tempfile.TemporaryDirectory() as tmp:  # what `report RUN` shows, as for one detector
            tmp = Path(tmp)
            (tmp / "metrics.json").write_text(json.dumps(result.to_json(), indent=2, default=float))
            (tmp / "model_summary.txt").write_text(card.summary() + "\n")
            rows = {part: np.flatnonzero(parts == part) for part in measured}
            experiment.write_predictions(tmp / "predictions.parquet", scored,
                                         {k: (r, logits[r]) for k, r in rows.items()}, card.calibration)
            run.log_artifacts(tmp)
        run.log_file(split_path)
        run.log_file(calibrated.path, "model")
    state_file.unlink(missing_ok=True)  # finished: nothing left to resume
    return result
