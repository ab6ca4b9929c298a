"""Every setting of `prepare`, `train` and `tune`, each declared once (see `options`), with the named presets.

A settings object validates itself when it is made, so an unusable one never exists; its errors name the
setting (`lr must be > 0`) and the CLI's name the flag (`--lr must be > 0`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from . import options, registries
from .errors import UsageError
from .options import option

T = TypeVar("T")
CollectionLayout = Literal["auto", "dfdc", "csv", "folders", "ffpp"]  # how `prepare` reads one (see `data.collection`)
SplitBy = Literal["source", "video", "frame"]  # what a split keeps on one side (see `data.splits`)
VideoRule = Literal["mean", "confident"]  # how a video's score comes from its faces' (see `metrics.video_scores`)
Precision = Literal["fp32", "bf16", "fp16"]  # what a base computes in (see `hardware`)
Runtime = Literal["torch", "onnx"]  # what runs a model: PyTorch, or ONNX Runtime (see `models.onnxfile`)
Fakes = Literal["real", "self-blended", "both"]  # what a detector learns fakes from (see `training.pseudofakes`)
Part = Literal["train", "val", "test"]
PARTS: tuple[Part, ...] = typing.get_args(Part)


def _detectors():
    return registries.FACE_DETECTORS


def _backbones():
    return registries.BACKBONES


def _normalizations():
    return registries.NORMALIZATIONS


def _metrics():
    return registries.SELECTION_METRICS


class _Settings(options.Checked):
    """What every settings class shares: validation on creation, presets, tracked params."""

    PRESETS: dict[str, dict[str, Any]] = {"default": {}}

    @classmethod
    def preset(cls: type[T], name: str = "default", **overrides: Any) -> T:
        """A named preset with some settings replaced. Raises UsageError for an unknown preset."""
        if name not in cls.PRESETS:
            raise UsageError(f"unknown preset {name!r} (choose from {', '.join(cls.PRESETS)})")
        return cls(**{**cls.PRESETS[name], **overrides})

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict[str, str]:
        return options.params(self)


@dataclass(frozen=True)
class PrepareSettings(_Settings):
    """How frames are sampled and faces cropped; part of every record's key, so changing it redoes the work."""

    fps: float | None = option(1.0, "frames sampled per second", low=0, low_open=True, high=1000, group="frames")
    frames: int | None = option(None, "instead of --fps: N evenly spaced frames per video", low=1, high=100_000,
                                group="frames")
    max_side: int | None = option(1000, "shrink frames to this long side (the reference resized to 1000)", low=32,
                                  high=16384, group="frames")
    tolerance: float = option(0.1, "seconds a sample may be from its time: only frames that others reference are "
                              "decoded and each sample is the nearest of them (B-frames skipped); 0: exact frames",
                              low=0, high=10, group="frames")
    detector: str = option("blazeface", "face detector", choices=_detectors, group="faces")
    margin: float = option(0.3, "added around the box on every side, as a fraction of its long side (with "
                           "--detector none always 0: the image is the crop)", low=0, high=4, group="faces")
    faces: Literal["largest", "all"] = option("largest", "faces kept per frame", group="faces")
    min_face: int = option(0, "smallest face side kept, in video pixels", low=0, high=100_000, group="faces")
    size: int = option(224, "side of the saved square crops", low=8, high=2048, group="faces")
    align: bool = option(False, "turn each crop about its face so that the eyes are level (a detector that finds "
                         "eyes: blazeface)", group="faces")
    landmarks: bool = option(True, "store a 468-point face mesh of every crop beside the crops (landmarks.npz): "
                             "self-blended masks follow it", group="faces")

    PRESETS = {"default": {},
               # The reference study: 1 fps (exact frames: it decoded every one), long side 1000, Haar `alt` with
               # its settings, tight crops, all faces.
               "reference": dict(fps=1.0, frames=None, max_side=1000, tolerance=0.0, detector="haar", margin=0.0,
                                 faces="all")}

    def __post_init__(self) -> None:
        # An image that is already a face crop has nothing around it to add: a margin would pad it with black.
        if self.detector == "none":
            object.__setattr__(self, "margin", 0.0)
        super().__post_init__()

    def _cross_check(self) -> list[tuple[str, str]]:
        found = [("fps", "must be given (or frames)")] if self.fps is None and self.frames is None else []
        if self.align and self.detector != "blazeface":
            found.append(("align", f"needs a detector that finds the eyes (blazeface), not {self.detector}"))
        return found

    @classmethod
    def recorded(cls, values: Any) -> PrepareSettings:
        """Settings as a preparation or a model card recorded them: what predates `tolerance` sampled exactly, and
        crops made by `--detector none` with a margin (before it meant 0) stay padded as they were."""
        settings = options.build(cls, {"tolerance": 0.0, **values} if isinstance(values, dict) else values,
                                 what="prepare setting")
        if isinstance(values, dict) and settings.detector == "none" and values.get("margin"):
            object.__setattr__(settings, "margin", float(values["margin"]))
        return settings

    def digest_fields(self) -> dict[str, Any]:
        """The fields that decide the crops; `tolerance` 0 and `align` off are left out, so that preparations made
        before they existed are reused by `--tolerance 0`."""
        fields = dataclasses.asdict(self)
        del fields["landmarks"]  # stored beside the crops, it changes none of them
        for added_later in ("tolerance", "align"):
            if not fields[added_later]:
                del fields[added_later]
        return fields


