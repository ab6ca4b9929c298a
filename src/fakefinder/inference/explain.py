"""Why a face looks fake: Grad-CAM heatmaps (captum's LayerGradCam) over the base's last feature map, for the
logit of P(fake), laid over the face crop.

Grad-CAM weighs each channel of the last feature map by the gradient of the fake logit, so warm regions are
those that pushed the verdict towards FAKE; a detector that looks at the blending seam or the mouth shows it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..models.scoring import DifferentiableModel

_locks: dict[int, threading.Lock] = {}  # captum hooks the model: one explanation at a time per model


def _modules(model: DifferentiableModel):
    import torch

    from ..models.head import pooled

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = model.backbone.module

        def forward(self, x):
            return self.base.forward_features(x)

    class Logit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = model.head

        def forward(self, maps):
            return model.head(pooled(maps, model.card.head.pool))

    features = Features()
    return features, torch.nn.Sequential(features, Logit())


def gradcam(model: DifferentiableModel, crops: list[np.ndarray]) -> list[np.ndarray]:
    """One heatmap per BGR face crop: float32 in [0, 1], the crop's size, warm where the face looks fake."""
    import cv2
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    if not crops:
        return []
    lock = _locks.setdefault(id(model), threading.Lock())
    with lock:
        features, net = _modules(model)
        x = model.backbone.preprocess(crops).to(model.device).float()
        x.requires_grad_(True)
        net.eval()
        cam = LayerGradCam(net, features)
        with torch.enable_grad():
            attribution = cam.attribute(x, relu_attributions=True)
        maps = LayerAttribution.interpolate(attribution, tuple(x.shape[-2:]), interpolate_mode="bilinear")
        maps = maps[:, 0].detach().cpu().numpy()
    out = []
    for crop, m in zip(crops, maps):
        top = float(m.max())
        m = m / top if top > 0 else np.zeros_like(m)
        out.append(cv2.resize(m.astype(np.float32), (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR))
    return out


def overlay(crop: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """The heatmap in the JET colours over the crop (BGR uint8)."""
    import cv2

    colours = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(crop, 1 - alpha, colours, alpha, 0)


def heatmap_pngs(model: DifferentiableModel, faces) -> list[tuple[object, bytes]]:
    """(face, PNG of its heatmap over its crop) for each of `faces` (FaceResults with crops), in their order."""
    import cv2

    out = []
    for face, heat in zip(faces, gradcam(model, [f.crop for f in faces])):
        ok, png = cv2.imencode(".png", overlay(face.crop, heat))
        if ok:
            out.append((face, png.tobytes()))
    return out


def explain_results(detector, results, folder: str | Path) -> list[Path]:
    """For each result, heatmaps of its most suspicious faces as PNG files in `folder`; returns their paths. The
    model is PyTorch's (`Detector.differentiable`: loaded now where ONNX Runtime gave the verdicts)."""
    from .. import _files

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        stem = Path(result.input).stem or "input"
        for rank, (face, png) in enumerate(heatmap_pngs(detector.differentiable(), result.suspicious), 1):
            path = folder / f"{stem}-{rank}-frame{face.frame_index}-track{face.track}-p{face.p_fake:.2f}.png"
            _files.write_bytes(path, png)
            written.append(path)
    return written
