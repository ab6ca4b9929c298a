"""The feature cache: a frozen base's output for each crop, computed once and memory-mapped afterwards.

One folder per (backbone key, pooling, precision); inside, shards that are written whole and never changed:
`shard-ID.npy` (rows of features) and then `shard-ID.json` (the crops' digests, in row order, and the .npy
file's sha256). The index is the union of the committed shards' sidecars, read when needed, so any number of
processes or machines can extract into one folder at once without losing each other's work, a killed
extraction leaves at most an uncommitted shard, and a corrupted shard (zeroed or permuted rows, a truncated
file) fails its checksum and is extracted again instead of silently giving different numbers.

Crops are keyed by the digest of their bytes: a re-prepared or renamed crop with the same pixels is found again.

The base runs in PyTorch or, with `runtime="onnx"`, in ONNX Runtime from an fp32 export of it kept in the folder
(several times faster on a CPU). The two give the same fp32 features to about 1e-5 relative, well below the
float16 rounding (5e-4) of what is stored, so they share the fp32 folder rather than keying it by runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import _files
from ..data.crops import load_crops, read_crop  # noqa: F401 - read from here too
from ..errors import OptionError
from ..metrics import finite_scores
from ..progress import ProgressCallback, emit
from .backbones import Backbone, Recipe

if TYPE_CHECKING:
    import torch

STORE_DTYPE = np.float16  # halves the cache; heads train in float32
PREFETCH_BATCHES = 2  # batches read and preprocessed ahead of the base, each by its own thread
CHUNK = 2048  # crops per shard (and per task when an executor spreads the work)
RESIDENT_BYTES = 2 << 30  # features up to this size are copied to the device; larger ones stream from the memmap


def crop_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


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


_built: dict[Recipe, Backbone] = {}  # per process: a worker builds each base once
_verified: dict[str, tuple[int, int]] = {}  # per process: shard path -> (size, mtime) that passed its checksum


class FeatureCache:
    """The cache folder of one (backbone key, pooling, precision)."""

    def __init__(self, root: str | Path, backbone: Backbone, pool: str, *, precision: str = "fp32",
                 runtime: str = "torch") -> None:
        if runtime == "onnx" and precision != "fp32":
            raise OptionError("runtime", f"onnx computes the base at fp32, not {precision}")
        self.backbone, self.pool, self.precision, self.runtime = backbone, pool, precision, runtime
        key = {**backbone.key, "pool": pool, "precision": precision, "store": np.dtype(STORE_DTYPE).name}
        self.dir = Path(root) / _files.json_digest(key, length=20)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "key.json").is_file():  # what the folder holds, for people; its name is the key's digest
            _files.write_text(self.dir / "key.json", json.dumps(key, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ the index, from committed sidecars

    def index(self) -> dict[str, tuple[str, int]]:
        """digest -> (shard file, row) over every committed shard; the first shard by name wins a tie."""
        out: dict[str, tuple[str, int]] = {}
        for sidecar in sorted(self.dir.glob("shard-*.json")):
            try:
                meta = json.loads(sidecar.read_text())
                digests = meta["digests"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by a killed process (never: sidecars are atomic) or damaged: ignore
            shard = sidecar.with_suffix(".npy").name
            for row, digest in enumerate(digests):
                out.setdefault(digest, (shard, row))
        return out

    def _open_shard(self, shard: str, *, on_bad=None) -> np.ndarray | None:
        """The shard memory-mapped once its sha256 matches its sidecar; a bad shard is removed (returns None)."""
        path = self.dir / shard
        try:
            st = path.stat()
            if _verified.get(str(path)) != (st.st_size, st.st_mtime_ns):
                meta = json.loads(path.with_suffix(".json").read_text())
                if _files.sha256_file(path) != meta["sha256"]:
                    raise ValueError("checksum mismatch")
                _verified[str(path)] = (st.st_size, st.st_mtime_ns)
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if on_bad:
                on_bad(f"feature shard {path} is damaged ({exc}); extracting its crops again")
            path.with_suffix(".json").unlink(missing_ok=True)  # uncommit first, then drop the data
            path.unlink(missing_ok=True)
            return None

    def features(self, crop_paths: Sequence[str | Path], *, batch_size: int = 64, device: str = "cpu",
                 progress: ProgressCallback | None = None, executor=None) -> FeatureTable:
        """Features of every crop, extracting only those the cache lacks (or whose shard went bad).

        With an `executor` the missing crops are extracted where the executor runs them, in chunks, by bases
        built from the base's recipe; otherwise here, on `device`.
        """
        digests = [crop_digest(p) for p in crop_paths]
        for _ in range(3):  # a damaged shard found while opening costs one more round
            index = self.index()
            missing = sorted({d: str(p) for d, p in zip(digests, crop_paths) if d not in index}.items())
            if missing:
                self._extract(missing, batch_size=batch_size, device=device, progress=progress, executor=executor)
                index = self.index()
            names = sorted({index[d][0] for d in digests})
            bad = lambda text: emit(progress, "features", 0, message=text)  # noqa: E731
            shards = {name: self._open_shard(name, on_bad=bad) for name in names}
            if all(s is not None for s in shards.values()):
                position = {name: i for i, name in enumerate(names)}
                return FeatureTable([shards[n] for n in names],
                                    np.array([position[index[d][0]] for d in digests], dtype=np.int64),
                                    np.array([index[d][1] for d in digests], dtype=np.int64))
        raise OSError(f"{self.dir}: feature shards keep failing their checksums (disk or memory trouble?)")

    def _extract(self, items: list[tuple[str, str]], *, batch_size: int, device: str,
                 progress: ProgressCallback | None, executor) -> None:
        chunks = [items[s:s + CHUNK] for s in range(0, len(items), CHUNK)]
        done = 0
        emit(progress, "features", 0, len(items), "crop")
        if executor is not None and self.backbone.recipe is not None:
            job = _ChunkJob(str(self.dir), self.backbone.recipe, self.pool, self.precision, batch_size, device,
                            self.runtime)
            for count in executor.map_unordered(job, chunks):
                done += count
                emit(progress, "features", done, len(items), "crop")
            return
        for chunk in chunks:
            def tick(n: int) -> None:
                emit(progress, "features", done + n, len(items), "crop")

            done += write_shard(self.dir, Extractor(self.backbone, self.pool, self.precision, self.runtime), chunk,
                                batch_size=batch_size, device=device, on_batch=tick)


@dataclass(frozen=True)
class _ChunkJob:
    """One chunk of crops -> one committed shard, in whatever process runs it (picklable)."""

    folder: str
    recipe: Recipe
    pool: str
    precision: str
    batch_size: int
    device: str
    runtime: str = "torch"

    def __call__(self, chunk: list[tuple[str, str]]) -> int:
        if self.recipe not in _built:
            _built[self.recipe] = self.recipe.build()
        return write_shard(Path(self.folder), Extractor(_built[self.recipe], self.pool, self.precision, self.runtime),
                           chunk, batch_size=self.batch_size, device=self.device)


@dataclass(frozen=True)
class Extractor:
    """What turns crops into the vectors a shard holds: a base, its pooling, the precision it computes in, and
    the runtime that runs it (torch, or onnx: an fp32 export of base and pooling)."""

    backbone: Backbone
    pool: str
    precision: str
    runtime: str = "torch"


def write_shard(folder: Path, extractor: Extractor, items: list[tuple[str, str]], *, batch_size: int = 64,
                device: str = "cpu", on_batch=None) -> int:
    """Extract `items` ((digest, crop path), ...) and commit them as one shard: data, then its sidecar."""
    import torch

    from .head import pooled

    backbone, pool, precision = extractor.backbone, extractor.pool, extractor.precision
    name = f"shard-{uuid.uuid4().hex[:16]}"
    if extractor.runtime == "onnx":
        base = onnx_base(folder, backbone, pool)

        def compute(x):
            from .onnxfile import base_features

            return base_features(base, x.numpy())
    else:
        backbone.module.to(device)

        def compute(x):
            return pooled(backbone.features(x.to(device, non_blocking=True), precision=precision), pool).cpu().numpy()
    out, written = None, 0
    try:
        with _files.atomic_path(folder / f"{name}.npy") as tmp:
            with torch.inference_mode():
                for start, x in _prepared_batches(backbone, [p for _, p in items], batch_size):
                    vectors = compute(x)
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=STORE_DTYPE,
                                                        shape=(len(items), vectors.shape[1]))
                    out[start:start + len(vectors)] = vectors
                    written = start + len(vectors)
                    if on_batch:
                        on_batch(written)
            out.flush()
            del out
        sha = _files.sha256_file(folder / f"{name}.npy")
        _files.write_text(folder / f"{name}.json", json.dumps({"digests": [d for d, _ in items], "sha256": sha,
                                                                 "pid": os.getpid()}))
    finally:
        backbone.module.to("cpu")
    return written


_sessions: dict[str, object] = {}  # per process: base graph path -> ONNX Runtime session


def onnx_base(folder: Path, backbone: Backbone, pool: str):
    """An ONNX Runtime session of the base and its pooling, exported once into the cache folder (named by the
    base's weights digest), checked against its sidecar's sha256 as shards are, and exported again when damaged."""
    from .onnxfile import base_graph, session

    path = folder / f"base-{backbone.weights_digest[:16]}-{pool}.onnx"
    if str(path) not in _sessions:
        sidecar = path.with_suffix(".json")
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != json.loads(sidecar.read_text())["sha256"]:
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError, TypeError):
            data = base_graph(backbone, pool).SerializeToString()
            _files.write_bytes(path, data)
            _files.write_text(sidecar, json.dumps({"sha256": hashlib.sha256(data).hexdigest()}))
        _sessions[str(path)] = session(data)
    return _sessions[str(path)]


def _prepared_batches(backbone: Backbone, paths: list, batch_size: int):
    """(start, preprocessed batch) in order; threads read and resize the next batches while the base runs on
    the current one (OpenCV releases the GIL), so a GPU is not left waiting on PNG decoding."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    def load(start: int):
        return start, backbone.preprocess(load_crops(paths[start:start + batch_size]))

    starts = iter(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=PREFETCH_BATCHES) as pool:
        pending = deque(pool.submit(load, s) for s in islice(starts, PREFETCH_BATCHES))
        while pending:
            result = pending.popleft().result()
            for s in starts:  # keep PREFETCH_BATCHES in flight
                pending.append(pool.submit(load, s))
                break
            yield result


class FeatureRows:
    """Feature rows of one part: resident on the device when small, gathered from the memory map when not."""

    def __init__(self, table, rows: np.ndarray, device: str, budget: int = RESIDENT_BYTES) -> None:
        import torch

        self.table, self.rows, self.device = table, rows, device
        self.resident = len(rows) * table.dim * 4 <= budget
        self.data = torch.from_numpy(table.take(rows)).to(device) if self.resident else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        import torch

        if self.resident:
            return self.data[torch.as_tensor(positions, device=self.device)]
        return torch.from_numpy(self.table.take(self.rows[positions])).to(self.device)

    def chunks(self, size: int = 8192):
        for s in range(0, len(self.rows), size):
            yield self[np.arange(s, min(s + size, len(self.rows)))]


def head_logits(head, rows: FeatureRows) -> np.ndarray:
    """Logits of cached feature rows, chunk by chunk: how a frozen-base model scores data."""
    import torch

    head.eval()
    with torch.no_grad():
        return finite_scores(np.concatenate([head(x).double().cpu().numpy() for x in rows.chunks()] or [np.zeros(0)]))
