from __future__ import annotations

import numpy as np
import pytest
from media import astronaut, coffee

from fakefinder import Box, UsageError, create_face_detector, sample_frames
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
