"""The names a setting chooses from, declared once, below the settings (`config`) that validate against them.

A settings object checks its choices against these names when it is made, and the CLI's help lists them, without
importing a stage (nor PyTorch). Each stage implements exactly the names declared here and says so when it loads
(`implements`), and `tests/test_options.py` checks the same, so that a name and what it names cannot drift apart:

- `FACE_DETECTORS`: `data.faces`
- `BACKBONES` (each family module of `models.backbones` registers its members) and `NORMALIZATIONS`:
  `models.backbones`
- `AUGMENTATIONS`, the named specs `AUGMENT_SPECS` and the grammar of a spec (`parse_augment`): `training.augment`
- the metrics (`DIRECTIONS`, `LEVELS`) and what `tune --metric` selects on (`SELECTION_METRICS`): `metrics`
"""

from __future__ import annotations

from collections.abc import Iterable

FACE_DETECTORS = ("blazeface", "haar", "none")
BACKBONES = (*(f"efficientnet_b{k}" for k in range(8)), *(f"efficientnet_lite{k}" for k in range(3)), "vgg16",
             "xception")
NORMALIZATIONS = ("imagenet", "inception", "lite", "rescale")  # pixel normalisations of a base's input

AUGMENTATIONS = ("flip", "jpeg", "h264", "downscale", "blur", "noise", "colour", "cutout", "parts", "keras",
                 "reframe")
_DEFAULT_AUGMENT = "flip,jpeg=0.6,downscale=0.5,blur=0.3,noise=0.3,colour=0.5,parts=0.5,cutout=0.3"
AUGMENT_SPECS = {"default": _DEFAULT_AUGMENT,
                 # The self-blended recipe's: the default's and, half the time, one H.264 frame at CRF 18-29, as
                 # videos are compressed (bench/generalize.py measured it better in-domain over three seeds).
                 "compressed": _DEFAULT_AUGMENT.replace("jpeg=0.6,", "jpeg=0.6,h264=0.5,"),
                 "none": "", "keras": "keras"}

# Every metric of a part at a level, and whether lower is better.
DIRECTIONS = {"accuracy": "maximize", "auc": "maximize", "ap": "maximize", "log_loss": "minimize",
              "eer": "minimize", "ece": "minimize"}
LEVELS = ("video", "frame")
# What `tune --metric` selects on: validation metrics, named level_metric (e.g. video_log_loss).
SELECTION_METRICS = {f"{level}_{name}": direction for level in LEVELS for name, direction in DIRECTIONS.items()}


def implements(what: str, declared: Iterable[str], names: Iterable[str]) -> None:
    """What a stage calls when it loads: its `names` must be exactly the `declared` ones. Raises RuntimeError (a
    defect of fakefinder, not of its use) naming the names that differ."""
    declared, names = set(declared), set(names)
    if declared != names:
        raise RuntimeError(f"the {what} registry differs from the names the settings declare: "
                           f"undeclared {sorted(names - declared)}, not implemented {sorted(declared - names)}")


def parse_augment(spec: str) -> tuple[tuple[str, float], ...]:
    """`NAME[=STRENGTH],...` -> ((name, strength), ...) in the order they apply; a NAME of `AUGMENT_SPECS`
    (`default`, `compressed`, `none`, `keras`) stands for its list, so `compressed,reframe` adds to a named one.

    Raises ValueError saying what is wrong (the text follows the option's name in the error).
    """
    items = []
    parts = (p.strip() for p in spec.split(","))
    for part in filter(None, (q for p in parts for q in AUGMENT_SPECS.get(p, p).split(","))):
        name, _, value = part.partition("=")
        if name not in AUGMENTATIONS:
            raise ValueError(f"has no augmentation {name!r} (choose from {', '.join(AUGMENTATIONS)}, or "
                             f"{', '.join(AUGMENT_SPECS)})")
        try:
            strength = float(value) if value else 1.0
        except ValueError:
            raise ValueError(f"{name}: strength {value!r} is not a number") from None
        if not 0 < strength <= 1:
            raise ValueError(f"{name}: strength must be in (0, 1], got {value}")
        items.append((name, strength))
    return tuple(items)
