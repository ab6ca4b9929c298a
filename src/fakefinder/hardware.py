"""The device and the compute precision, each resolved once: `auto` device is the GPU when there is one;
`auto` precision is bf16 where the hardware runs it natively, else fp32. bf16 keeps fp32's range, so it needs
no loss scaling; fp16 (GPUs without bf16) does, with a GradScaler.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OptionError


@dataclass(frozen=True)
class Compute:
    """Where and how a job computes, apart from what it computes (its settings): one object that `train`,
    `fit_detector`, `tune`, `study` and `prepare` take instead of a handful of loose arguments.

    `device`: auto, cpu, cuda or cuda:N. `runtime`: what extracts a frozen base's features (torch, or onnx: ONNX
    Runtime at fp32). `processes`: local worker processes (training's input pipeline, `prepare`'s inputs); None:
    the default for the job. `executor` spreads per-video and per-shard work (`scale.executors`), `launcher`
    starts tune's worker loops (`scale.executors.Launcher`); None: local processes. `cache_dir`: the feature
    cache (default DATA/.fakefinder/features).
    """

    device: str = "auto"
    runtime: str = "torch"
    processes: int | None = None
    executor: Any = None
    launcher: Any = None
    cache_dir: str | Path | None = None


def passive_openmp() -> None:
    """Idle OpenMP threads sleep at once instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user chose a
    policy: while PyTorch's threads train, the loader's processes blend and augment on the same cores, and threads
    spinning between operations take the time those need (bench/trainspeed.py, eight runs each on 2 cores: the loop
    at 0.86x the bare step spinning, 0.91x passive). OpenMP reads it once, when PyTorch loads: call it before `import
    torch`, as the fakefinder command does."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def single_threaded_opencv(*_worker_id) -> None:
    """In a worker process: OpenCV on one thread, since there is one process per core already (a DataLoader
    worker passes its id, which does not matter)."""
    import cv2

    cv2.setNumThreads(1)


def resolve_device(device: str = "auto", *, local_rank: int = 0) -> str:
    """cpu, cuda or cuda:N. Raises OptionError when CUDA is asked for and missing, or the name is unknown."""
    import torch

    if device == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OptionError("device", f"{device}: CUDA is not available here")
        return f"cuda:{local_rank}" if device == "cuda" else device
    if device != "cpu" and not device.startswith("mps"):
        raise OptionError("device", f"must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def _cpu_has_bf16() -> bool:
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: str) -> str:
    """fp32, bf16 or fp16 for `device`. Raises OptionError for fp16 without a GPU."""
    import torch

    cuda = device.startswith("cuda")
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if _cpu_has_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise OptionError("precision", "fp16 needs a CUDA device (use bf16 or fp32 on a CPU)")
    return precision


def autocast(device_type: str, precision: str):
    """Autocast for the base's forward pass at `precision` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
