"""Strength of evidence: what a video's score says, as a likelihood ratio on the forensic verbal scale.

A bare P(fake) overstates weak evidence: "FAKE 58%" reads as a finding when the model's own validation videos
say such scores are only somewhat more common among fakes than among reals. Forensic science reports instead how
many times more probable the score is if the video is manipulated than if it is authentic (the likelihood ratio,
LR), in the words of the ENFSI guideline for evaluative reporting (2015), bounded by what the validation data can
show. Everything here is a pure function of VIDEO scores (P(fake) per video, as the card's calibration and video
rule give them) and labels (1 = fake); counts should be of independent videos (by source), not of clips.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ..errors import UsageError

Headline = Literal["FAKE", "REAL", "INCONCLUSIVE"]
Colour = Literal["red", "green", "amber"]

# The ENFSI scale, as (lowest LR of the band, its words); each band is [edge, next edge), so 10 itself is moderate
# (the colour rule's "red from moderate support, LR >= 10" needs 10 on that side). Reciprocals mirror it: LR 1/10
# is moderate support for authenticity.
BANDS = ((2.0, "weak"), (10.0, "moderate"), (100.0, "moderately strong"), (1_000.0, "strong"),
         (10_000.0, "very strong"), (1_000_000.0, "extremely strong"))
NO_SUPPORT = "no support either way"
CONCLUSIVE = 3.0  # the headline's default: FAKE at LR >= 3, REAL at LR <= 1/3
MODERATE = 10.0  # the colour's edge: red or green from moderate support


def _ratio(lr: float) -> float:
    """`lr` as a float, refusing what is not a likelihood ratio (one line, for the caller's user)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise UsageError(f"a likelihood ratio must be a number, got {lr!r}")
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"a likelihood ratio must be finite and > 0, got {lr!r}")
    return lr


def support(lr: float) -> str:
    """The verbal scale's words for `lr`, e.g. "weak support for manipulation", "no support either way".

    Bands are [2, 10) weak, [10, 100) moderate, [100, 1,000) moderately strong, [1,000, 10,000) strong,
    [10,000, 10^6) very strong, 10^6 and above extremely strong; for authenticity LR <= 1/2 weak, <= 1/10
    moderate, and so on. The guideline names no band between 1 and 2: an LR there (or between 1/2 and 1) is
    "no support either way", because it moves the odds by less than the factor of two where the guideline's
    first band, weak, begins, and a calibration fitted on a few hundred videos is not sure to that factor; its
    own phrase for LR 1 keeps the page to the guideline's words instead of inventing a weaker-than-weak one.
    Raises UsageError for an LR that is not finite and > 0.
    """
    lr = _ratio(lr)
    if lr >= 1:
        words = [name for edge, name in BANDS if lr >= edge]
        return f"{words[-1]} support for manipulation" if words else NO_SUPPORT
    words = [name for edge, name in BANDS if lr <= 1 / edge]
    return f"{words[-1]} support for authenticity" if words else NO_SUPPORT


def headline(lr: float, *, conclusive: float = CONCLUSIVE) -> Headline:
    """FAKE where LR >= `conclusive`, REAL where LR <= 1/`conclusive`, INCONCLUSIVE between: the headline follows
    the evidence, not P(fake). Raises UsageError for a bad LR or a `conclusive` that is not finite and > 1."""
    lr = _ratio(lr)
    if isinstance(conclusive, bool) or not (isinstance(conclusive, (int, float)) and math.isfinite(conclusive)
                                            and conclusive > 1):
        raise UsageError(f"conclusive must be a finite number > 1, got {conclusive!r}")
    if lr >= conclusive:
        return "FAKE"
    return "REAL" if lr <= 1 / conclusive else "INCONCLUSIVE"


def colour(lr: float) -> Colour:
    """red from moderate support for manipulation (LR >= 10), green from moderate support for authenticity
    (LR <= 1/10), amber below moderate either way: weak evidence never looks like a finding."""
    lr = _ratio(lr)
    if lr >= MODERATE:
        return "red"
    return "green" if lr <= 1 / MODERATE else "amber"
