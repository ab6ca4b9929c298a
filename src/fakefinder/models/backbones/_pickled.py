"""Tensors out of PyTorch files without running code from them.

Plain state dicts load with `torch.load(weights_only=True)`. Some published detectors are whole pickled
models instead (FaceForensics++ saved `torch.save(model)` of classes from its own repository; the DFDC winner's
files carry a numpy scalar). Those are read with an unpickler that builds PyTorch's own layer classes, numpy
scalars and tensors, and replaces every other class by an empty module that only receives its attributes: the
parameters come out. The only functions a file may name are PyTorch's tensor rebuilders and two codecs helpers;
any other function, even one inside torch (`torch.storage._load_from_bytes` would unpickle without limits),
becomes an inert stub.
"""

from __future__ import annotations

import pickle
from pathlib import Path

_REAL = {"collections.OrderedDict", "builtins.set", "builtins.frozenset", "torch.Size", "torch.device",
         "torch.nn.parameter.Parameter", "numpy.dtype", "numpy.core.multiarray.scalar",
         "numpy._core.multiarray.scalar", "_codecs.encode"}  # how protocol 2 pickles bytes
_REBUILDERS = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
               "_rebuild_parameter_with_state"}
_CLASS_MODULES = ("torch.nn.modules.", "numpy.dtypes", "torch.storage")  # only classes from these


def _stub(name: str):
    import torch

    return type(name, (torch.nn.Module,), {"__module__": "fakefinder.pickled", "forward": None})


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        import _compat_pickle
        import importlib

        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names that protocol 2 writes
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if f"{module}.{name}" in _REAL or (module == "torch._utils" and name in _REBUILDERS):
            return getattr(importlib.import_module(module), name)
        if module.startswith(_CLASS_MODULES) or (module == "torch" and name.endswith("Storage")):
            found = getattr(importlib.import_module(module), name, None)
            if isinstance(found, type):
                return found
        return _stub(name)


class _RestrictedPickle:
    """What `torch.load(pickle_module=...)` needs of a pickle module."""

    Unpickler = _Unpickler
    __name__ = "fakefinder_restricted_pickle"

    @staticmethod
    def load(file, **kwargs):
        return _Unpickler(file, **kwargs).load()


def load_torch_file(path: str | Path) -> dict:
    """name -> tensor from a PyTorch file: a state dict (under `state_dict`, `model`, ... or bare, with any
    DataParallel `module.` prefix removed) or a whole pickled model."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
    state = _tensors(obj)
    if not state:
        raise ValueError("no tensors found")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _tensors(obj) -> dict:
    import torch

    if isinstance(obj, torch.nn.Module):
        return _module_tensors(obj, "")
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "params"):
            if key in obj and isinstance(obj[key], (dict, torch.nn.Module)):
                return _tensors(obj[key])
        return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return {}


def _module_tensors(module, prefix: str) -> dict:
    """Parameters and buffers of a (possibly stubbed) module tree, read from the attributes pickling kept."""
    out = {}
    attrs = vars(module)
    for store in ("_parameters", "_buffers"):
        for name, value in (attrs.get(store) or {}).items():
            if value is not None:
                out[prefix + name] = value.detach() if hasattr(value, "detach") else value
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            out.update(_module_tensors(child, f"{prefix}{name}."))
    return out
