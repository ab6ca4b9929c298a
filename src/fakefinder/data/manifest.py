"""The prepared dataset's tables: their schemas, and streaming atomic writers for them.

`manifest.parquet` has one row per face crop and `videos.parquet` one row per input; these column names are
the contract that every later stage reads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import _files

STATE_DIR = ".fakefinder"  # in a prepared folder: prepare's records and lock, the feature cache


def features_dir(data_root: str | Path) -> Path:
    """Where a prepared folder keeps its feature cache unless the user names another."""
    return Path(data_root) / STATE_DIR / "features"


def crops_folder(video_id: str) -> str:
    """The folder (relative to OUT) of one input's crops: one level below faces/, never nested in another's,
    never outside OUT, unique (a digest of the id), readable (the id's safe characters), and short enough that
    a suffix never pushes it past a file system's 255-byte name limit."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("._")[:80] or "input"
    return f"faces/{slug}-{hashlib.sha1(video_id.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


MANIFEST_SCHEMA = pa.schema([
    ("dataset", pa.string()), ("video_id", pa.string()), ("source_path", pa.string()),
    ("label", pa.int8()), ("group", pa.string()), ("frame_index", pa.int32()), ("timestamp", pa.float64()),
    ("face_index", pa.int16()), ("x", pa.float32()), ("y", pa.float32()), ("w", pa.float32()),
    ("h", pa.float32()), ("score", pa.float32()), ("crop_path", pa.string()), ("method", pa.string()),
])

VIDEOS_SCHEMA = pa.schema([
    ("dataset", pa.string()), ("video_id", pa.string()), ("source_path", pa.string()),
    ("label", pa.int8()), ("group", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("frames_sampled", pa.int32()), ("faces_kept", pa.int32()), ("seconds", pa.float64()),
    ("method", pa.string()),
])

ROW_GROUP = 16384
MANIFEST = "manifest.parquet"
VIDEOS = "videos.parquet"
PREPARE_INFO = "prepare.json"
PSEUDO_FAKE_METHOD = "self-blended"  # the method column of the pseudo-fakes `train --fakes self-blended` makes


def write_table(path: str | Path, schema: pa.Schema, batches: Iterable[list[dict]]) -> int:
    """Write row batches (lists of dicts) as one Parquet file, atomically, holding one batch at a time."""
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with pq.ParquetWriter(tmp, schema) as writer:
            pending: list[dict] = []
            for rows in batches:
                pending.extend(rows)
                if len(pending) >= ROW_GROUP:
                    writer.write_table(pa.Table.from_pylist(pending, schema=schema))
                    count, pending = count + len(pending), []
            if pending or count == 0:
                writer.write_table(pa.Table.from_pylist(pending, schema=schema))
                count += len(pending)

    _files.write_with(path, write)
    return count


def read_column(path: str | Path, name: str) -> list:
    return pq.read_table(path, columns=[name]).column(name).to_pylist()
