"""Several detectors in one model file (`modelfile.CombinedModel`): each member a base and a head with its own card
(what it was trained on, its own calibration), a face's logit the largest of the members' calibrated logits or
their mean (the card's rule), then the file's own calibration, threshold and strength of evidence, fitted on held-out
videos (`inference.recalibration.combine`). Here: the card such a file starts from.

Why the largest for detectors of two kinds: a self-blended detector and a supervised one catch different fakes. A
face is as suspicious as the more suspicious member finds it, so each member keeps what it is good at
(bench/combine.py: on DFDC's test part the combination scores as the supervised member does, on FaceForensics++ clips
as the self-blended one does), where a logistic fit on one collection's fakes learns to trust the member that knows
them and forgets the other. Why the mean for detectors of one recipe (seeds): each member's errors are partly its
own, and averaging the logits cancels some of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..errors import UsageError
from .modelcard import COMBINE_RULES, Calibration, Evidence, ModelCard
from .onnxcache import fp32_allowed


def combined_card(members: Sequence[ModelCard], names: Sequence[str], rule: str = "max") -> ModelCard:
    """The card of a combination of `members` by `rule` (COMBINE_RULES) before it is calibrated: their input,
    framing and precision, each member's card inside. Raises UsageError where they differ in what one crop of a face
    must be, or for an unknown rule."""
    if rule not in COMBINE_RULES:
        raise UsageError(f"no combination rule {rule!r} (choose from {', '.join(COMBINE_RULES)})")
    first = members[0]
    for name, card in zip(names, members, strict=True):
        if card.members:
            raise UsageError(f"{name}: is itself a combined model; give its members")
        for what in ("input_size", "normalization"):
            if getattr(card.base, what) != getattr(first.base, what):
                raise UsageError(f"{name}: its {what} {getattr(card.base, what)} differs from {names[0]}'s "
                                 f"{getattr(first.base, what)}: members must read the same crop of a face")
        if card.prepare != first.prepare:
            raise UsageError(f"{name}: its faces were prepared otherwise than {names[0]}'s: members must read "
                             "faces framed alike")
    allow_fp32 = all(fp32_allowed(c) for c in members)
    label = " + ".join(c.evidence.name or c.train.get("fakes", "") or f"member {i}" for i, c in enumerate(members))
    return dataclasses.replace(
        first, calibration=Calibration(), strength=None, calibrated_on=None, run_id="", members=tuple(members),
        train={"combine": rule, "precision": "auto" if allow_fp32 else first.precision,
               "calibration": first.train.get("calibration") or first.calibration.method},
        evidence=Evidence(name=f"combined ({label})", train_videos=max(c.evidence.train_videos or 0
                                                                        for c in members) or None))
