"""Train/val/test splits that do not leak.

`source` (default): a unit is a source group (a real video and every fake made from it); `video`: a unit is a
video; `frame`: a unit is a crop, the reference study's leaky protocol, kept only to measure the leak.
Units are shuffled with the seed inside label strata and dealt to test, val and train by their fractions.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _files
from ..config import PARTS, SplitBy, fraction_problems
from ..errors import OptionError, UsageError


def is_leaky(by: str) -> bool:
    """A split by frame puts faces of one video on both sides: its numbers are inflated."""
    return by == "frame"


@dataclass(frozen=True)
class Split:
    """`parts[i]` is the part of manifest row i; `assignment` maps each unit to its part (what a file saves)."""

    by: str
    seed: int
    parts: np.ndarray  # dtype object: "train" | "val" | "test" per manifest row
    assignment: dict[str, str]

    @property
    def leaky(self) -> bool:
        return is_leaky(self.by)

    def digest(self) -> str:
        return _files.json_digest([self.by, sorted(self.assignment.items())])

    def mask(self, part: str) -> np.ndarray:
        return self.parts == part

    def save(self, path: str | Path) -> None:
        _files.write_text(path, json.dumps({"by": self.by, "seed": self.seed, "assignment": self.assignment},
                                            indent=0, sort_keys=True))


def make_split(units, labels, *, by: SplitBy = "source", val: float = 0.2, test: float = 0.2,
               seed: int = 0) -> Split:
    """Deal units (one per row: a source group, a video, or a crop) to parts, stratified by whether a unit holds
    any fake. Raises UsageError for bad fractions or when a part with a positive fraction would be empty.
    """
    for name, problem in fraction_problems(val, test):
        raise OptionError(name, problem)
    units, labels = np.asarray(units), np.asarray(labels)
    has_fake: dict[str, int] = {}
    for unit, label in zip(units, labels):
        has_fake[unit] = max(has_fake.get(unit, 0), int(label))
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for stratum in (0, 1):
        members = sorted(u for u, f in has_fake.items() if f == stratum)
        members = [members[i] for i in rng.permutation(len(members))]
        n_test, n_val = round(test * len(members)), round(val * len(members))
        for i, unit in enumerate(members):
            assignment[unit] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    split = Split(by, seed, np.array([assignment[u] for u in units], dtype=object), assignment)
    for part, fraction in zip(PARTS, (1.0, val, test)):
        if fraction > 0 and not split.mask(part).any():
            raise UsageError(f"the {part} part is empty: {len(has_fake)} {by} units are too few for "
                             f"val {val:g} and test {test:g}")
    return split


def split_dataset(dataset, *, by: SplitBy = "source", val: float = 0.2, test: float = 0.2, seed: int = 0) -> Split:
    """A split of a PreparedDataset's crops and faceless videos together (each faceless video counts in its part)."""
    return make_split(dataset.units(by)[2], dataset.all_labels, by=by, val=val, test=test, seed=seed)


def _relative(unit: str, known: set[str]) -> str:
    """A crop named by its absolute path (split files of fakefinder 0.1) as the relative path this dataset uses."""
    at = unit.find("/faces/")
    while at >= 0:
        if unit[at + 1:] in known:
            return unit[at + 1:]
        at = unit.find("/faces/", at + 1)
    return unit


def load_split(path: str | Path, dataset) -> Split:
    """A saved split applied to this dataset, wherever it has moved; units it does not name are an error."""
    try:
        data = json.loads(Path(path).read_text())
        by, assignment = data["by"], dict(data["assignment"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a split file ({type(exc).__name__})") from None
    if by not in typing.get_args(SplitBy):
        raise UsageError(f"{path}: unknown split {by!r}")
    units = dataset.units(by)[2]
    if by == "frame":
        known = set(units)
        assignment = {_relative(str(k), known): v for k, v in assignment.items()}
    unknown = sorted(set(units) - set(assignment))
    if unknown:
        raise UsageError(f"{path}: does not assign {len(unknown)} {by} units of this dataset, e.g. {unknown[0]!r}")
    if set(assignment.values()) - set(PARTS):
        raise UsageError(f"{path}: parts must be train, val or test")
    return Split(by, int(data.get("seed", 0)), np.array([assignment[u] for u in units], dtype=object), assignment)
