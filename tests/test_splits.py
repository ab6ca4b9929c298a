from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakefinder import UsageError
from fakefinder.splits import load_split, make_split


def collection(group_sizes: list[int]):
    """Rows of crops: group g has one real video and sizes[g]-1 fakes of it, 3 crops each."""
    vids, groups, labels, crops = [], [], [], []
    for g, size in enumerate(group_sizes):
        for v in range(size):
            for f in range(3):
                vids.append(f"g{g}v{v}")
                groups.append(f"g{g}v0")
                labels.append(int(v > 0))
                crops.append(f"g{g}v{v}/{f}.png")
    return np.array(vids), np.array(groups), np.array(labels), np.array(crops)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=6, max_size=40), seed=st.integers(0, 2**16),
       by=st.sampled_from(["source", "video"]))
def test_no_video_or_source_group_ever_sits_on_two_sides(sizes, seed, by):
    vids, groups, labels, crops = collection(sizes)
    try:
        split = make_split(vids, groups, labels, crops, by=by, val=0.2, test=0.2, seed=seed)
    except UsageError as exc:
        assert "is empty" in str(exc)
        return
    key = groups if by == "source" else vids
    for unit in np.unique(key):
        assert len(set(split.parts[key == unit])) == 1
    for vid in np.unique(vids):
        assert len(set(split.parts[vids == vid])) == 1
    assert not split.leaky and set(split.parts) <= {"train", "val", "test"}


def test_split_is_stratified_fixed_by_seed_and_sized_by_fractions():
    vids, groups, labels, crops = collection([3] * 20 + [1] * 10)  # 20 groups with fakes, 10 real-only
    a = make_split(vids, groups, labels, crops, val=0.2, test=0.2, seed=1)
    b = make_split(vids, groups, labels, crops, val=0.2, test=0.2, seed=1)
    c = make_split(vids, groups, labels, crops, val=0.2, test=0.2, seed=2)
    assert (a.parts == b.parts).all() and (a.parts != c.parts).any() and a.digest() == b.digest()
    for part, n in (("test", 6), ("val", 6), ("train", 18)):
        units = {g for g, p in a.assignment.items() if p == part}
        assert len(units) == n
        assert sum(g in units for g in {f"g{i}v0" for i in range(20, 30)}) == n // 3  # real-only stratum too


def test_frame_split_is_leaky_and_puts_one_video_on_several_sides():
    vids, groups, labels, crops = collection([2] * 30)
    split = make_split(vids, groups, labels, crops, by="frame", seed=0)
    assert split.leaky
    assert any(len(set(split.parts[vids == v])) > 1 for v in np.unique(vids))


def test_saved_split_round_trip_and_unknown_units(tmp_path):
    vids, groups, labels, crops = collection([2] * 10)
    split = make_split(vids, groups, labels, crops, seed=0)
    split.save(tmp_path / "split.json")
    again = load_split(tmp_path / "split.json", vids, groups, crops)
    assert (again.parts == split.parts).all() and again.by == "source"
    more = collection([2] * 11)
    with pytest.raises(UsageError, match="does not assign 1 source units"):
        load_split(tmp_path / "split.json", more[0], more[1], more[3])


@pytest.mark.parametrize("val,test,message", [(0.5, 0.5, "sum to less than 1"), (0.2, 0.2, "is empty")])
def test_unusable_splits(val, test, message):
    vids, groups, labels, crops = collection([2, 2])
    with pytest.raises(UsageError, match=message):
        make_split(vids, groups, labels, crops, val=val, test=test)