def fraction_problems(val: float, test: float) -> list[tuple[str, str]]:
    """What is wrong with a split's validation and test fractions, as (setting, problem) pairs: each checked by
    its declaration in TrainSettings, and their sum."""
    declared = options.declared(TrainSettings)
    found = [(name, why) for name, value in (("val", val), ("test", test)) if (why := declared[name].problem(value))]
    if not found and val + test >= 1:
        found.append(("test", f"and val must sum to less than 1 (val {val:g} + test {test:g})"))
    return found


@dataclass(frozen=True)
class InputLimits(_Settings):
    """What one input may cost before it is refused: a hostile or mistaken file (a 30000 px PNG of 2 MB, an hour
    of 32 px video) must not take the machine's memory or a worker's hour. Not part of any record's key."""

    max_megapixels: float = option(100.0, "largest frame or image accepted, in megapixels (checked before "
                                   "decoding)", low=0.01, high=10_000, group="limits")
    max_minutes: float = option(240.0, "longest video accepted, in minutes", low=0.01, high=100_000,
                                group="limits")

    # A server takes files from anyone who reaches it: stricter than a command run on one's own files.
    PRESETS = {"default": {}, "serve": dict(max_megapixels=40.0, max_minutes=10.0)}


@dataclass(frozen=True)
class TrainSettings(_Settings):
    """Every setting of a training run."""

    backbone: str = option("efficientnet_lite0", "ImageNet base", choices=_backbones, group="base")
    weights: str = option("imagenet", "imagenet, none (random, seeded) or a file: a .pth/.safetensors state dict, "
                          "Keras' VGG16 .h5, or a published checkpoint (DFDC winner, FaceForensics++ Xception)",
                          group="base", metavar="imagenet|none|FILE")
    input_size: int | None = option(None, "side of the base's input; none: the base's own", low=32, high=1024,
                                    group="base")
    normalization: str | None = option(None, "pixel normalisation; none: what the weights were trained with",
                                       choices=_normalizations, group="base")
    trainable_blocks: int | Literal["all"] = option(
        0, "fine-tune the last K blocks of the base, or all of it; 0: frozen base, its features cached",
        low=0, high=1000, group="fine-tuning")
    pool: Literal["flatten", "avg"] = option("avg", "how the base's feature map becomes a vector", group="head")
    n_layers: int = option(1, "hidden Dense(relu) layers of the head", low=0, high=8, group="head")
    n_neurons: int = option(256, "units per hidden layer", low=1, high=8192, group="head")
    dropout: float = option(0.0, "dropout after each hidden layer", low=0, high=1, high_open=True, group="head")
    optimizer: Literal["adamw", "adam", "rmsprop"] = option("adamw", "optimiser", group="optimisation")
    lr: float = option(1e-3, "learning rate of the head (when fine-tuning: of the linear probe)", low=0,
                       low_open=True, high=10, group="optimisation")
    base_lr_scale: float = option(0.1, "when fine-tuning, the learning rate of the base (and, after a probe, of the "
                                  "head too) as a fraction of --lr", low=0, low_open=True, high=1,
                                  group="optimisation")
    weight_decay: float = option(0.01, "decoupled weight decay (AdamW), L2 penalty otherwise", low=0, high=1,
                                 group="optimisation")
    schedule: Literal["cosine", "constant"] = option("cosine", "learning-rate schedule after the warmup",
                                                     group="optimisation")
    warmup: float = option(0.05, "fraction of the steps with a linearly rising learning rate", low=0, high=0.5,
                           group="optimisation")
    grad_clip: float | None = option(1.0, "clip the gradient norm at this value; none: no clipping", low=0,
                                     low_open=True, high=1e6, group="optimisation")
    epochs: int = option(30, "most epochs", low=1, high=10_000, group="optimisation")
    batch_size: int = option(32, "crops per step", low=1, high=65_536, group="optimisation")
    patience: int = option(5, "stop after this many epochs without a better validation loss, restoring the best; "
                           "0: off", low=0, high=10_000, group="optimisation")
    balance: Literal["undersample", "weight", "none"] = option(
        "undersample", "class balance: cut the majority class (the reference), weight the loss, or neither",
        group="optimisation")
    probe: bool = option(True, "when fine-tuning, start from a head trained on the frozen base's cached features "
                         "(linear probe, then fine-tune)", group="fine-tuning")
    progressive: int | None = option(
        None, "when fine-tuning, the image side of the first epoch, growing evenly to the base's input size by the "
        "last (progressive resizing: early epochs cost less); none: every epoch at the input size", low=32, high=1024,
        group="fine-tuning")
    average_weights: float = option(
        0.0, "the model kept is the mean of the weights after every step of the last FRACTION of training (stochastic "
        "weight averaging, densely, as SWAD: a flatter optimum, for data unlike the training data; no gain measured "
        "for the self-blended recipe); 0: the last step's weights", low=0, high=1, group="optimisation",
        metavar="FRACTION")
    sam: float = option(
        0.0, "sharpness-aware minimisation's radius (SAM, as the self-blended paper trains): each step's gradient is "
        "taken where the weights' ascent RHO away leads, for a flatter optimum; two passes a step; it scored lower in "
        "the self-blended recipe's 6 epochs on a CPU; 0: off", low=0, high=10, group="optimisation", metavar="RHO")
    bn: Literal["frozen", "train"] = option("frozen", "the base's BatchNorm statistics when fine-tuning: frozen "
                                            "(right for small batches) or updated", group="fine-tuning")
    augment: str = option("default", "augmentations when fine-tuning: default, compressed (the default's and H.264 "
                          "half the time), none, keras (the reference's), or NAME[=STRENGTH],... of "
                          "those names or "
                          + ", ".join(a for a in registries.AUGMENTATIONS if a != "keras"), group="fine-tuning")
    precision: Literal["auto", Precision] = option(
        "auto", "compute precision of the base: auto = bf16 where the CPU or GPU runs it natively, else fp32",
        group="base")
    split: SplitBy = option(
        "source", "source: a fake stays with its original; video; frame: the reference's leaky split", group="split")
    val: float = option(0.2, "fraction of units for validation", low=0, high=1, high_open=True, group="split")
    test: float = option(0.2, "fraction of units for the test part", low=0, high=1, high_open=True, group="split")
    seed: int = option(0, "seed of the split, initialisation, shuffling and augmentation", low=0, high=2**31 - 1,
                       group="split")
    ensemble: int = option(1, "detectors of this recipe trained on one split with seeds SEED, SEED+1, ... and "
                           "carried in one model file, a face scored by the mean of their calibrated logits "
                           "(bench/ensemble.py: two seeds score better than one; each costs a run)", low=1, high=8,
                           group="optimisation")
    fakes: Fakes = option(
        "real", "the fakes to learn from: the data's own, pseudo-fakes made from its real faces (self-blended "
        "images: learn the blending every face swap leaves, not one generator's traces), or both (see --both)",
        group="fakes")
    both: Literal["combined", "mixed"] = option(
        "combined", "with --fakes both: a self-blended and a supervised detector trained apart on one split and "
        "carried in one model file, a face scored by the more suspicious (combined: measured better on both "
        "collections), or one detector learning both kinds of fakes as one class (mixed)", group="fakes")
    supervised_epochs: int | None = option(None, "with --fakes both --both combined: epochs of the supervised "
                                           "member (default: --epochs)", low=1, high=100_000, group="fakes")
    supervised_pair_augment: Literal["apart", "alike"] | None = option(
        None, "with --fakes both --both combined: --pair-augment of the supervised member (default: --pair-augment)",
        group="fakes")
    supervised_augment: str = option(
        "", "with --fakes both --both combined: --augment of the supervised member (empty: --augment's)",
        group="fakes")
    blends: int = option(2, "pseudo-fakes made per real crop with --fakes self-blended or both, ahead of training "
                         "and kept beside the data", low=1, high=64, group="fakes")
    blend_colour: float = option(0.1, "a pseudo-fake's largest colour change (RGB and HSV shifts, brightness, "
                                 "contrast), as a fraction of the range", low=0, high=1, group="fakes")
    blend_frequency: float = option(0.5, "chance of a frequency change to the pasted face: blur, sharpen, or "
                                    "down-and-up scaling", low=0, high=1, group="fakes")
    blend_geometry: float = option(0.04, "largest scale change and shift of the pasted face, as a fraction of the "
                                   "crop", low=0, high=0.5, group="fakes")
    blend_deform: float = option(0.08, "largest deformation of the blending mask, as a fraction of the face",
                                 low=0, high=0.5, group="fakes")
    blend_feather: float = option(0.12, "largest blur of the mask's edge, as a fraction of the face", low=0,
                                  high=0.5, group="fakes")
    blend_mask: Literal["hull", "varied", "varied-lower"] = option(
        "hull", "the blending mask's shape: the face mesh's hull, or at random (SBI's mask diversity) the hull, the "
        "hull without the forehead, or the eyes, nose and mouth alone, each also scaled, turned and shifted a little; "
        "varied-lower: those or the lower face (nose tip to chin, where reenactment such as NeuralTextures changes "
        "a face)", group="fakes")
    blend_full: float = option(0.5, "chance that the face is pasted whole (blend ratio 1); else at 0.25, 0.5 or 0.75",
                               low=0, high=1, group="fakes")
    blend_map: float = option(
        0.0, "with pseudo-fakes made anew while the base trains: the weight of a second loss that asks the base's "
        "last feature map where each pseudo-fake was blended (its mask; none on a real), as Face X-ray supervises, "
        "besides whether it was; 0: off", low=0, high=100, group="fakes", metavar="WEIGHT")
    pair_augment: Literal["apart", "alike"] = option(
        "apart", "with pseudo-fakes (or --pair-batches): augment a real crop and its fakes each with its own draw "
        "(apart), or with one draw (alike, as SBI does: the same flip, re-compression and colour, so only the blend "
        "tells them apart)",
        group="fakes")
    pair_batches: bool = option(
        False, "with real fakes: batch each fake crop beside its source real's crop of the same frame and face "
        "(a --labels CSV's original, a metadata.json's), so that a batch holds faces that differ by the "
        "manipulation rather than by who is shown (pseudo-fakes always are; the both preset sets it)", group="fakes")
    video_rule: VideoRule = option(
        "mean", "video score from its faces: their mean, or the DFDC winner's confident rule", group="verdict")
    calibration: Literal["temperature", "platt", "none"] = option(
        "temperature", "map fitted on validation so that P(fake) means what it says", group="verdict")
    threshold: float | Literal["eer"] = option(
        "eer", "video verdict threshold on calibrated P(fake); eer: chosen on validation at the equal error rate",
        low=0, high=1, group="verdict")
    inconclusive: float = option(0.05, "a video scored within this much of the threshold reads INCONCLUSIVE, not "
                                 "FAKE or REAL, where a model has no strength-of-evidence map (else --conclusive-lr "
                                 "decides)", low=0, high=0.5, group="verdict")
    target_fpr: float | None = option(None, "instead: the threshold that flags at most this fraction of real "
                                      "validation videos", low=0, low_open=True, high=1, high_open=True,
                                      group="verdict")
    conclusive_lr: float = option(3.0, "the headline says FAKE where a video's likelihood ratio is at least this, "
                                  "REAL where at most its reciprocal, INCONCLUSIVE between (kept on the card)", low=1,
                                  low_open=True, high=1e6, group="verdict")

    _REFERENCE = dict(backbone="vgg16", input_size=150, normalization="rescale", pool="flatten", n_layers=1,
                      n_neurons=256, optimizer="rmsprop", lr=2e-5, base_lr_scale=1.0, weight_decay=0.0,
                      schedule="constant", warmup=0.0, grad_clip=None, epochs=10, batch_size=10, patience=0,
                      balance="undersample", trainable_blocks="all", probe=False, bn="train", augment="keras",
                      precision="fp32", calibration="none", threshold=0.5)
    _SELF_BLENDED = dict(fakes="self-blended", blends=1, trainable_blocks="all", epochs=6, augment="compressed",
                         blend_mask="varied-lower")
    PRESETS = {"default": {},
               # The reference study: VGG16 trained whole at 150 px on 0-1 pixels, Flatten, Dense(256), sigmoid,
               # RMSprop 2e-5, 10 epochs of batch 10 with Keras' augmentation, verdict at 0.5.
               "reference": _REFERENCE,
               # Its tuned variant: 128 neurons, lr 1e-5, up to 100 epochs, early stopping with patience 3.
               "reference-tuned": {**_REFERENCE, "n_neurons": 128, "lr": 1e-5, "epochs": 100, "patience": 3},
               # What `--fakes self-blended` starts from: the recipe measured best by bench/generalize.py on 2 CPU
               # cores (the base fine-tuned whole on a new pseudo-fake of each real every epoch, H.264 among the
               # augmentations, every mask shape: bench/paired.py, DFDC's log loss better, no AUC told apart; the
               # lower face among them: over three seeds NeuralTextures' crops and DFDC's log loss better, nothing
               # worse).
               "self-blended": _SELF_BLENDED,
               # What `--fakes both` starts from: that recipe for the self-blended member (bench/paired.py: against
               # the hull without H.264 it had until 2026-12-06, the pair's reenactment log losses better, nothing
               # worse), as many epochs of the whole base on the data's fakes for the supervised one, each fake batched
               # beside its original and augmented alike with it, without H.264 (6 epochs beat 3 in-domain, pair
               # batches beat those, alike beat apart, the pair likewise each time; H.264 made its log loss worse);
               # with --both mixed, that recipe on both kinds of fakes.
               "both": dict(_SELF_BLENDED, fakes="both", pair_batches=True, supervised_augment="default",
                            supervised_pair_augment="alike"),
               # For a GPU, after the paper (SBI): EfficientNet-B4 at its 380 px, the paper's mask shapes, a new
               # pseudo-fake of each real every epoch for up to 100 epochs (AdamW here: SAM, --sam 0.05, scored lower
               # in the CPU recipe's 6 epochs, bench/generalize.py's row self-blended-sam). Not measured here:
               # no GPU was lent to the sessions that wrote it; its CPU test runs it tiny.
               "self-blended-gpu": dict(fakes="self-blended", blends=1, trainable_blocks="all", epochs=100,
                                        patience=10, backbone="efficientnet_b4", blend_mask="varied")}

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> TrainSettings:
        """As `_Settings.preset`; `fakes="self-blended"` or `"both"` over the default preset starts from the preset
        of that name (what the benches measured)."""
        if name == "default" and overrides.get("fakes") in ("self-blended", "both"):
            name = overrides["fakes"]
        return super().preset(name, **overrides)

    @property
    def two_kinds(self) -> bool:
        """`--fakes both --both combined`: a self-blended and a supervised detector, combined."""
        return self.fakes == "both" and self.both == "combined"

    @property
    def combined(self) -> bool:
        """`train` builds several detectors and combines them (`workflows.training`)."""
        return self.ensemble > 1 or self.two_kinds

    @property
    def combine_rule(self) -> str:
        """How a combined run's file scores a face (`models.modelcard.COMBINE_RULES`): the mean of one recipe's
        seeds, the largest of two kinds of detector."""
        return "mean" if self.ensemble > 1 else "max"

    def members(self) -> dict[str, TrainSettings]:
        """The settings of a combined run's members, by the name each is recorded under."""
        if self.ensemble > 1:
            return {f"seed{self.seed + k}": self.replace(ensemble=1, seed=self.seed + k) for k in range(self.ensemble)}
        return {"self-blended": self.replace(fakes="self-blended"),
                "supervised": self.replace(fakes="real", blend_map=0.0,
                                           epochs=self.supervised_epochs or self.epochs,
                                           augment=self.supervised_augment or self.augment,
                                           pair_augment=self.supervised_pair_augment or self.pair_augment)}

    @classmethod
    def reference(cls, **overrides: Any) -> TrainSettings:
        return cls.preset("reference", **overrides)

    @property
    def frozen(self) -> bool:
        """A frozen base: its features are cached and only the head trains."""
        return self.trainable_blocks == 0

    def _cross_check(self) -> list[tuple[str, str]]:
        found = fraction_problems(self.val, self.test)
        named: dict[str, set[str]] = {}  # setting -> the augmentations it names
        for setting, spec in (("augment", self.augment), ("supervised_augment", self.supervised_augment or "none")):
            try:
                named[setting] = {name for name, _ in registries.parse_augment(spec)}
            except ValueError as exc:
                found.append((setting, str(exc)))
        augmentations = named.get("augment", set())
        if self.progressive is not None and self.frozen:
            found.append(("progressive", "resizes the images of fine-tuning: it needs --trainable-blocks K > 0"))
        if self.blend_map > 0 and (self.fakes == "real" or self.frozen):
            found.append(("blend_map", "supervises pseudo-fakes made while the base trains: it needs --fakes "
                                       "self-blended or both and --trainable-blocks K > 0"))
        if self.blend_map > 0 and "keras" in augmentations:
            found.append(("blend_map", "the keras augmentation moves pixels without the blend's mask: choose another "
                                       "--augment"))
        if self.ensemble > 1 and self.two_kinds:
            found.append(("ensemble", "averages one detector's seeds; --fakes both --both combined is two kinds of "
                                      "detector already: give --both mixed, or train the seeds and `combine` them"))
        return found


