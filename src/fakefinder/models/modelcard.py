"""The model card: the typed, versioned header of a model file, saying how to use its tensors.

It names the base and its weights' digest, the input size and normalisation, the head, the calibration map,
the decision threshold, its inconclusive band and what it means (with how many validation videos its rates come
from), the video rule, the preparation settings (so `predict` crops new videos as the training data was
cropped), a combined model's member cards, the digest of the training data, the evidence a reader weighs a
verdict by (the model's name, how many videos trained, calibrated and tested it, the test AUC with its interval),
and, apart from it, what a verdict needs to state the strength of its evidence (the score-to-likelihood-ratio
map fitted on the validation videos, and Cllr, Cllr_min and EER on the test videos; see `strength`). A shared
model file is untrusted input: every value is type-checked and bounded by its declaration when read, and a card
of an unknown version is refused with one line.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from .. import options
from .._files import safe_run_id
from .._version import __version__
from ..config import Precision, PrepareSettings, TrainSettings, VideoRule
from ..errors import OptionError, UsageError
from ..options import option

FORMAT = "fakefinder-model"
VERSION = 5  # 1: fakefinder 0.1 (no calibration, untyped); 2: no evidence, no inconclusive band; 3: no val_fakes, no
# face_fill; 4: no strength of evidence (read as "strength unknown"). All upgraded.
MAX_MEMBERS = 8  # detectors one combined model file may carry
# How a combined model's face logit follows from its members' calibrated logits (the card's train["combine"]): `max`
# for detectors that catch different fakes, `mean` for detectors of one recipe (seeds: an ensemble).
COMBINE_RULES = {"max": "a face as suspicious as the more suspicious finds it",
                 "mean": "a face as suspicious as the mean of their calibrated logits says"}
MIN_RATE_VIDEOS = 20  # fewer real (or fake) validation videos than this, and a rate is too uncertain to state
LABEL = "1 = FAKE; outputs are P(fake)"
PROPOSITIONS = ("manipulated", "authentic")  # what a likelihood ratio weighs: the video was manipulated, or not
UNKNOWN_OLD = "strength unknown (model card format < 5)"
UNKNOWN_NO_MAP = "strength unknown (its validation videos were not both real and fake)"


@dataclass(frozen=True)
class BaseCard(options.Checked):
    backbone: str = options.like(TrainSettings, "backbone", default="")
    weights: str = option("", "imagenet, none or the weights file's name")
    weights_digest: str = option("", "sha256 of the weights the base started from")
    input_size: int = options.like(TrainSettings, "input_size", default=224)
    normalization: str = options.like(TrainSettings, "normalization", default="imagenet")
    included: bool = option(False, "the base's tensors are in the file (fine-tuned or imported)")
    weights_path: str | None = option(None, "where the weights file of a referenced base was at training")


@dataclass(frozen=True)
class HeadSpec(options.Checked):
    """The classifier head: pooling, then n_layers x Dense(n_neurons, relu) [+ dropout], then one logit."""

    in_features: int = option(1, "features after pooling", low=1, high=1 << 20)
    n_layers: int = options.like(TrainSettings, "n_layers")
    n_neurons: int = options.like(TrainSettings, "n_neurons")
    dropout: float = options.like(TrainSettings, "dropout")
    pool: Literal["flatten", "avg"] = options.like(TrainSettings, "pool")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The head's tensor names and shapes, as `Head` names them."""
        out, width, index = {}, self.in_features, 0
        for _ in range(self.n_layers):
            out[f"layers.{index}.weight"], out[f"layers.{index}.bias"] = (self.n_neurons, width), (self.n_neurons,)
            index += 3 if self.dropout > 0 else 2
            width = self.n_neurons
        out[f"layers.{index}.weight"], out[f"layers.{index}.bias"] = (1, width), (1,)
        return out


@dataclass(frozen=True)
class Calibration(options.Checked):
    """P(fake) = sigmoid(scale * logit + shift): temperature scaling (shift 0) or Platt scaling."""

    method: Literal["none", "temperature", "platt"] = option("none", "calibration map")
    scale: float = option(1.0, "multiplies the logit", low=1e-4, high=1e4)
    shift: float = option(0.0, "added to the scaled logit", low=-100, high=100)

    def logit(self, logits):
        """The calibrated logit, whose sigmoid is P(fake)."""
        import numpy as np

        return self.scale * np.asarray(logits, dtype=np.float64) + self.shift

    def apply(self, logits):
        from ..metrics import sigmoid

        return sigmoid(self.logit(logits))


