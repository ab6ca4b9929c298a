"""How weights files are read: every format a base's weights come in, and the one reader of a file that may be a
published detector's checkpoint (`read_checkpoint`). Reading never unpickles arbitrary objects. (Where ImageNet
weights come from: `_spec`.)
"""

from __future__ import annotations

from pathlib import Path

from ..._files import sha256_file
from ...errors import UsageError, one_line
from ..checkpoints import Checkpoint, identify

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


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A weights file read once, and recognised: a published detector's checkpoint whose layout `checkpoints`
    knows, or (layout None) a plain state dict of a base. What `--weights FILE`, a checkpoint given as the model
    and a head started from one all read. Raises UsageError as `read_tensors`."""
    tensors = read_tensors(path)
    return Checkpoint(Path(path), tensors, identify(tensors))
