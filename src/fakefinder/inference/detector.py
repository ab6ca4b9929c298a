"""The detector API: `load_detector(model)` gives an object that owns a model and how to use it (the preparation
settings its training data had, its calibration, threshold and video rule), loads once and is reused.
`predict`, `evaluate` and `serve` all go through it.

    detector = fakefinder.load_detector("model.safetensors")      # or an MLflow run id, or a published checkpoint
    result = detector.predict_video("clip.mp4")                   # VideoResult: per frame, per face, per video
    result.p_fake, result.verdict, result.strength, result.decision, result.frames[0].faces[0].box
"""

from __future__ import annotations

import dataclasses
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import InputLimits, PrepareSettings, Runtime
from ..errors import OptionError, UsageError, one_line
from ..metrics import video_scores
from ..models.modelcard import UNKNOWN_NO_MAP, UNKNOWN_OLD, StrengthCard, Verdict
from ..models.scoring import DifferentiableModel, ScoringModel
from ..models.strength import Strength, colour
from .framing import verdict_settings
from .locate import resolve_model_file

SCORE_GROUP = 8  # faces scored together as a verdict's frames come in: small enough to overlap the decoding


@dataclass(frozen=True)
class FaceResult:
    box: tuple[float, float, float, float]  # x, y, w, h in the upright video's pixels
    p_fake: float  # calibrated
    track: int = 0  # the face track (person) this face belongs to

    def to_dict(self) -> dict:
        return {"box": [round(v, 2) for v in self.box], "p_fake": self.p_fake, "track": self.track}


@dataclass(frozen=True)
class FrameResult:
    index: int
    t: float  # seconds from the start
    faces: tuple[FaceResult, ...]

    @property
    def p_fake(self) -> float | None:
        """The frame's most suspicious face, or None without faces."""
        return max((f.p_fake for f in self.faces), default=None)

    def to_dict(self) -> dict:
        return {"t": self.t, "index": self.index, "p_fake": self.p_fake, "faces": [f.to_dict() for f in self.faces]}


@dataclass(frozen=True)
class TrackResult:
    """One person: faces linked across frames; scored with the video rule over its own faces."""

    track: int
    p_fake: float
    faces: int
    first_t: float
    last_t: float

    def to_dict(self) -> dict:
        return {"track": self.track, "p_fake": self.p_fake, "faces": self.faces, "first_t": self.first_t,
                "last_t": self.last_t}


@dataclass(frozen=True)
class SuspiciousFace:
    """One of a video's most suspicious faces, with its crop (for heatmaps; never in the JSON)."""

    frame_index: int
    t: float
    track: int
    p_fake: float
    box: tuple[float, float, float, float]
    crop: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class VideoResult:
    """One input's verdict; `p_fake`, `verdict`, `decision` and `strength` are None when no face was found or the
    input is unusable.

    With a card of format 5, `verdict` follows the strength of evidence: FAKE where the likelihood ratio is at least
    the card's `conclusive` setting, REAL where at most its reciprocal, INCONCLUSIVE between; `decision` is the
    threshold's yes/no (FAKE/REAL), for pipelines. With an older card, `verdict` is the threshold's call with its
    inconclusive band, and `strength` is None ("strength unknown").
    """

    input: str
    p_fake: float | None
    verdict: str | None
    error: str | None
    rule: Verdict  # how `decision` (and, without a strength map, `verdict`) follows from `p_fake`
    frames: tuple[FrameResult, ...] = ()
    tracks: tuple[TrackResult, ...] = ()
    frames_sampled: int = 0
    suspicious: tuple[SuspiciousFace, ...] = field(default=(), repr=False, compare=False)
    decision: str | None = None  # FAKE or REAL at the threshold
    strength: Strength | None = None
    strength_note: str = ""  # why `strength` is None, when a score could not give one
    conclusive: float | None = None  # the LR from which `verdict` says FAKE or REAL; None without a strength map

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    @property
    def faces(self) -> int:
        return sum(len(f.faces) for f in self.frames)

    @property
    def note(self) -> str:
        return self.error or ("no face found" if self.p_fake is None else "")

    @property
    def why_no_strength(self) -> str:
        """Why `strength` is None ("" when it is not): no score, or a card without a strength map."""
        if self.strength is not None:
            return ""
        return self.strength_note if self.p_fake is not None else f"no score: {self.note}"

    def strength_dict(self) -> dict | None:
        """`strength` as the JSON has it: its fields, the sentence a page leads with, and its colour."""
        if self.strength is None:
            return None
        return {**self.strength.to_dict(), "sentence": self.strength.sentence(),
                "colour": colour(self.strength.likelihood_ratio)}

    def to_dict(self) -> dict:
        return {"input": self.input, "p_fake": self.p_fake, "verdict": self.verdict, "decision": self.decision,
                "strength": self.strength_dict(), "strength_note": self.why_no_strength or None,
                "conclusive_lr": self.conclusive, "error": self.error,
                "threshold": self.threshold, "inconclusive_band": self.rule.band, "rule": self.rule.meaning(),
                "frames_sampled": self.frames_sampled, "frames_used": len(self.frames),
                "faces": self.faces, "tracks": [t.to_dict() for t in self.tracks],
                "frames": [f.to_dict() for f in self.frames]}