@dataclass(frozen=True)
class Verdict(options.Checked):
    """How a video's calibrated P(fake) becomes a verdict, and what that means on validation data."""

    threshold: float = option(0.5, "FAKE at P(fake) >= threshold", low=0, high=1)
    rule: str = option("fixed", "how it was chosen: fixed, eer or fpr=X")
    video_rule: VideoRule = options.like(TrainSettings, "video_rule")
    false_alarm_rate: float | None = option(None, "share of real validation videos it flags", low=0, high=1)
    detection_rate: float | None = option(None, "share of fake validation videos it flags", low=0, high=1)
    real_videos: int | None = option(None, "real validation videos the false-alarm rate is measured on", low=0,
                                     high=1e9)
    fake_videos: int | None = option(None, "fake validation videos the detection rate is measured on", low=0,
                                     high=1e9)
    band: float = options.like(TrainSettings, "inconclusive")

    def call(self, p: float | None) -> str | None:
        """FAKE, REAL, or INCONCLUSIVE when `p` is within `band` of the threshold; None without a score."""
        if p is None:
            return None
        if abs(p - self.threshold) < self.band:
            return "INCONCLUSIVE"
        return "FAKE" if p >= self.threshold else "REAL"

    def meaning(self) -> str:
        """The rule in plain words, with the error rates it had on validation videos and how many they were."""
        band = f", INCONCLUSIVE within {self.band:.2f} of it" if self.band else ""
        rule = f"FAKE at P(fake) >= {self.threshold:.3f}{band} ({self.rule})"
        if self.false_alarm_rate is None:
            return rule
        if self.real_videos is None or self.fake_videos is None:  # a model of fakefinder 0.2 did not count them
            return (f"{rule}: flags {100 * self.false_alarm_rate:.1f}% of real validation videos and catches "
                    f"{100 * (self.detection_rate or 0):.1f}% of fake ones")
        if min(self.real_videos, self.fake_videos) < MIN_RATE_VIDEOS:
            return (f"{rule}: validated on too few videos ({self.real_videos} real, {self.fake_videos} fake) to "
                    "state its error rates")
        return (f"{rule}: flags {100 * self.false_alarm_rate:.1f}% of {self.real_videos} real validation videos "
                f"and catches {100 * (self.detection_rate or 0):.1f}% of {self.fake_videos} fake ones")


@dataclass(frozen=True)
class Evidence(options.Checked):
    """What the model was trained and tested on, and how well it did: what a reader needs to weigh a verdict."""

    name: str = option("", "the model's name, for people")
    train_videos: int | None = option(None, "videos it was trained on", low=0, high=1e9)
    val_videos: int | None = option(None, "videos that chose its calibration and threshold", low=0, high=1e9)
    test_videos: int | None = option(None, "videos it was tested on, never used for a choice", low=0, high=1e9)
    test_auc: float | None = option(None, "video-level ROC AUC on the test videos", low=0, high=1)
    test_auc_low: float | None = option(None, "its 95% bootstrap interval (resampling the test videos' sources), "
                                        "low end", low=0, high=1)
    test_auc_high: float | None = option(None, "its 95% bootstrap interval, high end", low=0, high=1)
    val_fakes: Literal["real", "self-blended", "both"] = option(
        "real", "the fakes that chose its calibration and threshold: the data's own, self-blended pseudo-fakes of "
        "held-out reals, or both (the threshold means what they are)")

    def summary(self, dataset: str) -> str:
        """One sentence, e.g. `dfdc-lite0 was trained on 2400 videos of dfdc and calibrated on 800; its test AUC is
        0.83 (95% interval 0.79-0.87) on 800 videos never used to choose anything`."""
        if self.train_videos is None:
            return ("This model does not record what it was trained and tested on (made by fakefinder 0.2 or "
                    "earlier, or a published detector)")
        fakes = {"real": "", "self-blended": " (reals and their self-blended pseudo-fakes)",
                 "both": " (with self-blended pseudo-fakes of their reals)"}[self.val_fakes]
        trained = (f"{self.name} was trained on {self.train_videos} videos of {dataset or 'unnamed data'} and "
                   f"calibrated on {self.val_videos}{fakes}")
        if self.test_auc is None:
            return f"{trained}; it was not tested ({self.test_videos} test videos, not both real and fake)"
        interval = (f" (95% interval {self.test_auc_low:.2f}-{self.test_auc_high:.2f})"
                    if self.test_auc_low is not None else "")
        return (f"{trained}; its test AUC is {self.test_auc:.2f}{interval} on {self.test_videos} videos never used "
                "to choose anything")


