from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from fresh import without
from media import astronaut, coffee

from fakefinder import Box, UsageError, create_face_detector, sample_frames
from fakefinder._files import CACHE_ENV
from fakefinder.data.crops import square_crop

ASTRONAUT_FACE = (175, 65, 100, 100)  # x, y, w, h of Eileen Collins' face in skimage's photo


def _iou(a: Box, b: tuple) -> float:
    x1, y1 = max(a.x, b[0]), max(a.y, b[1])
    x2, y2 = min(a.x + a.w, b[0] + b[2]), min(a.y + a.h, b[1] + b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / (a.w * a.h + b[2] * b[3] - inter)


@pytest.mark.parametrize("name", ["blazeface", "haar"])
def test_finds_the_face_in_a_real_photo_and_none_in_coffee(name):
    detector = create_face_detector(name)
    boxes = detector.detect(astronaut())
    assert boxes and _iou(boxes[0], ASTRONAUT_FACE) > 0.6
    assert create_face_detector("blazeface").detect(coffee()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["blazeface", "haar"])
def test_detection_rate_on_synthetic_videos_is_at_least_90_percent(collection, name):
    detector = create_face_detector(name)
    hits = total = 0
    for video in collection.videos:
        for frame in sample_frames(collection.out / f"{video.name}.mp4", fps=2.0):
            total += 1
            hits += bool(detector.detect(frame.image))
    assert total == 60 and hits / total >= 0.9


def test_haar_works_on_a_shrunk_copy_and_maps_boxes_back():
    big = np.kron(astronaut(), np.ones((3, 3, 1), np.uint8))  # 1536 px: detected at 640, reported at 1536
    box = create_face_detector("haar").detect(big)[0]
    assert _iou(box, tuple(3 * v for v in ASTRONAUT_FACE)) > 0.6


def test_none_detector_is_the_whole_frame():
    assert create_face_detector("none").detect(coffee()) == [Box(0.0, 0.0, 600.0, 400.0, 1.0)]


def test_unknown_detector_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown detector 'mtcnn'"):
        create_face_detector("mtcnn")


def test_square_crop_margin_and_padding():
    image = np.full((100, 200, 3), 255, np.uint8)
    tight = square_crop(image, Box(50, 20, 40, 40, 1.0), margin=0.0, size=40)
    assert tight.shape == (40, 40, 3) and tight.min() == 255
    # A box at the corner: the 0.5 margin reaches outside the frame, which is padded black.
    padded = square_crop(image, Box(0, 0, 40, 40, 1.0), margin=0.5, size=80)
    assert padded.shape == (80, 80, 3)
    assert padded[:20, :20].max() == 0 and padded[40:, 40:].min() == 255


def _same_boxes(a: list[Box], b: list[Box]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.allclose([x.x, x.y, x.w, x.h], [y.x, y.y, y.w, y.h], atol=0.01)
        assert x.score == pytest.approx(y.score, abs=1e-4)
        assert np.allclose(x.landmarks, y.landmarks, atol=0.01)


def test_blazeface_finds_the_same_faces_on_onnx_runtime_as_on_opencv():
    on_onnx, on_opencv = (create_face_detector("blazeface", runtime=r) for r in ("onnx", "opencv"))
    assert (on_onnx.runtime, on_opencv.runtime) == ("onnx", "opencv")
    two = np.hstack([astronaut(), astronaut()[:, ::-1]])  # two faces, one mirrored; a wide frame is letterboxed
    for image in [astronaut(), coffee(), two, two[::2, ::2]]:
        _same_boxes(on_onnx.detect(image), on_opencv.detect(image))


@pytest.mark.slow
def test_blazeface_conversion_is_cached_and_made_again_when_damaged_or_unwritable(tmp_path, monkeypatch):
    from fakefinder._files import sha256_file
    from fakefinder.data import tflite_onnx
    from fakefinder.data.faces import blazeface_model_path

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cached = tflite_onnx.cached_path(sha256_file(blazeface_model_path()))
    want = create_face_detector("blazeface", runtime="onnx").detect(astronaut())
    size = cached.stat().st_size  # the conversion is not byte for byte the same each time
    cached.write_bytes(b"not an onnx file")
    _same_boxes(create_face_detector("blazeface").detect(astronaut()), want)
    assert abs(cached.stat().st_size - size) < 1000
    blocked = tmp_path / "blocked"
    blocked.write_text("")  # a file where the cache folder should be: nothing can be written there
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    detector = create_face_detector("blazeface")
    assert detector.runtime == "onnx" and blocked.read_text() == ""
    _same_boxes(detector.detect(astronaut()), want)


@pytest.mark.parametrize("missing", ["onnxruntime", "tflite2onnx"])
def test_blazeface_runs_on_opencv_without_onnx_runtime_or_the_converter(tmp_path, missing):
    """tflite2onnx matters only where nothing is cached yet: a fresh cache."""
    code = (f"{without(missing)}\nfrom fakefinder import create_face_detector\n"
            "print(create_face_detector('blazeface').runtime)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), CACHE_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["opencv"] and not done.stderr, done.stderr
