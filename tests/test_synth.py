from __future__ import annotations

import numpy as np
import pytest

from fakefinder import SynthSettings, UsageError, create_face_detector, sample_frames, synth
from fakefinder.data.frames import scan
from fakefinder.data.synthetic import METHODS, SIZES


def test_dfdc_layout_labels_and_originals(collection, metadata):
    assert sorted(metadata) == sorted(f"{v.name}.mp4" for v in collection.videos)
    assert all((collection.out / name).is_file() for name in metadata)
    reals = {n for n, m in metadata.items() if m["label"] == "REAL"}
    fakes = {n: m for n, m in metadata.items() if m["label"] == "FAKE"}
    assert len(reals) == 5 and len(fakes) == 5
    assert all(m["original"] is None and m["split"] == "train" for n, m in metadata.items() if n in reals)
    assert all(m["original"] in reals for m in fakes.values())
    assert sorted(m["method"] for m in fakes.values()) == sorted(METHODS)


def test_sizes_frame_rates_and_both_keyframe_intervals(collection):
    intervals = set()
    for video in collection.videos:
        assert video.size in SIZES and video.fps in (25, 30)
        pts, keys, _ = scan(collection.out / f"{video.name}.mp4")
        assert len(pts) == 3 * video.fps
        intervals.add("short" if len(keys) > 1 and keys[1] - keys[0] == video.fps else "long")
        if video.keyint == 250:
            assert keys == [0]  # the whole 3 s clip is one GOP
    assert intervals == {"short", "long"}


def test_fake_differs_from_its_original_only_around_the_face(collection):
    detector = create_face_detector("blazeface")
    by_name = {v.name: v for v in collection.videos}
    for fake in (v for v in collection.videos if v.label == "FAKE"):
        real_frame = next(sample_frames(collection.out / f"{fake.original}.mp4", frames=1))
        fake_frame = next(sample_frames(collection.out / f"{fake.name}.mp4", frames=1))
        diff = np.abs(real_frame.image.astype(int) - fake_frame.image.astype(int)).max(axis=2)
        box = detector.detect(real_frame.image)[0]
        face = np.zeros(diff.shape, bool)
        pad = 0.6 * box.w  # compression smears the edit a little beyond the box
        y0, y1 = max(0, int(box.y - pad)), int(box.y + box.h + pad)
        x0, x1 = max(0, int(box.x - pad)), int(box.x + box.w + pad)
        face[y0:y1, x0:x1] = True
        assert diff[face].mean() > 2 * max(diff[~face].mean(), 0.5), fake.method
        assert np.percentile(diff[~face], 99) < 40, f"{fake.method} changed the background"
        assert by_name[fake.original].size == fake.size


def test_deterministic_from_seed(tmp_path):
    a = synth(tmp_path / "a", SynthSettings(videos=2, seed=7, seconds=1, sizes=((320, 240),)))
    b = synth(tmp_path / "b", SynthSettings(videos=2, seed=7, seconds=1, sizes=((320, 240),)))
    c = synth(tmp_path / "c", SynthSettings(videos=2, seed=8, seconds=1, sizes=((320, 240),)))
    assert a.videos == b.videos and a.videos != c.videos
    assert a.metadata_path.read_text() == b.metadata_path.read_text()
    for v in a.videos:  # the same pixels up to the encoder (x264 output bytes can vary between runs)
        fa, fb, fc = (next(sample_frames(r.out / f"{n}.mp4", frames=1)).image.astype(int)
                      for r, n in ((a, v.name), (b, v.name), (c, c.videos[0].name)))
        assert np.abs(fa - fb).mean() < 1.0 < np.abs(fa - fc).mean()


def test_mouth_only_collection(tmp_path):
    result = synth(tmp_path / "m", SynthSettings(videos=4, seed=1, seconds=1, methods=("mouth",),
                                                 sizes=((320, 240),)))
    assert {v.method for v in result.videos if v.label == "FAKE"} == {"mouth"}


@pytest.mark.parametrize("kwargs", [{"methods": ("morph",)}, {"videos": 1}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(UsageError):
        synth(tmp_path, SynthSettings(**kwargs))