@dataclass(frozen=True)
class CalibratedOn(options.Checked):
    """The user's own collection that `calibrate` refitted the calibration, threshold and strength map on, after
    training: its validation part chose them, its test part measured them."""

    dataset: str = option("", "the prepared collection's name")
    data_digest: str = option("", "its manifest's digest")
    val_videos: int = option(0, "its videos that fitted calibration, threshold and strength", low=0, high=1e9)
    test_videos: int = option(0, "its videos kept apart to measure them", low=0, high=1e9)


@dataclass(frozen=True)
class StrengthCard(options.Checked):
    """What a verdict needs to state the strength of its evidence: the likelihood ratio of "manipulated" against
    "authentic", through `map` (fitted on the validation videos' calibrated video scores, counted by video; None when
    they were not both real and fake), how good those LRs were on the test videos (Cllr, Cllr_min, EER; None when
    the test videos were not both real and fake), and the LR from which the headline says FAKE or REAL. Kept apart
    from `Evidence`, which is about the data."""

    conclusive: float = options.like(TrainSettings, "conclusive_lr")
    test_videos: int | None = option(None, "test videos Cllr, Cllr_min and EER were measured on", low=0, high=1e9)
    test_cllr: float | None = option(None, "log-likelihood-ratio cost of the map's LRs on the test videos, in bits "
                                     "(0 perfect, 1 no better than saying nothing)", low=0, high=1e6)
    test_cllr_min: float | None = option(None, "Cllr after the best monotone recalibration (PAV): discrimination "
                                         "alone", low=0, high=1)
    test_eer: float | None = option(None, "equal error rate of the test videos' scores", low=0, high=1)
    # A StrengthMap or None, checked by its own declarations (StrengthMap.from_dict); typed Any here because the
    # declarations are read with get_type_hints, and strength (NumPy) is imported on first use, not for `--help`.
    map: Any = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"propositions": list(PROPOSITIONS), "conclusive": self.conclusive, "test_videos": self.test_videos,
                "test_cllr": self.test_cllr, "test_cllr_min": self.test_cllr_min, "test_eer": self.test_eer,
                "map": self.map.to_dict() if self.map else None}

    @classmethod
    def from_dict(cls, values: Any) -> StrengthCard:
        """From the card's JSON, untrusted: every field required and checked, the map by its declarations.
        Raises OptionError naming each bad field."""
        if not isinstance(values, dict):
            raise OptionError("strength", "must be an object")
        values = dict(values)
        propositions, raw_map = values.pop("propositions", None), values.pop("map", None)
        if propositions != list(PROPOSITIONS):
            raise OptionError("strength.propositions", f"must be {list(PROPOSITIONS)}, got {propositions!r}")
        card = options.build(cls, values, what="strength field", complete=True, prefix="strength.")
        if raw_map is None:
            return card
        from .strength import StrengthMap

        return replace(card, map=StrengthMap.from_dict(raw_map, prefix="strength.map."))

    def summary(self) -> str:
        """One sentence on how good the model's LRs were, e.g. "Its likelihood ratios cost 0.41 bits (Cllr; 0.30
        after the best recalibration, 1 is no better than saying nothing) on 12 test videos", with what its
        fakes were when they were pseudo-fakes."""
        if self.map is None:
            return UNKNOWN_NO_MAP
        fakes = self.map.fakes
        against = {"real": "", "self-blended": "; its figures are against its own self-blended pseudo-fakes, not "
                   "deepfakes, so its likelihood ratios claim no more than weak support",
                   "both": "; its validation fakes included self-blended pseudo-fakes"}[fakes]
        head = (f"Its likelihood ratios come from {self.map.n_real} real and {self.map.n_fake} fake validation videos")
        if self.test_cllr is None:
            return f"{head}; they were not tested (the test videos were not both real and fake){against}"
        return (f"{head}; on {self.test_videos} test videos they cost Cllr {self.test_cllr:.2f} bits (Cllr_min "
                f"{self.test_cllr_min:.2f}; 0 is perfect, 1 no better than saying nothing){against}")


