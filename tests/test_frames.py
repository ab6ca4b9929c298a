from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from media import astronaut, coffee, huge_png, jpeg_video, write_video

from fakefinder import InputError, sample_frames
from fakefinder.data.frames import make_plan, target_indices, working_size


def _all_frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_targets_one_per_second_and_evenly_spaced():
    times = np.arange(100) / 25.0  # 4 s at 25 fps
    assert target_indices(times, fps=1.0, frames=None) == [0, 25, 50, 75]
    assert target_indices(times, fps=2.0, frames=None) == [0, 12, 25, 37, 50, 62, 75, 87]  # nearest; ties go early
    assert target_indices(times, fps=None, frames=5) == [0, 25, 50, 74, 99]
    assert target_indices(times, fps=None, frames=500) == list(range(100))
    assert target_indices(np.array([]), fps=1.0, frames=None) == []


def test_working_size_only_shrinks():
    assert working_size(1920, 1080, 1000) == (1000, 562, 1000 / 1920)
    assert working_size(640, 360, 1000) == (640, 360, 1.0)
    assert working_size(640, 360, None) == (640, 360, 1.0)


def test_seeks_on_short_gops_and_decodes_through_long_ones(collection):
    for video in collection.videos:
        plan = make_plan(collection.out / f"{video.name}.mp4", fps=1.0)
        assert plan.targets == (0, video.fps, 2 * video.fps)
        if video.keyint == video.fps:
            assert plan.seeks == 2 and plan.decoded == 3
        else:
            assert plan.seeks == 0 and plan.decoded == 2 * video.fps + 1


@pytest.mark.parametrize("keyint", ["short", "long"])
def test_sampled_frames_are_the_frames_at_those_indices(collection, keyint):
    video = next(v for v in collection.videos if (v.keyint == v.fps) == (keyint == "short"))
    path = collection.out / f"{video.name}.mp4"
    everything = _all_frames(path)
    sampled = list(sample_frames(path, fps=1.0, max_side=None, tolerance=0.0))
    assert [f.index for f in sampled] == [0, video.fps, 2 * video.fps]
    assert [f.timestamp for f in sampled] == pytest.approx([0.0, 1.0, 2.0])
    for f in sampled:
        assert np.array_equal(f.image, everything[f.index])
        assert f.scale == 1.0


def _picture_types(path) -> list[str]:
    with av.open(str(path)) as c:
        return [av.video.frame.PictureType(f.pict_type).name for f in c.decode(video=0)]


def test_with_a_tolerance_samples_skip_unreferenced_frames_and_are_decoded_exactly(tmp_path):
    path = write_video(tmp_path / "b.mp4", astronaut(), seconds=3, fps=25)  # x264 defaults: B-frame pyramid
    assert "B" in _picture_types(path)
    everything = _all_frames(path)
    sampled = list(sample_frames(path, fps=1.0, max_side=None, tolerance=0.1))
    assert [f.timestamp for f in sampled] == pytest.approx([0.0, 1.0, 2.0], abs=0.1)
    assert [f.index for f in sampled] != [0, 25, 50]  # frame 25 is an unreferenced B-frame: never decoded
    for f in sampled:
        assert f.timestamp == pytest.approx(f.index / 25)  # each frame says where it really is
        assert np.array_equal(f.image, everything[f.index])


def test_a_sample_with_no_reference_frame_close_enough_is_decoded_exactly(tmp_path):
    path = write_video(tmp_path / "b.mp4", astronaut(), seconds=3, fps=25)
    everything = _all_frames(path)
    sampled = list(sample_frames(path, fps=1.0, max_side=None, tolerance=0.01))  # under one frame's 0.04 s
    assert [f.index for f in sampled] == [0, 25, 50]
    assert all(np.array_equal(f.image, everything[f.index]) for f in sampled)


def test_without_b_frames_a_tolerance_samples_as_exact_decoding_does(tmp_path):
    path = write_video(tmp_path / "p.mp4", astronaut(), seconds=3, fps=25, bframes=0)
    assert "B" not in _picture_types(path)
    exact = list(sample_frames(path, fps=1.0, max_side=None, tolerance=0.0))
    near = list(sample_frames(path, fps=1.0, max_side=None, tolerance=0.1))
    assert [f.index for f in near] == [f.index for f in exact] == [0, 25, 50]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(exact, near, strict=True))


def test_samples_closer_than_two_tolerances_are_decoded_exactly(tmp_path):
    path = write_video(tmp_path / "b.mp4", astronaut(), seconds=2, fps=25)
    dense = list(sample_frames(path, fps=10.0, max_side=None, tolerance=0.1))  # 0.1 s apart: two could share one
    assert [f.index for f in dense] == [f.index for f in sample_frames(path, fps=10.0, max_side=None, tolerance=0.0)]


def test_frames_are_shrunk_to_max_side(collection):
    video = max(collection.videos, key=lambda v: v.size)
    frame = next(sample_frames(collection.out / f"{video.name}.mp4", frames=1, max_side=320))
    assert max(frame.image.shape[:2]) == 320
    assert frame.scale == pytest.approx(320 / max(video.size))


def test_image_is_a_one_frame_video(tmp_path):
    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), astronaut())
    frames = list(sample_frames(path, fps=1.0, max_side=256))
    assert len(frames) == 1 and frames[0].index == 0 and frames[0].image.shape == (256, 256, 3)


