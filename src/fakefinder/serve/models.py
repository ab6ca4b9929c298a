"""The models a server offers, by name: each loaded on first use and shared by every job."""

from __future__ import annotations

import dataclasses
import threading

from ..config import InputLimits
from ..errors import UsageError
from .records import JobError


class Models:
    """`models` maps a name to a model file, run id or checkpoint; the first is the default."""

    def __init__(self, models: dict[str, str], *, limits: InputLimits, device: str = "auto",
                 tracking_uri: str | None = None, runtime: str | None = None) -> None:
        if not models:
            raise UsageError("serve needs at least one --model")
        self.sources, self.limits = dict(models), limits
        self.device, self.tracking_uri, self.runtime = device, tracking_uri, runtime
        self._detectors: dict[str, object] = {}
        self._loading = {name: threading.Lock() for name in self.sources}  # one model loads at a time, alone

    def named(self, name: str | None) -> str:
        """`name`, or the default for None. Raises JobError for a model not offered."""
        name = name or next(iter(self.sources))
        if name not in self.sources:
            raise JobError(f"unknown model {name!r} (offered: {', '.join(self.sources)})", 404)
        return name

    def detector(self, name: str):
        """The loaded detector for `name` (loaded once, shared by every job)."""
        from ..inference.detector import load_detector

        name = self.named(name)
        with self._loading[name]:
            if name not in self._detectors:
                self._detectors[name] = load_detector(self.sources[name], device=self.device,
                                                      tracking_uri=self.tracking_uri, limits=self.limits,
                                                      runtime=self.runtime)
        return self._detectors[name]

    def describe(self) -> list[dict]:
        out = []
        for name in self.sources:
            d = self.detector(name)
            out.append({"name": name, "source": d.card.source, "backbone": d.card.backbone,
                        "threshold": d.threshold, "inconclusive_band": d.rule.band, "meaning": d.rule.meaning(),
                        "calibration": d.card.calibration.method, "dataset": d.card.dataset,
                        "evidence": dataclasses.asdict(d.card.evidence),
                        "evidence_summary": d.card.summary(),
                        "strength_summary": d.strength_summary(),
                        "headline": "likelihood ratio" if d.has_strength else "threshold"})
        return out
