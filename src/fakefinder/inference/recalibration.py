"""`calibrate` a trained model on the user's own labelled collection of real fakes: refit its probability
calibration, its threshold and its strength-of-evidence map there, and write a new model file whose card names
that collection.

A model whose validation fakes were self-blended pseudo-fakes has figures against its own pseudo-fakes; this is how
its user gets figures, a threshold and likelihood ratios that mean something for real deepfakes. The collection is
split by source (a fake and the real it was made from stay together) into a part that fits and a test part kept
apart to measure what was fitted. Base and head are not changed.

`combine` writes several trained detectors as one model file (`models.combined`) and calibrates it the same way,
on a run's validation part where the members trained on the collection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.manifest import PSEUDO_FAKE_METHOD
from ..errors import UsageError
from ..metrics import AucInterval, Evaluation, evaluate_videos
from ..progress import ProgressCallback
from .detector import LoadOptions

TEST = 0.5  # share of the collection's sources kept apart to measure; the rest fits


@dataclass(frozen=True)
class CalibrateResult:
    path: Path
    dataset: str
    val_videos: int
    test_videos: int
    test_auc: float | None
    test_auc_low: float | None
    test_auc_high: float | None
    test_cllr: float | None
    test_cllr_min: float | None
    test_eer: float | None
    verdict: str  # what the threshold now means
    val: Evaluation | None = None  # the model as written, on the part that fitted (its figures fitted there)
    test: Evaluation | None = None  # ... and on the part kept apart

    def to_dict(self) -> dict:
        return {f.name: str(v) if isinstance(v := getattr(self, f.name), Path) else
                v.to_dict() if isinstance(v, Evaluation) else v for f in dataclasses.fields(self)}

    def summary(self) -> str:
        def shown(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        auc = shown(self.test_auc) + (f" ({self.test_auc_low:.3f}-{self.test_auc_high:.3f})"
                                      if self.test_auc_low is not None else "")
        return (f"wrote {self.path}: calibrated on {self.val_videos} videos of {self.dataset}, tested on "
                f"{self.test_videos} kept apart: video AUC {auc}, Cllr {shown(self.test_cllr)}, Cllr_min "
                f"{shown(self.test_cllr_min)}, EER {shown(self.test_eer)}\nthreshold: {self.verdict}")


def _target(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise UsageError(f"{out}: name the model file OUT.safetensors")
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; name the model file to write")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such folder")
    return out


def _check_labels(dataset, pseudo_fakes: bool = False) -> None:
    """One line for a collection that cannot calibrate: no fakes, no reals, or pseudo-fakes (unless allowed)."""
    y = dataset.labels
    if not (y == 1).any() or not (y == 0).any():
        raise UsageError(f"{dataset.root}: {'no fakes' if not (y == 1).any() else 'no reals'} with a face; "
                         "calibrate needs labelled real and fake videos")
    if not pseudo_fakes and (dataset.methods[y == 1] == PSEUDO_FAKE_METHOD).any():
        raise UsageError(f"{dataset.root}: its fakes include self-blended pseudo-fakes; calibrate needs real "
                         "deepfakes")


def _check_parts(dataset, parts: np.ndarray) -> None:
    """One line for a split whose fitting or test part is not both real and fake."""
    y = dataset.labels
    for part in ("val", "test"):
        if len(np.unique(y[parts == part])) < 2:
            raise UsageError(f"{dataset.root}: too few sources to split into a fitting part and a test part that "
                             f"both hold real and fake videos ({len(set(dataset.groups))} sources)")


def calibrate(model: str | Path, data, out: str | Path, *, test: float = TEST, seed: int = 0,
              load: LoadOptions | None = None, progress: ProgressCallback | None = None) -> CalibrateResult:
    """Refit `model`'s calibration, threshold and strength of evidence on prepared `data` (a folder or a loaded
    PreparedDataset of real and fake videos, the fakes real deepfakes), split by source: `test` of the sources kept
    apart to measure, the rest to fit. The choices follow the model's card (calibration method, threshold rule,
    video rule, inconclusive band, conclusive LR). Writes OUT (.safetensors) atomically and returns what the test
    part measured. Raises UsageError (one line) for a collection that cannot calibrate or an OUT that cannot be
    written."""
    from ..models.modelfile import CombinedModel, DeepfakeModel

    out = _target(out)
    d = _labelled(data)
    detector = dataclasses.replace(load or LoadOptions(), runtime="torch").load(model)
    if not isinstance(detector.model, DeepfakeModel | CombinedModel):
        raise UsageError(f"{model}: calibrate writes a .safetensors model: give one, not an ONNX export")
    return _refit(detector, d, _by_source(d, test, seed), out, seed, progress)[0]


def combine(members: Sequence[str | Path], data, out: str | Path, *, split: str | Path | None = None,
            test: float = TEST, seed: int = 0, load: LoadOptions | None = None, name: str | None = None,
            run_id: str = "", rule: str = "max", progress: ProgressCallback | None = None) -> CalibrateResult:
    """Write one model file carrying `members` (model files of single detectors: say a self-blended and a supervised
    one) whose face score is the largest of their calibrated logits, or with `rule` "mean" their mean (detectors of
    one recipe trained with other seeds; `models.combined`), calibrated as `calibrate`
    calibrates on prepared `data` of real fakes: on the validation part of `split` (a run's split.json, when the
    members trained on `data`: its test part measures) or, without one, on `data` split by source as `calibrate`
    splits it; members trained on `data` need `split`. `name` and `run_id` go on its card (default: the members'
    names; none). Raises UsageError (one line) for members that cannot be combined."""
    return combine_scored(members, data, out, split=split, test=test, seed=seed, load=load, name=name,
                          run_id=run_id, rule=rule, progress=progress)[0]


def combine_scored(members: Sequence[str | Path], data, out: str | Path, *, split: str | Path | None = None,
                   test: float = TEST, seed: int = 0, load: LoadOptions | None = None, name: str | None = None,
                   run_id: str = "", rule: str = "max", pseudo_fakes: bool = False,
                   progress: ProgressCallback | None = None) -> tuple[CalibrateResult, np.ndarray, np.ndarray]:
    """As `combine`, with the face logits of the written model and the part of each row (as `_refit`). With
    `pseudo_fakes`, `data` may hold self-blended pseudo-fakes: an ensemble of a self-blended recipe is fitted on its
    own validation pseudo-fakes, as each of its members was."""
    from ..data.splits import load_split
    from ..models.combined import combined_card
    from ..models.modelcard import MAX_MEMBERS
    from ..models.modelfile import CombinedModel, DeepfakeModel
    from .detector import Detector
    from .framing import verdict_settings

    out = _target(out)
    if not 2 <= len(members) <= MAX_MEMBERS:  # before any is loaded
        raise UsageError(f"combine takes 2 to {MAX_MEMBERS} model files, not {len(members)}")
    d = _labelled(data, pseudo_fakes)
    load = dataclasses.replace(load or LoadOptions(), runtime="torch")
    nets = []
    for member in members:
        net = load.load(member).model
        if not isinstance(net, DeepfakeModel):
            raise UsageError(f"{member}: give the .safetensors file of a single detector")
        nets.append(net)
    card = combined_card([n.card for n in nets], [str(m) for m in members], rule)
    evidence = dataclasses.replace(card.evidence, name=name or card.evidence.name)
    card = dataclasses.replace(card, run_id=run_id, evidence=evidence)
    trained_here = [m for m, n in zip(members, nets) if n.card.data_digest == d.manifest_digest]
    if trained_here and split is None:  # a split of its own would put videos a member trained on in the test part
        raise UsageError(f"{trained_here[0]}: trained on {d.root}: give its run's split.json (--split), so that the "
                         "videos the members trained on fit nothing and measure nothing")
    detector = Detector(CombinedModel(tuple(nets), card), card.verdict, verdict_settings(card))
    all_parts = load_split(split, d).parts if split is not None else _by_source(d, test, seed)
    return _refit(detector, d, all_parts, out, seed, progress)


def _labelled(data, pseudo_fakes: bool = False):
    from ..data.dataset import PreparedDataset, load_dataset

    d = data if isinstance(data, PreparedDataset) else load_dataset(data, need_both_classes=False)
    _check_labels(d, pseudo_fakes)
    return d


def _by_source(d, test: float, seed: int) -> np.ndarray:
    """Per crop row, then per faceless video: val (fits) or test (measures), `test` of the sources kept apart."""
    from ..data.splits import split_dataset

    # No training part: what `split_dataset` calls train is the part that fits (validation's role here).
    split = split_dataset(d, by="source", val=0.0, test=test, seed=seed)
    return np.where(split.parts == "train", "val", split.parts)


def _refit(detector, d, all_parts: np.ndarray, out: Path, seed: int, progress
           ) -> tuple[CalibrateResult, np.ndarray, np.ndarray]:
    """Fit the calibration, threshold and strength of `detector`'s model on the rows of `d` marked val, measure
    them on those marked test (others are neither scored nor used), and write the model to `out` with its new card.
    Returns what was measured, the face logits of the rows of `d` (NaN outside val and test) and each row's part."""
    from ..config import TrainSettings
    from ..models.calibration import choose_verdict, fit_calibration
    from ..models.modelcard import CalibratedOn, Evidence, StrengthCard
    from ..models.modelfile import save_model
    from ..models.strength import cllr, cllr_min, eer, fit_strength
    from .evaluation import dataset_logits

    parts = all_parts[:len(d)]
    _check_parts(d, parts)
    net = detector.model
    card = net.card
    val, tst = parts == "val", parts == "test"
    scored = dataset_logits(detector, d, rows=np.flatnonzero(val | tst), progress=progress)
    logits = np.full(len(d), np.nan, dtype=scored.dtype)
    logits[val | tst] = scored

    defaults = TrainSettings()
    method = card.train.get("calibration") or card.calibration.method
    if method not in ("temperature", "platt", "none"):
        method = defaults.calibration
    rule = card.verdict.rule
    target_fpr = float(rule.partition("=")[2]) if rule.startswith("fpr=") else None
    threshold: float | str = "eer" if rule == "eer" else card.verdict.threshold
    conclusive = card.strength.conclusive if card.strength else defaults.conclusive_lr
    video_rule = card.verdict.video_rule

    calibration = fit_calibration(logits[val], d.labels[val], method)
    p = calibration.apply(logits)
    ids, vy, vp = d.videos(val, p[val], video_rule)
    verdict = choose_verdict(vy, vp, video_rule=video_rule, threshold=threshold, target_fpr=target_fpr,
                             band=card.verdict.band)
    fitted = fit_strength(vp, vy, fakes="real", sources=d.sources(ids))
    test_ids, ty, tp = d.videos(tst, p[tst], video_rule)
    strength = StrengthCard(conclusive, len(ty), cllr(fitted.likelihood_ratios(tp), ty), cllr_min(tp, ty),
                            eer(tp, ty), fitted)
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(ty, tp))
    interval = AucInterval.of(ty, tp, d.sources(test_ids), seed=seed)
    low, high = interval.low, interval.high

    ids = np.concatenate([d.video_ids, d.no_face.video_ids])
    n_val, n_test = len(set(ids[all_parts == "val"])), len(set(ids[all_parts == "test"]))
    name = card.evidence.name or card.dataset or "model"
    evidence = Evidence(f"{name}, calibrated on {d.name}", card.evidence.train_videos, n_val, n_test, auc, low,
                        high, "real")
    new = dataclasses.replace(card, calibration=calibration, verdict=verdict, evidence=evidence, strength=strength,
                              calibrated_on=CalibratedOn(d.name, d.manifest_digest, n_val, n_test))
    written = save_model(out, dataclasses.replace(net, card=new))

    def measured(rows: np.ndarray, vy: np.ndarray, vp: np.ndarray) -> Evaluation:
        return evaluate_videos(d.labels[rows], p[rows], vy, vp, threshold=verdict.threshold)

    result = CalibrateResult(written, d.name, n_val, n_test, auc, low, high, strength.test_cllr,
                             strength.test_cllr_min, strength.test_eer, verdict.meaning(), measured(val, vy, vp),
                             measured(tst, ty, tp))
    return result, logits, parts