@dataclass
class Detector:
    """A loaded model with everything needed to give a verdict on a new video or image."""

    model: ScoringModel  # run by PyTorch (modelfile) or ONNX Runtime (onnxfile)
    verdict: Verdict  # the card's rule, or the card's with the threshold a caller gave
    settings: PrepareSettings = field(default_factory=PrepareSettings)
    batch_size: int = 32
    limits: InputLimits = field(default_factory=InputLimits)  # what one input may cost
    # The same model on PyTorch, loaded when first asked for (heatmaps after an ONNX Runtime verdict); None: none
    torch_loader: Callable[[], DifferentiableModel] | None = field(default=None, repr=False, compare=False)
    _torch: DifferentiableModel | None = field(default=None, init=False, repr=False, compare=False)
    _torch_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def card(self):
        return self.model.card

    @property
    def threshold(self) -> float:
        return self.verdict.threshold

    @property
    def has_strength(self) -> bool:
        """Whether the card has a strength-of-evidence map: then the verdict follows the LR, not the threshold."""
        return self.card.strength is not None and self.card.strength.map is not None

    @property
    def rule(self) -> Verdict:
        """How the threshold's call follows from P(fake): the verdict's without a strength map, else the decision's
        (no inconclusive band: the LR decides when the headline is INCONCLUSIVE)."""
        return dataclasses.replace(self.verdict, band=0.0) if self.has_strength else self.verdict

    def describe(self) -> str:
        """What a reader needs to weigh this detector's verdicts, in three lines: the model and its evidence, what
        its threshold means (its decision, with a strength map), and how good its strength of evidence was."""
        label = "decision" if self.has_strength else "verdict"
        return (f"model: {self.card.summary()}\n{label}: {self.rule.meaning()}\n"
                f"strength: {self.strength_summary()}")

    def strength_summary(self) -> str:
        """How the headline follows the likelihood ratio and how good the LRs were on test videos; or why the
        strength of evidence is unknown."""
        card = self.card.strength
        if card is None:
            return UNKNOWN_OLD
        if card.map is None:
            return UNKNOWN_NO_MAP
        return (f"FAKE at likelihood ratio >= {card.conclusive:g}, REAL at <= 1/{card.conclusive:g}, INCONCLUSIVE "
                f"between. {card.summary()}")

    def judge(self, score: float) -> dict:
        """The verdict of a video score: `verdict`, `decision`, `strength`, `strength_note` and `conclusive` as
        VideoResult has them."""
        decision = "FAKE" if score >= self.verdict.threshold else "REAL"
        card: StrengthCard | None = self.card.strength
        if card is None or card.map is None:
            return {"verdict": self.verdict.call(score), "decision": decision, "strength": None,
                    "strength_note": UNKNOWN_OLD if card is None else UNKNOWN_NO_MAP}
        from ..models.strength import headline

        strength = card.map.assess(score)
        return {"verdict": headline(strength.likelihood_ratio, conclusive=card.conclusive), "decision": decision,
                "strength": strength, "conclusive": card.conclusive}

    @property
    def explains(self) -> bool:
        """Whether Grad-CAM heatmaps can be had: they need gradients, which only the PyTorch runtime gives (the
        verdict's model, or the same model file loaded on PyTorch after the verdict)."""
        return isinstance(self.model, DifferentiableModel) or self.torch_loader is not None

    def differentiable(self) -> DifferentiableModel:
        """The model Grad-CAM runs: the verdict's own when PyTorch runs it, else the model file loaded on PyTorch on
        first use (once; seconds). Raises UsageError where there is none (an ONNX file, a combined model)."""
        if isinstance(self.model, DifferentiableModel):
            return self.model
        if self.card.members:
            raise UsageError(f"heatmaps are not made for a combined model ({len(self.card.members)} detectors): each "
                             "member looks at a face its own way")
        with self._torch_lock:
            if self._torch is None:
                if self.torch_loader is None:
                    raise UsageError("heatmaps need gradients, which ONNX Runtime does not give: Grad-CAM needs the "
                                     ".safetensors model")
                self._torch = self.torch_loader()
            return self._torch

    @property
    def video_rule(self) -> str:
        return self.verdict.video_rule

    def predict_faces(self, crops: list[np.ndarray]) -> np.ndarray:
        """Calibrated P(fake) of BGR uint8 face crops."""
        return self.model.predict_faces(crops)

    def predict(self, path: str | Path, **options) -> VideoResult:
        """A video or an image (the reader tells them apart by their content); options as for `predict_video`."""
        return self._predict(Path(path), **options)

    def predict_video(self, path: str | Path, *, on_progress: Callable[[int, int], None] | None = None,
                      on_frame: Callable | None = None, keep_faces: int = 0) -> VideoResult:
        """Frames sampled and faces cropped as the training data was; memory bounded by a few batches of crops.

        `on_progress(frames sampled, faces found)` is called as the video is read, `on_frame(frame)` with each
        sampled frame (thumbnails), both from the thread that decodes; `keep_faces` keeps the crops of that many
        most suspicious faces (heatmaps).
        Never raises for a bad input: the result carries a one-line error.
        """
        return self._predict(Path(path), on_progress=on_progress, on_frame=on_frame, keep_faces=keep_faces)

    def _predict(self, path: Path, *, on_progress=None, on_frame=None, keep_faces: int = 0) -> VideoResult:
        import heapq
        import itertools

        from .._background import Ahead
        from ..data.facecrops import face_crops
        from ..data.tracks import link_tracks

        if not path.is_file():
            return VideoResult(str(path), None, None, "file not found", self.rule)
        frames: dict[int, tuple[float, list]] = {}
        pending: list = []
        counts = [0, 0]
        kept: list = []  # a min-heap of (p, order, face) holding the `keep_faces` most suspicious
        order = itertools.count()  # ties in p never fall through to comparing faces

        def flush() -> None:
            for face, p in zip(pending, self.predict_faces([f.crop for f in pending]), strict=True):
                b = face.box
                frames[face.frame_index][1].append(((b.x, b.y, b.w, b.h), float(p)))
                if keep_faces:
                    entry = (float(p), next(order), face)
                    (heapq.heappush if len(kept) < keep_faces else heapq.heappushpop)(kept, entry)
            pending.clear()

        def seen_frame(frame) -> None:
            faces.check()  # in the decoding thread: a long video without faces stops at once when left
            frames.setdefault(frame.index, (round(frame.timestamp, 6), []))
            counts[0] += 1
            if on_frame:
                on_frame(frame)
            if on_progress:
                on_progress(counts[0], counts[1])

        # Decoding and face detection run ahead in a thread while the faces found so far are scored, a group at a
        # time: the scores are in soon after the last frame is. Groups are cut by count, never by timing, so that a
        # video's scores are the same however fast its frames came (a batch's make-up moves the last digits).
        group = min(self.batch_size, SCORE_GROUP)
        faces = Ahead(face_crops(path, self.settings, on_frame=seen_frame, limits=self.limits), 2 * group,
                      name="decode")
        try:
            for face in faces:
                pending.append(face)
                counts[1] += 1
                if len(pending) >= group:
                    flush()
            if pending:
                flush()
        except Exception as exc:  # noqa: BLE001 - one unusable input never stops the batch
            return VideoResult(str(path), None, None, one_line(exc), self.rule, frames_sampled=counts[0])
        if on_progress:  # the last word: every face counted (frames are reported as read, faces as scored)
            on_progress(counts[0], counts[1])
        ordered = sorted(frames.items())
        track_of = link_tracks([[box for box, _ in faces] for _, (_, faces) in ordered])
        result = tuple(FrameResult(i, t, tuple(FaceResult(box, p, track_of[k][j]) for j, (box, p) in enumerate(faces)))
                       for k, (i, (t, faces)) in enumerate(ordered))
        tracks = self._tracks(result)
        if not tracks:
            return VideoResult(str(path), None, None, None, self.rule, result, (), counts[0])
        faces = [face for frame in result for face in frame.faces]
        _, _, scores = video_scores(["v"] * len(faces), [0] * len(faces), [f.p_fake for f in faces],
                                    rule=self.video_rule, tracks=[f.track for f in faces])
        score = float(scores[0])  # as `evaluate` scores a video: the most suspicious track
        position = {i: k for k, i in enumerate(i for i, _ in ordered)}
        suspicious = tuple(SuspiciousFace(face.frame_index, face.timestamp,
                                          result[position[face.frame_index]].faces[face.face_index].track, p,
                                          result[position[face.frame_index]].faces[face.face_index].box, face.crop)
                           for p, _, face in sorted(kept, key=lambda e: -e[0]))
        judged = self.judge(score)
        return VideoResult(str(path), score, judged.pop("verdict"), None, self.rule, result, tracks, counts[0],
                           suspicious, **judged)

    def _tracks(self, frames: tuple[FrameResult, ...]) -> tuple[TrackResult, ...]:
        by_track: dict[int, list[tuple[float, float]]] = {}
        for frame in frames:
            for face in frame.faces:
                by_track.setdefault(face.track, []).append((frame.t, face.p_fake))
        out = []
        for track, items in sorted(by_track.items()):
            p = [q for _, q in items]
            _, _, score = video_scores(["v"] * len(p), [0] * len(p), p, rule=self.video_rule)
            out.append(TrackResult(track, float(score[0]), len(p), items[0][0], items[-1][0]))
        return tuple(out)


