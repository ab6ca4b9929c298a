"""The feature cache: a frozen base's output for each crop, computed once and memory-mapped afterwards.

Keyed by the backbone's key (name, weights digest, input size, normalisation) and the pooling, then per crop
by the digest of its PNG bytes, so a re-prepared or renamed crop with the same pixels is found again and a
changed one is not. Shards are written whole and renamed into place, then the index, so a killed extraction
loses only the shard in progress.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from . import _atomic
from .backbones import Backbone

Pool = Literal["flatten", "avg"]
STORE_DTYPE = np.float16  # halves the cache; heads train in float32
PREFETCH_BATCHES = 2  # batches read and preprocessed ahead of the base, each by its own thread


def crop_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def load_crops(paths: Sequence[str | Path]) -> list[np.ndarray]:
    import cv2

    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"{path}: cannot read face crop")
        images.append(image)
    return images


def pooled(maps, pool: Pool):
    """Feature maps (N, C, H, W) -> vectors: flattened (as the reference) or globally averaged."""
    import torch

    return torch.flatten(maps, 1) if pool == "flatten" else maps.mean(dim=(2, 3))


@dataclass
class FeatureTable:
    """Feature vectors for a list of crops, gathered from memory-mapped shards on demand."""

    shards: list[np.ndarray]
    shard_of: np.ndarray  # per crop
    row_of: np.ndarray  # per crop

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def dim(self) -> int:
        return int(self.shards[0].shape[1]) if self.shards else 0

    def take(self, index) -> np.ndarray:
        index = np.asarray(index)
        out = np.empty((len(index), self.dim), dtype=np.float32)
        shard_of, row_of = self.shard_of[index], self.row_of[index]
        for s in np.unique(shard_of):
            sel = shard_of == s
            rows = row_of[sel]
            order = np.argsort(rows)  # sequential reads from the memory map
            out[np.flatnonzero(sel)[order]] = self.shards[s][rows[order]]
        return out


class FeatureCache:
    """One folder per (backbone key, pooling, precision): `index.json` (digest -> shard, row) and `.npy` shards."""

    def __init__(self, root: str | Path, backbone: Backbone, pool: Pool, *, precision: str = "fp32") -> None:
        self.backbone, self.pool, self.precision = backbone, pool, precision
        key = json.dumps({**backbone.key, "pool": pool, "precision": precision,
                          "store": np.dtype(STORE_DTYPE).name}, sort_keys=True)
        self.dir = Path(root) / hashlib.sha256(key.encode()).hexdigest()[:20]
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "key.json").is_file():  # what the folder holds, for people; its name is the key's digest
            _atomic.write_text(self.dir / "key.json", key + "\n")
        self.index_path = self.dir / "index.json"

    def _index(self) -> dict[str, list]:
        try:
            return json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            return {}

    def features(self, crop_paths: Sequence[str | Path], *, batch_size: int = 64, device: str = "cpu",
                 progress: bool = False) -> FeatureTable:
        """Features of every crop, extracting only those the cache lacks."""
        digests = [crop_digest(p) for p in crop_paths]
        index = self._index()
        missing = sorted({d: p for d, p in zip(digests, crop_paths) if d not in index}.items())
        if missing:
            index.update(self._extract(missing, batch_size=batch_size, device=device, progress=progress))
            _atomic.write_text(self.index_path, json.dumps(index))
        names = sorted({index[d][0] for d in digests})
        shards = [np.load(self.dir / name, mmap_mode="r") for name in names]
        position = {name: i for i, name in enumerate(names)}
        return FeatureTable(shards, np.array([position[index[d][0]] for d in digests], dtype=np.int64),
                            np.array([index[d][1] for d in digests], dtype=np.int64))

    def _extract(self, items: list[tuple[str, str | Path]], *, batch_size: int, device: str,
                 progress: bool) -> dict[str, list]:
        import torch
        from tqdm import tqdm

        name = f"shard-{uuid.uuid4().hex[:12]}.npy"
        self.backbone.module.to(device)
        out = None
        with _atomic.atomic_path(self.dir / name) as tmp:
            with torch.inference_mode(), tqdm(total=len(items), unit="crop", desc="features", disable=not progress,
                                              file=sys.stderr) as bar:
                for start, x in self._prepared_batches([p for _, p in items], batch_size):
                    maps = self.backbone.features(x.to(device, non_blocking=True), precision=self.precision)
                    vectors = pooled(maps, self.pool).cpu().numpy()
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=STORE_DTYPE,
                                                        shape=(len(items), vectors.shape[1]))
                    out[start:start + len(vectors)] = vectors
                    bar.update(len(vectors))
            out.flush()
            del out
        self.backbone.module.to("cpu")
        return {digest: [name, row] for row, (digest, _) in enumerate(items)}

    def _prepared_batches(self, paths: list, batch_size: int):
        """(start, preprocessed batch) in order; threads read and resize the next batches while the base runs
        on the current one (OpenCV releases the GIL), so a GPU is not left waiting on PNG decoding."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor
        from itertools import islice

        def load(start: int):
            return start, self.backbone.preprocess(load_crops(paths[start:start + batch_size]))

        starts = iter(range(0, len(paths), batch_size))
        with ThreadPoolExecutor(max_workers=PREFETCH_BATCHES) as pool:
            pending = deque(pool.submit(load, s) for s in islice(starts, PREFETCH_BATCHES))
            while pending:
                result = pending.popleft().result()
                for s in starts:  # keep PREFETCH_BATCHES in flight
                    pending.append(pool.submit(load, s))
                    break
                yield result