def test_frames_mode_on_a_short_video(tmp_path):
    path = write_video(tmp_path / "v.mp4", astronaut(), seconds=1, fps=10)
    assert [f.index for f in sample_frames(path, frames=3, tolerance=0.0)] == [0, 4, 9]


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 50])
def test_unreadable_files_raise_input_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(InputError, match="cannot open as video"):
        list(sample_frames(path))


def test_unreadable_image_raises_input_error(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match="cannot read as image"):
        list(sample_frames(path))


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_phone_videos_come_out_upright(tmp_path, rotation):
    upright = [f.image for f in sample_frames(write_video(tmp_path / "upright.mp4", astronaut(), seconds=1))]
    path = write_video(tmp_path / "phone.mp4", astronaut(), seconds=1, rotation=rotation)
    with av.open(str(path)) as container:  # the file really holds sideways pixels and the rotation to undo
        stored = next(container.decode(video=0))
        assert stored.rotation % 360 == rotation % 360
        assert (stored.width, stored.height) == ((240, 320) if rotation % 180 else (320, 240))
    frames = [f.image for f in sample_frames(path)]
    assert len(frames) == len(upright) == 1 and frames[0].shape == upright[0].shape == (240, 320, 3)
    assert np.abs(frames[0].astype(int) - upright[0]).mean() < 4  # x264's loss, not a turned picture
    assert np.abs(np.rot90(frames[0], 2).astype(int) - upright[0]).mean() > 20


def test_inputs_over_the_limits_are_refused_before_anything_is_decoded(tmp_path):
    """A 2 KB PNG that claims 30000x30000 pixels (2.7 GB decoded) and an hour of 32 px video (3,600 frames)."""
    import resource

    from fakefinder.config import InputLimits

    bomb = huge_png(tmp_path / "bomb.png", 30000, 30000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match=r"^900 megapixels, over the limit of 100$"):
        list(sample_frames(bomb))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing was decoded
    hour = write_video(tmp_path / "hour.mp4", coffee(), seconds=3600, fps=1, size=(32, 32))
    with pytest.raises(InputError, match=r"^the video lasts 60.0 minutes, over the limit of 30$"):
        list(sample_frames(hour, limits=InputLimits(max_minutes=30)))
    assert len(list(sample_frames(hour, fps=1 / 600))) == 6  # the CLI's own limit (4 hours) lets it through
    clip = write_video(tmp_path / "clip.mp4", coffee(), seconds=1, size=(320, 240))
    with pytest.raises(InputError, match=r"^320x240: 0.0768 megapixels, over the limit of 0.05$"):
        list(sample_frames(clip, limits=InputLimits(max_megapixels=0.05)))


def test_a_video_stamped_to_last_years_is_refused_by_its_length_before_sampling_holds_anything(tmp_path):
    """Two frames, the second stamped 10^8 s: refused naming minutes (by the container's duration, and by the
    timestamps as they arrive), and planning it without a limit holds one entry per frame, not per second."""
    import os
    import subprocess
    import sys

    video = jpeg_video(tmp_path / "stamped.mkv", [(0, (64, 48)), (1e8, (64, 48))])
    code = """if True:
        import resource, sys
        from fakefinder import InputError, sample_frames
        from fakefinder.config import InputLimits
        from fakefinder.data import frames
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            list(sample_frames(sys.argv[1], limits=InputLimits(max_minutes=1)))
        except InputError as exc:
            print(exc)
        print(len(frames.make_plan(sys.argv[1]).steps))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
    proc = subprocess.run([sys.executable, "-c", code, str(video)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    refusal, planned, grown = proc.stdout.splitlines()
    assert refusal == "the video lasts 1666666.7 minutes, over the limit of 1", proc.stderr
    assert planned == "2" and int(grown) < 300_000, (planned, grown)  # KiB


def test_a_stream_that_grows_its_frames_mid_way_is_refused_by_megapixels(tmp_path):
    """The header says 64x64; the third frame is 4000x3000: each frame's size is checked before it is converted."""
    from fakefinder.config import InputLimits

    video = jpeg_video(tmp_path / "grows.mkv", [(0, (64, 64)), (1, (64, 64)), (2, (4000, 3000))])
    with pytest.raises(InputError, match=r"^4000x3000: 12 megapixels, over the limit of 1$"):
        list(sample_frames(video, limits=InputLimits(max_megapixels=1)))
    assert len(list(sample_frames(video))) == 3  # within the default limit: every frame, each at its own size


def test_an_hdr_image_named_png_is_held_to_the_megapixel_limit(tmp_path):
    """OpenCV decodes Radiance HDR by its content whatever the name; Pillow cannot read its size first: refused,
    not decoded. A real PNG over the limit is refused by its header as before."""
    from fakefinder.config import InputLimits

    hdr = tmp_path / "photo.png"
    ok, data = cv2.imencode(".hdr", np.ones((2000, 1000, 3), np.float32))
    hdr.write_bytes(data.tobytes())
    assert cv2.imdecode(np.frombuffer(hdr.read_bytes(), np.uint8), cv2.IMREAD_COLOR).shape == (2000, 1000, 3)
    with pytest.raises(InputError, match="^cannot read as image"):
        list(sample_frames(hdr, limits=InputLimits(max_megapixels=1)))
    png = tmp_path / "big.png"
    png.write_bytes(cv2.imencode(".png", np.zeros((2000, 1000, 3), np.uint8))[1].tobytes())
    with pytest.raises(InputError, match="^1000x2000: 2 megapixels, over the limit of 1$"):
        list(sample_frames(png, limits=InputLimits(max_megapixels=1)))