@dataclass(frozen=True)
class ModelCard:
    base: BaseCard
    head: HeadSpec
    calibration: Calibration
    verdict: Verdict
    precision: Precision
    prepare: PrepareSettings | None  # None: the crops were not made by `prepare` (unknown)
    data_digest: str = ""  # manifest digest of the training data
    dataset: str = ""
    evidence: Evidence = field(default_factory=Evidence)
    run_id: str = ""
    seed: int = 0
    train: dict[str, str] = field(default_factory=dict)  # the training settings, as text
    source: str = "fakefinder"  # or the published detector it was imported from
    face_fill: float | None = None  # data.landmarks.face_fill of the training crops (median); None: not measured
    strength: StrengthCard | None = None  # None: strength unknown (a card of format < 5, or a published detector)
    calibrated_on: CalibratedOn | None = None  # None: calibrated on its training data's validation part
    # A combined model's detectors (`models.combined`), each with its own card; `base` and `head` repeat the first's
    members: tuple[ModelCard, ...] = ()
    version: int = VERSION

    @property
    def combine_rule(self) -> str:
        """A combined model's COMBINE_RULES name (`max` on cards from before there were others)."""
        return self.train.get("combine", "max")

    @property
    def backbone(self) -> str:
        """The base's name; a combined model's members' bases, joined by +."""
        return " + ".join(m.base.backbone for m in self.members) or self.base.backbone

    def summary(self) -> str:
        """What a reader weighs a verdict by (`Evidence.summary`), and for a combined model what each member is and
        was trained on."""
        text = self.evidence.summary(self.dataset)
        if not self.members:
            return text
        each = "; ".join(f"({i + 1}) {m.evidence.summary(m.dataset)}" for i, m in enumerate(self.members))
        return f"{text}. It combines {len(self.members)} detectors, {COMBINE_RULES[self.combine_rule]}: {each}"

    def to_json(self) -> dict:
        out = asdict(self)
        out["prepare"] = asdict(self.prepare) if self.prepare else None
        out["strength"] = self.strength.to_dict() if self.strength else None
        if self.calibrated_on is None:  # absent rather than null: a card as before `calibrate`
            out.pop("calibrated_on")
        if self.members:
            out["members"] = [m.to_json() for m in self.members]
        else:  # absent: a single detector's card, as before combined models
            out.pop("members")
        return {"format": f"{FORMAT}/{VERSION}", "fakefinder": __version__, "label": LABEL, **out}

    @classmethod
    def from_json(cls, header: Any) -> ModelCard:
        """Raises UsageError (one line, naming the field) for a card that is not usable as it stands."""
        if not isinstance(header, dict):
            raise UsageError("header is not a JSON object")
        fmt = str(header.get("format", ""))
        name, _, version = fmt.partition("/")
        if name != FORMAT or not version.isdigit():
            raise UsageError(f"not a fakefinder model (format {fmt!r})")
        if int(version) > VERSION:
            raise UsageError(f"model format version {version} is newer than this fakefinder ({__version__} reads "
                             f"up to {VERSION}); upgrade fakefinder")
        if int(version) == 1:
            header = _upgrade_v1(header)
        if int(version) <= 2:
            header = _upgrade_v2(header)
        if int(version) <= 3:
            header = _upgrade_v3(header)
        if int(version) <= 4:
            header = _upgrade_v4(header)
        try:
            return cls(base=options.build(BaseCard, _part(header, "base"), what="base field", complete=True,
                                          prefix="base."),
                       head=options.build(HeadSpec, _part(header, "head"), what="head field", complete=True,
                                          prefix="head."),
                       calibration=options.build(Calibration, _part(header, "calibration"), complete=True),
                       verdict=options.build(Verdict, _part(header, "verdict"), complete=True),
                       precision=_text(header, "precision", typing.get_args(Precision)),
                       prepare=(PrepareSettings.recorded(header["prepare"])
                                if header.get("prepare") is not None else None),
                       data_digest=_text(header, "data_digest"), dataset=_text(header, "dataset"),
                       evidence=options.build(Evidence, _part(header, "evidence"), what="evidence field",
                                              complete=True, prefix="evidence."),
                       run_id=_run_id(_text(header, "run_id")), seed=int(header.get("seed") or 0),
                       train=_train(header.get("train")),
                       source=_text(header, "source") or "fakefinder", face_fill=_fill(header.get("face_fill")),
                       strength=(StrengthCard.from_dict(header["strength"])
                                 if header.get("strength") is not None else None),
                       calibrated_on=(options.build(CalibratedOn, _part(header, "calibrated_on"),
                                                    what="calibrated_on field", complete=True,
                                                    prefix="calibrated_on.")
                                      if header.get("calibrated_on") is not None else None),
                       members=_members(header.get("members")))
        except OptionError as exc:
            raise UsageError(f"bad model header: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad model header: {type(exc).__name__} {exc}") from None


