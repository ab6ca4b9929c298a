"""Find the labelled inputs of a collection: DFDC `metadata.json`, a labels CSV, real/ and fake/ folders, or
FaceForensics++'s layout.

Every input becomes a `VideoItem`, including unusable ones (unknown label, missing file, a name that leaves
SRC, one listed twice with two labels): those carry a `problem` and end up as error rows instead of stopping
the batch. Names are read through symbolic links (a folder of links into a larger tree is the usual way to
build a collection); nothing derived from a name is ever written outside OUT (see `manifest.crops_folder`).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..config import CollectionLayout
from ..errors import OptionError, UsageError, one_line
from .frames import VIDEO_SUFFIXES, is_media

LABELS = {"real": 0, "fake": 1, "0": 0, "1": 1}  # 1 = FAKE everywhere in fakefinder


@dataclass(frozen=True)
class VideoItem:
    """One input of a collection; `group` keeps a fake with its original when splitting."""

    dataset: str
    video_id: str
    source_path: str  # relative to SRC, POSIX separators
    label: int | None
    group: str
    path: Path | None  # absolute path, None when unusable
    problem: str = ""  # one line; empty when the item can be processed
    method: str = ""  # manipulation method when the collection says (e.g. DFDC-style `method`)


@dataclass(frozen=True)
class Collection:
    """The inputs found at `src`, with the layout they were read from."""

    src: Path
    layout: str
    dataset: str
    items: tuple[VideoItem, ...]


@dataclass(frozen=True)
class CollectionOptions:
    """How a collection is read: its layout (auto: told by what it holds), a labels CSV
    (filename,label[,original][,method]), and the dataset name recorded on every row (default: its folder's)."""

    layout: CollectionLayout = "auto"
    labels: str | Path | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class _Entry:
    name: str  # as written in the labels, relative to `base`
    base: Path  # folder the name is relative to
    label: str
    original: str | None = None
    method: str = ""
    where: str = ""  # the labels file and row, for messages


def parse_label(value: object) -> int | None:
    """REAL/FAKE in any case, or 0/1 -> 0/1; anything else -> None."""
    return LABELS.get(str(value).strip().lower())


def detect_layout(src: Path, labels: Path | None) -> CollectionLayout:
    if labels is not None:
        return "csv"
    if (src / "original_sequences").is_dir() or (src / "manipulated_sequences").is_dir():
        return "ffpp"
    if next(src.rglob("metadata.json"), None) is not None:
        return "dfdc"
    if any((src / name).is_dir() for name in ("real", "fake", "REAL", "FAKE")):
        return "folders"
    raise UsageError(f"no labels found in {src}: expected metadata.json files (DFDC), original_sequences/ and "
                     "manipulated_sequences/ (FaceForensics++), real/ and fake/ folders, or --labels FILE.csv")


def discover(src: str | Path, *, layout: CollectionLayout = "auto", labels: str | Path | None = None,
             dataset: str | None = None) -> Collection:
    """All inputs of the collection at `src`, sorted by video_id; `dataset` defaults to the folder name.

    Raises UsageError when `src` is not a folder, the labels file is unusable, or no labels are found.
    """
    src = Path(src)
    if not src.is_dir():
        raise UsageError(f"{src}: not a folder")
    labels_path = Path(labels) if labels is not None else None
    if layout == "auto":
        layout = detect_layout(src, labels_path)
    if layout == "csv":
        if labels_path is None:
            raise OptionError("labels", "must name a CSV file of labels for the csv layout")
        entries = _csv_entries(src, labels_path)
    elif layout == "dfdc":
        entries = _dfdc_entries(src)
    elif layout == "folders":
        entries = _folder_entries(src)
    elif layout == "ffpp":
        entries = _ffpp_entries(src)
    else:
        raise UsageError(f"unknown layout {layout!r}")
    if not entries:
        raise UsageError(f"no labelled inputs found in {src} ({layout} layout)")
    dataset = dataset or _utf8(src.resolve().name)[0]
    return Collection(src, layout, dataset, tuple(_items(src, entries, dataset)))


def _dfdc_entries(src: Path) -> list[_Entry]:
    entries = []
    for meta in sorted(src.rglob("metadata.json")):
        try:
            data = json.loads(meta.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise UsageError(f"{meta}: unreadable metadata ({one_line(exc, typed=False)})") from None
        for name, info in sorted(data.items()):
            info = info if isinstance(info, dict) else {}
            original = info.get("original")
            entries.append(_Entry(name, meta.parent, str(info.get("label", "")),
                                  str(original) if original not in (None, "") else None,
                                  str(info.get("method") or ""), f"{meta} entry {name!r}"))
    return entries


def _csv_entries(src: Path, labels: Path) -> list[_Entry]:
    try:
        with open(labels, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {(name or "").strip().lower() for name in reader.fieldnames or []}
            if not {"filename", "label"} <= fields:
                found = ", ".join(sorted(fields)) or "none"
                raise UsageError(f"{labels}: needs columns filename,label (found {found})")
            rows = [{(k or "").strip().lower(): (v if isinstance(v, str) else "").strip() for k, v in row.items()}
                    for row in reader]
    except OSError as exc:
        raise UsageError(f"{labels}: cannot read labels ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{labels}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except csv.Error as exc:
        raise UsageError(f"{labels}: not a CSV file ({exc})") from None
    return [_Entry(r["filename"], src, r["label"], r.get("original") or None, r.get("method", ""),
                   f"{labels} row {i}") for i, r in enumerate(rows, 2)]


def _walk(folder: Path) -> list[Path]:
    """Every file below `folder`, following symbolic links to folders (once each: no loops), sorted."""
    files, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        files += [Path(root) / n for n in names]
    return sorted(files)


def _folder_entries(src: Path) -> list[_Entry]:
    entries = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and p.name.lower() in ("real", "fake")):
        for path in _walk(folder):
            if is_media(path):
                entries.append(_Entry(path.relative_to(src).as_posix(), src, folder.name, where=str(path)))
    return entries


def _ffpp_entries(src: Path) -> list[_Entry]:
    """FaceForensics++: original_sequences/<source>/<quality>/videos/000.mp4 are REAL;
    manipulated_sequences/<method>/<quality>/videos/000_003.mp4 are FAKE, made from original 000 by <method>."""
    videos = [p for p in _walk(src) if p.suffix.lower() in VIDEO_SUFFIXES]
    originals: dict[str, str] = {}
    entries = []
    for path in videos:
        parts = path.relative_to(src).parts
        if parts[0] == "original_sequences":
            originals.setdefault(path.stem, path.relative_to(src).as_posix())
            entries.append(_Entry(path.relative_to(src).as_posix(), src, "REAL"))
    for path in videos:
        parts = path.relative_to(src).parts
        if parts[0] == "manipulated_sequences" and len(parts) > 2:
            target = path.stem.split("_")[0]
            # Fakes of one target stay together even when its original was not downloaded.
            original = originals.get(target, f"original_sequences/youtube/{parts[2]}/videos/{target}.mp4")
            entries.append(_Entry(path.relative_to(src).as_posix(), src, "FAKE", original, parts[1]))
    return entries


def _resolve(src: Path, base: Path, name: str) -> tuple[str, Path | None, str]:
    """(source_path relative to SRC, the file or None, problem). The name must stay inside SRC as written;
    symbolic links in it are followed wherever they point, since we only read through them."""
    if "\0" in name:
        return name.replace("\0", "\\0"), None, "name contains a NUL byte"
    if not name.strip():
        return name, None, "empty file name"
    if PurePosixPath(name).is_absolute() or Path(name).is_absolute():
        return name, None, "absolute path not allowed (names are relative to SRC)"
    rel = os.path.normpath(os.path.relpath(base / name, src)).replace(os.sep, "/")
    rel, valid = _utf8(rel)
    if not valid:  # every table and record holds text: this name would break them all
        return rel, None, "file name is not valid UTF-8 (rename the file)"
    if rel == "." or rel == ".." or rel.startswith("../"):
        return rel, None, "not a file inside SRC (names may not leave it with ..)"
    path = src / rel
    try:
        if not path.is_file():
            return rel, None, "file not found" if not path.is_symlink() else "broken symbolic link"
    except OSError as exc:
        return rel, None, f"cannot read ({exc.strerror})"
    return rel, path, ""


def _utf8(name: str) -> tuple[str, bool]:
    """(`name` as text that encodes, whether it was already): bytes a file system name holds that are not
    UTF-8 (Python keeps them as surrogates) are written as escapes, e.g. bad\\xff.mp4."""
    try:
        name.encode("utf-8")
        return name, True
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace"), False


def _stem(path: str) -> str:
    """The path without its extension (a name without one stays as it is)."""
    pure = PurePosixPath(path)
    return str(pure.with_suffix("")) if pure.name not in ("", ".", "..") and pure.suffix else path


def _video_ids(paths: list[str]) -> dict[str, str]:
    """video_id = path without extension; the full path where two inputs would share one."""
    stems: dict[str, list[str]] = {}
    for p in paths:
        stems.setdefault(_stem(p), []).append(p)
    return {p: (stem if len(ps) == 1 else p) for stem, ps in stems.items() for p in ps}


def _items(src: Path, entries: list[_Entry], dataset: str) -> list[VideoItem]:
    resolved, position = [], {}
    for e in entries:
        rel, path, problem = _resolve(src, e.base, e.name)
        if rel in position:  # listed twice: harmless with the same label, unusable with two
            first, first_rel, first_path, first_problem = resolved[position[rel]]
            if parse_label(first.label) != parse_label(e.label) and not first_problem:
                resolved[position[rel]] = (first, first_rel, None, f"listed twice with different labels "
                                           f"({first.label!r} in {first.where}, {e.label!r} in {e.where})")
            continue
        position[rel] = len(resolved)
        resolved.append((e, rel, path, problem))
    ids = _video_ids([rel for _, rel, _, _ in resolved])
    items = []
    for e, rel, path, problem in resolved:
        label = parse_label(e.label)
        if label is None and not problem:
            problem = f"unknown label {e.label!r} (use REAL/FAKE, real/fake or 0/1)"
        group = ids[rel]
        if e.original and label == 1 and "\0" not in e.original:
            orig = os.path.normpath(os.path.relpath(e.base / e.original, src)).replace(os.sep, "/")
            group = ids.get(orig, _stem(orig))
        items.append(VideoItem(dataset, ids[rel], rel, label, group, path, problem, e.method))
    return sorted(items, key=lambda item: item.video_id)
