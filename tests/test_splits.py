from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakefinder import PreparedDataset, UsageError
from fakefinder.data.dataset import NoFaceVideos, load_dataset
from fakefinder.data.splits import load_split, split_dataset


def collection(group_sizes: list[int], root: str = "/data/prepared") -> PreparedDataset:
    """Rows of crops: group g has one real video and sizes[g]-1 fakes of it, 3 crops each."""
    vids, groups, labels, crops = [], [], [], []
    for g, size in enumerate(group_sizes):
        for v in range(size):
            for f in range(3):
                vids.append(f"g{g}v{v}")
                groups.append(f"g{g}v0")
                labels.append(int(v > 0))
                crops.append(f"faces/g{g}v{v}/{f}.png")
    empty = np.asarray([], dtype=object)
    return PreparedDataset(Path(root), "d", np.array(vids, dtype=object), np.array(groups, dtype=object),
                           np.array(labels), np.array([""] * len(vids), dtype=object), np.array(crops, dtype=object),
                           NoFaceVideos(empty, empty, np.asarray([], dtype=np.int64)), "digest", None)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=6, max_size=40), seed=st.integers(0, 2**16),
       by=st.sampled_from(["source", "video"]))
def test_no_video_or_source_group_ever_sits_on_two_sides(sizes, seed, by):
    data = collection(sizes)
    try:
        split = split_dataset(data, by=by, val=0.2, test=0.2, seed=seed)
    except UsageError as exc:
        assert "is empty" in str(exc)
        return
    key = data.groups if by == "source" else data.video_ids
    for unit in np.unique(key):
        assert len(set(split.parts[key == unit])) == 1
    for vid in np.unique(data.video_ids):
        assert len(set(split.parts[data.video_ids == vid])) == 1
    assert not split.leaky and set(split.parts) <= {"train", "val", "test"}


def test_pair_keys_batch_each_fake_crop_beside_its_reals_crop_of_the_same_frame(tmp_path):
    """--pair-batches: a batch holds a frame's face of a real and of each fake made from it, side by side, read off the
    manifest: where the detector missed the real's face in one frame, its later frames still pair with theirs."""
    from fakefinder.data.manifest import MANIFEST, MANIFEST_SCHEMA, write_table
    from fakefinder.training.loader import EpochBatches

    sizes, missed = [1, 2, 4, 3], ("g2v0", 1)  # videos per source group (a real and its fakes); a face not found
    manifest = [dict(dataset="d", video_id=f"g{g}v{v}", source_path="", label=int(v > 0), group=f"g{g}v0",
                     frame_index=f, timestamp=float(f), face_index=0, x=0, y=0, w=10, h=10, score=1.0,
                     crop_path=f"faces/g{g}v{v}/{f}.png", method="" if v == 0 else "swap")
                for g, size in enumerate(sizes) for v in range(size) for f in range(3) if (f"g{g}v{v}", f) != missed]
    write_table(tmp_path / MANIFEST, MANIFEST_SCHEMA, [manifest])
    data = load_dataset(tmp_path)
    keys = data.pair_keys()
    assert len(np.unique(keys)) == 3 * 4  # a key per source group and frame
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        assert len(set(data.groups[rows])) == 1 and len(set(data.video_ids[rows])) == len(rows)
        assert len({Path(c).stem for c in data.crop_paths[rows]}) == 1  # the same frame of each video
        frame = int(Path(data.crop_paths[rows[0]]).stem)
        group = set(data.video_ids[data.groups == data.groups[rows[0]]])
        assert set(data.video_ids[rows]) == {v for v in group if (v, frame) != missed}  # every video with that face
    sampler = EpochBatches(np.arange(len(data)), 8, 0, shuffle=True, together=keys)
    order = keys[[row for batch in sampler for row, _ in batch]]
    assert len(order) == len(data) and np.count_nonzero(np.diff(order)) == len(np.unique(keys)) - 1  # runs


def test_split_is_stratified_fixed_by_seed_and_sized_by_fractions():
    data = collection([3] * 20 + [1] * 10)  # 20 groups with fakes, 10 real-only
    a = split_dataset(data, val=0.2, test=0.2, seed=1)
    b = split_dataset(data, val=0.2, test=0.2, seed=1)
    c = split_dataset(data, val=0.2, test=0.2, seed=2)
    assert (a.parts == b.parts).all() and (a.parts != c.parts).any() and a.digest() == b.digest()
    for part, n in (("test", 6), ("val", 6), ("train", 18)):
        units = {g for g, p in a.assignment.items() if p == part}
        assert len(units) == n
        assert sum(g in units for g in {f"g{i}v0" for i in range(20, 30)}) == n // 3  # real-only stratum too


def test_frame_split_is_leaky_and_puts_one_video_on_several_sides():
    data = collection([2] * 30)
    split = split_dataset(data, by="frame", seed=0)
    assert split.leaky
    assert any(len(set(split.parts[data.video_ids == v])) > 1 for v in np.unique(data.video_ids))


def test_saved_split_round_trip_and_unknown_units(tmp_path):
    data = collection([2] * 10)
    split = split_dataset(data, seed=0)
    split.save(tmp_path / "split.json")
    again = load_split(tmp_path / "split.json", data)
    assert (again.parts == split.parts).all() and again.by == "source"
    with pytest.raises(UsageError, match="does not assign 1 source units"):
        load_split(tmp_path / "split.json", collection([2] * 11))


def test_a_saved_frame_split_applies_to_the_dataset_wherever_it_moved(tmp_path):
    """Frame splits name crops by their path relative to the dataset, so a moved dataset still reads them; split
    files of fakefinder 0.1 (absolute crop paths) are mapped onto the relative paths too."""
    data = collection([2] * 10, root="/old/place")
    split = split_dataset(data, by="frame", seed=0)
    split.save(tmp_path / "split.json")
    assert all(not k.startswith("/") for k in json.loads((tmp_path / "split.json").read_text())["assignment"])
    moved = collection([2] * 10, root="/new/place")
    assert (load_split(tmp_path / "split.json", moved).parts == split.parts).all()
    old = {"by": "frame", "seed": 0, "assignment": {f"/old/place/{k}": v for k, v in split.assignment.items()}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert (load_split(tmp_path / "old.json", moved).parts == split.parts).all()


@pytest.mark.parametrize("val,test,message", [(0.5, 0.5, "sum to less than 1"), (0.2, 0.2, "is empty")])
def test_unusable_splits(val, test, message):
    with pytest.raises(UsageError, match=message):
        split_dataset(collection([2, 2]), val=val, test=test)