def _train(value: Any) -> dict[str, str]:
    """The training settings, as text; a combined model's rule (`combine`) one of COMBINE_RULES."""
    train = {str(k): str(v) for k, v in dict(value or {}).items()}
    if train.get("combine", "max") not in COMBINE_RULES:
        raise OptionError("train.combine", f"must be one of {', '.join(COMBINE_RULES)}, got {train['combine']!r}")
    return train


def _members(value: Any) -> tuple[ModelCard, ...]:
    """A combined model's member cards: each a single detector's card (no nesting), at most MAX_MEMBERS."""
    if value is None:
        return ()
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_MEMBERS:
        raise OptionError("members", f"must be a list of 2 to {MAX_MEMBERS} model cards")
    cards = []
    for i, member in enumerate(value):
        if isinstance(member, dict) and member.get("members") is not None:  # before reading it: no nesting, no depth
            raise OptionError(f"members[{i}]", "is itself a combined model")
        try:
            cards.append(ModelCard.from_json(member))
        except UsageError as exc:
            raise OptionError(f"members[{i}]", str(exc)) from None
    return tuple(cards)


def _fill(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 4:
        raise OptionError("face_fill", f"must be a number in (0, 4], not {value!r}")
    return float(value)


def _part(header: dict, key: str) -> dict:
    value = header.get(key)
    if not isinstance(value, dict):
        raise OptionError(key, "is missing" if value is None else "must be an object")
    return value


def _text(header: dict, key: str, allowed: tuple[str, ...] | None = None) -> str:
    value = header.get(key, "")
    if not isinstance(value, str) or (allowed and value not in allowed):
        raise OptionError(key, f"must be {' or '.join(allowed) if allowed else 'text'}, got {value!r}")
    return value


def _run_id(value: str) -> str:
    try:
        return safe_run_id(value) if value else value
    except UsageError:
        raise OptionError("run_id", f"must be a run id, got {value!r}") from None


def _upgrade_v4(h: dict) -> dict:
    """Format 4's header: no strength of evidence; its verdicts read as "strength unknown"."""
    return {**h, "strength": None}


def _upgrade_v3(h: dict) -> dict:
    """Format 3's header (fakefinder 0.3 before format 4): every model then learnt from real fakes; the face's fill
    was not measured."""
    return {**h, "evidence": {**_part(h, "evidence"), "val_fakes": "real"}, "face_fill": None}


def _upgrade_v2(h: dict) -> dict:
    """fakefinder 0.2's header: no evidence recorded (unknown, not zero), no inconclusive band."""
    verdict = {**_part(h, "verdict"), "real_videos": None, "fake_videos": None, "band": 0.0}
    evidence = {name: None for name in options.declared(Evidence)} | {"name": ""}
    return {**h, "verdict": verdict, "evidence": evidence}


def _upgrade_v1(h: dict) -> dict:
    """fakefinder 0.1's header (untyped, no calibration) in this version's shape."""
    base, head = dict(h.get("base") or {}), dict(h.get("head") or {})
    base.pop("mean", None), base.pop("std", None)
    base.update(included=bool(h.get("includes_base")), weights_path=h.get("weights_path"))
    head["pool"] = h.get("pool", "avg")
    threshold = h.get("threshold", 0.5)
    return {**h, "base": base, "head": head, "calibration": {"method": "none", "scale": 1.0, "shift": 0.0},
            "verdict": {"threshold": threshold, "rule": "fixed", "video_rule": h.get("video_rule", "mean"),
                        "false_alarm_rate": None, "detection_rate": None},
            "data_digest": "", "dataset": "", "source": "fakefinder 0.1"}