@dataclass(frozen=True)
class LoadOptions:
    """How a model is loaded (see `load_detector`): what `evaluate`, `evaluate_collections` and `predict` take
    beside the model, which they load once."""

    device: str = "auto"
    tracking_uri: str | None = None
    base_weights: str | Path | None = None
    threshold: float | None = None
    batch_size: int = 32
    limits: InputLimits | None = None
    runtime: Runtime | None = None  # None: ONNX Runtime where it can run the model at fp32, else PyTorch

    def load(self, model: str | Path) -> Detector:
        return load_detector(model, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


def load_detector(model: str | Path, *, device: str = "auto", tracking_uri: str | None = None,
                  base_weights: str | Path | None = None, threshold: float | None = None,
                  batch_size: int = 32, limits: InputLimits | None = None, runtime: Runtime | None = None
                  ) -> Detector:
    """A detector from a model file, an MLflow run id (or unique prefix), a published checkpoint file, or an ONNX
    file that `export` wrote.

    `threshold` overrides the model's own. `runtime`: "onnx" runs a `.safetensors` model with ONNX Runtime at fp32
    on the CPU, through an export made once and cached by the file's digest (`models.onnxcache`); "torch" runs it
    with PyTorch (GPUs; a card's bf16). None (the default): an ONNX file's own runtime; for a model file, ONNX
    Runtime where it is installed, the card allows fp32 and the device is the CPU, else PyTorch
    (`onnxcache.default_runtime`). Grad-CAM heatmaps load the model on PyTorch when first asked for
    (`Detector.differentiable`). Raises UsageError for a model that cannot be found or loaded.
    """
    path = resolve_model_file(model, tracking_uri=tracking_uri)
    onnx_file = path.suffix.lower() == ".onnx"
    if runtime is not None and runtime not in typing.get_args(Runtime):
        raise OptionError("runtime", f"must be one of {', '.join(typing.get_args(Runtime))}, not {runtime!r}")
    if onnx_file and runtime == "torch":
        raise OptionError("runtime", f"must be onnx for {path.name}, an ONNX file (or give its .safetensors model)")
    loaded: ScoringModel  # the runtime is chosen here; the detector speaks only to the protocol
    torch_loader = None
    if onnx_file:
        from ..models.onnxfile import load_onnx

        loaded = load_onnx(path)
    else:
        loaded, torch_loader = _load_model_file(path, device=device, base_weights=base_weights, runtime=runtime)
    verdict = loaded.card.verdict
    if threshold is not None:  # the rates were measured at the card's threshold: they do not hold at another
        verdict = dataclasses.replace(verdict, threshold=threshold, rule="given", false_alarm_rate=None,
                                      detection_rate=None, real_videos=None, fake_videos=None)
    return Detector(loaded, verdict, verdict_settings(loaded.card), batch_size, limits or InputLimits(),
                    torch_loader=torch_loader)


def _load_model_file(path: Path, *, device: str, base_weights, runtime: Runtime | None):
    """(the scoring model, a loader of the PyTorch model for heatmaps or None) of a model file that is not ONNX."""
    from ..hardware import resolve_device
    from ..models import onnxcache
    from ..models.modelfile import load_model

    if runtime is None:
        runtime = onnxcache.default_runtime(path, device)
    if runtime == "torch":
        return load_model(path, device=resolve_device(device), base_weights=base_weights), None
    if onnxcache.file_card(path) is None:  # a published checkpoint: exported in memory, as it has no card to check
        from ..models.onnxfile import OnnxModel

        model = load_model(path, device="cpu", base_weights=base_weights)
        return OnnxModel.of(model), lambda: model
    return (onnxcache.load_cached(path, base_weights=base_weights),
            lambda: load_model(path, device="cpu", base_weights=base_weights))