TrainConfig = TrainSettings  # its name before fakefinder 0.3, kept so that existing code runs


@dataclass(frozen=True)
class TuneSettings(_Settings):
    """How `tune` searches; the grid file says over what."""

    search: Literal["grid", "random", "tpe"] = option("grid", "grid: every configuration of the grid file; "
                                                      "random or tpe: --trials samples of it")
    trials: int | None = option(None, "how many trials a random or tpe search runs", low=1, high=1_000_000)
    metric: str = option("video_log_loss", "validation metric to select on", choices=_metrics)
    concurrent_trials: int = option(1, "trials run at once: worker processes on this machine, or Ray tasks", low=1,
                                    high=1024)
    seed: int = option(0, "seed of the sampler, of `sample`, and of every trial that does not set its own",
                       low=0, high=2**31 - 1)

    def _cross_check(self) -> list[tuple[str, str]]:
        if self.search != "grid" and self.trials is None:
            return [("trials", f"must be given for a {self.search} search")]
        return []


@dataclass(frozen=True)
class ServeSettings(_Settings):
    """How `serve` shares this machine among uploads."""

    concurrent_verdicts: int = option(2, "verdicts computed at once", low=1, high=256)
    queue: int = option(16, "most jobs waiting or running; more are refused with 503", low=1, high=100_000)
    upload_limit: int = option(500, "largest upload, in MB", low=1, high=1_000_000, metavar="MB")
    retention: float = option(60.0, "finished jobs (and their thumbnails) are deleted after this many minutes",
                              low=0, high=525_600, metavar="MINUTES")
    inference_timeout: float = option(600.0, "a verdict still running after this many seconds fails and its upload "
                                             "is deleted", low=1, high=86_400, metavar="SECONDS")
