"""Each augmentation does what its name says, with a strength, and is a pure function of (image, rng)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from media import astronaut

from fakefinder.config import TrainSettings
from fakefinder.errors import OptionError, UsageError
from fakefinder.training.augment import (
    AUGMENTATIONS,
    Augmenter,
    FaceParts,
    face_part_box,
    hsv_changed,
    mesh_part_boxes,
    parse_augment,
)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A 224 px crop of a real face with margin 0.3 around the face box, as prepare cuts it."""
    from fakefinder.data.crops import square_crop
    from fakefinder.data.faces import create_face_detector

    image = astronaut()
    box = max(create_face_detector("blazeface").detect(image), key=lambda b: b.area)
    return square_crop(image, box, margin=0.3, size=224)


def apply(name: str, image: np.ndarray, strength: float = 1.0, seed: int = 0) -> np.ndarray:
    out = AUGMENTATIONS[name][0](image, np.random.default_rng(seed), strength, FaceParts(0.3))
    return out[0] if isinstance(out, tuple) else out  # one that moves pixels gives the moved face parts too


def sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_flip_mirrors(face):
    assert np.array_equal(apply("flip", face), face[:, ::-1])


def test_jpeg_recompression_leaves_8x8_blocking_that_grows_with_strength(face):
    def blockiness(im):  # jumps across 8-pixel block edges relative to jumps elsewhere
        g = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY).astype(float)
        d = np.abs(np.diff(g, axis=1))
        return d[:, 7::8].mean() / d.mean()

    weak, strong = apply("jpeg", face, 0.05), apply("jpeg", face, 1.0, seed=3)
    assert weak.shape == strong.shape == face.shape
    assert blockiness(strong) > blockiness(weak) >= blockiness(face) * 0.95


def test_h264_recompression_loses_more_with_strength_and_keeps_any_shape(face):
    weak = [apply("h264", face, 0.05, seed) for seed in range(3)]
    strong = [apply("h264", face, 1.0, seed) for seed in range(3)]
    assert all(34 < cv2.PSNR(w, face) < 50 for w in weak)  # CRF 18-19: near-transparent, not untouched
    assert max(cv2.PSNR(s, face) for s in strong) < min(cv2.PSNR(w, face) for w in weak)
    assert min(cv2.PSNR(s, face) for s in strong) < 34
    assert np.array_equal(apply("h264", face, 1.0, 0), strong[0])  # a pure function of (image, rng)
    odd = np.ascontiguousarray(face[:223, :221])  # 4:2:0 wants even sides: the crop keeps its own
    assert apply("h264", odd).shape == odd.shape


def test_downscale_and_blur_remove_fine_detail(face):
    for name in ("downscale", "blur"):
        out = apply(name, face, 1.0, seed=1)
        assert out.shape == face.shape and sharpness(out) < 0.7 * sharpness(face), name


def test_noise_adds_zero_mean_noise(face):
    out = apply("noise", face, 1.0, seed=2).astype(float)
    diff = out - face
    assert abs(diff.mean()) < 1.5 and 1 < diff.std() < 30


def test_colour_shifts_colour_but_keeps_the_shapes(face):
    out = apply("colour", face, 1.0, seed=4)
    assert np.abs(out.astype(float).mean((0, 1)) - face.astype(float).mean((0, 1))).max() > 3
    edges = lambda im: cv2.Canny(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), 50, 150) > 0  # noqa: E731
    assert (edges(out) & edges(face)).sum() > 0.5 * edges(face).sum()


@pytest.mark.parametrize(("hue", "saturation", "value"), [(0.0, 1.0, 1.0), (-7.3, 1.38, 0.61), (170.5, 0.2, 1.9)])
def test_hsv_tables_give_the_pixels_of_arithmetic_on_every_pixel(face, hue, saturation, value):
    """Hue wrapping past 180, saturation and value past 255 and toward 0: each as float32 arithmetic would give."""
    hsv = cv2.cvtColor(face, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue) % 180
    hsv[..., 1] *= np.float32(saturation)
    hsv[..., 2] *= np.float32(value)
    expected = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
    out = hsv_changed(face, hue, np.float32(saturation), np.float32(value))
    assert np.array_equal(out, expected)
    assert (hue, saturation, value) == (0.0, 1.0, 1.0) or not np.array_equal(out, face)


def test_cutout_blacks_out_squares(face):
    out = apply("cutout", face, 1.0, seed=5)
    black = (out == 0).all(axis=2) & ~(face == 0).all(axis=2)
    assert 0.01 < black.mean() < 0.5


@pytest.mark.parametrize("part", ["eyes", "nose", "mouth"])
def test_face_part_boxes_sit_on_the_face_parts(face, part):
    """The geometry finds the real eyes, nose and mouth: BlazeFace's own keypoints fall in the boxes."""
    from fakefinder.data.faces import LANDMARKS, create_face_detector

    box = max(create_face_detector("blazeface").detect(face), key=lambda b: b.area)
    x0, y0, x1, y1 = face_part_box(part, 224, 0.3)
    inside = {"eyes": ["right_eye", "left_eye"], "nose": ["nose"], "mouth": ["mouth"]}[part]
    for name in inside:
        x, y = box.landmarks[LANDMARKS.index(name)]
        assert x0 <= x <= x1 and y0 <= y <= y1, (part, name, (x, y), (x0, y0, x1, y1))


def test_parts_cutout_blacks_out_a_face_part(face):
    out = apply("parts", face, 1.0, seed=6)
    black = (out == 0).all(axis=2)
    boxes = [face_part_box(p, 224, 0.3) for p in ("eyes", "nose", "mouth")]
    covered = max(black[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in boxes)
    assert covered > 0.6 and black.mean() < 0.3


def test_parts_follow_the_face_mesh_of_a_face_off_centre_and_its_mirror_image(face):
    """A face that is not where the crop's geometry expects it: its mesh places the parts, also after a flip."""
    from fakefinder.data.landmarks import FaceMesh

    shifted = np.roll(face, 36, axis=1)
    boxes = mesh_part_boxes(FaceMesh().landmarks(shifted))
    assert np.isnan(mesh_part_boxes(np.full((468, 2), np.nan))).all()  # no mesh: the geometry decides
    augmenter = Augmenter.from_spec("flip=1,parts=1", margin=0.3)
    flips, cut = 0, 0
    for seed in range(12):
        out = augmenter(shifted, np.random.default_rng(seed), boxes)
        black = (out == 0).all(axis=2) & ~(shifted == 0).all(axis=2) & ~(shifted[:, ::-1] == 0).all(axis=2)
        flipped = np.mean(out[~black] == shifted[:, ::-1][~black]) > np.mean(out[~black] == shifted[~black])
        flips += flipped
        seen = shifted[:, ::-1] if flipped else shifted  # where the mesh puts the parts in what was cut
        place = FaceParts(0.3, mesh_part_boxes(FaceMesh().landmarks(seen)))
        inside = np.zeros_like(black)
        for part in ("eyes", "nose", "mouth"):
            x0, y0, x1, y1 = place.box(part, 224)
            inside[max(0, y0 - 12):y1 + 12, max(0, x0 - 12):x1 + 12] = True  # boxes jitter by 5% of the side
        assert not black[~inside].any()
        cut += black.sum() > 200  # `parts` applies to half the crops
    assert 0 < flips < 12 and cut >= 3


def test_keras_augmentation_is_an_affine_warp(face):
    out = apply("keras", face, 1.0, seed=7)
    assert out.shape == face.shape and not np.array_equal(out, face)


def test_a_spec_is_parsed_named_strengths_apply_and_the_result_depends_only_on_the_rng(face):
    assert parse_augment("flip,jpeg=0.5") == (("flip", 1.0), ("jpeg", 0.5))
    assert parse_augment("none") == () and parse_augment("keras") == (("keras", 1.0),)
    assert {name for name, _ in parse_augment("default")} == set(AUGMENTATIONS) - {"keras", "h264", "reframe"}
    # the self-blended recipe's: the default's, in its order, with H.264 half the time (CRF 18-29) after JPEG
    compressed = parse_augment("compressed")
    assert [s for s in compressed if s[0] != "h264"] == list(parse_augment("default"))
    assert compressed[2] == ("h264", 0.5) and compressed[1][0] == "jpeg"
    augmenter = Augmenter.from_spec("default", margin=0.3)
    a = augmenter(face, np.random.default_rng([0, 1, 2]))
    b = augmenter(face, np.random.default_rng([0, 1, 2]))
    c = augmenter(face, np.random.default_rng([0, 1, 3]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for bad, message in (("sparkle", "has no augmentation 'sparkle'"), ("jpeg=2", "strength must be in (0, 1]"),
                         ("blur=x", "strength 'x' is not a number")):
        with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TrainSettings(augment=bad)


def test_reframe_cuts_the_crop_again_and_its_face_parts_move_with_the_face(face):
    """Tighter and wider, and shifted: where the face mesh and BlazeFace find the parts in the new crop is where
    the moved parts say they are, with the mesh's boxes and with the crop's geometry alike."""
    from fakefinder.data.faces import LANDMARKS, create_face_detector
    from fakefinder.data.landmarks import FaceMesh

    mesh, blazeface = FaceMesh(), create_face_detector("blazeface")
    before = mesh_part_boxes(mesh.landmarks(face))
    widths = []
    for seed in range(8):
        out, moved = AUGMENTATIONS["reframe"][0](face, np.random.default_rng(seed), 1.0, FaceParts(0.3, before))
        assert out.shape == face.shape
        seen = mesh_part_boxes(mesh.landmarks(out))
        assert np.abs(moved.boxes - seen).max() < 6, seed  # the mesh itself wavers by 2-4 px; unmoved: 6-18
        widths.append((seen[:, 2] - seen[:, 0]).mean() / (before[:, 2] - before[:, 0]).mean())
        _, guessed = AUGMENTATIONS["reframe"][0](face, np.random.default_rng(seed), 1.0, FaceParts(0.3))
        box = max(blazeface.detect(out), key=lambda b: b.area)
        for part, names in {"eyes": ["right_eye", "left_eye"], "nose": ["nose"], "mouth": ["mouth"]}.items():
            x0, y0, x1, y1 = guessed.box(part, 224)
            for name in names:
                x, y = box.landmarks[LANDMARKS.index(name)]
                assert x0 <= x <= x1 and y0 <= y <= y1, (seed, part, name)
    assert min(widths) < 0.95 and max(widths) > 1.05 and all(1 / 1.25 < w < 1 / 0.75 for w in widths)
    assert np.array_equal(apply("reframe", face, seed=3), apply("reframe", face, seed=3))


def test_a_spec_may_add_to_a_named_one():
    assert parse_augment("compressed,reframe") == (*parse_augment("compressed"), ("reframe", 1.0))
    assert parse_augment("reframe=0.5,none") == (("reframe", 0.5),)


def test_after_a_reframe_parts_blacks_out_where_the_face_went(face):
    """The chain hands each augmentation the parts where the previous one moved them: the augmenter's result is
    reframe, then parts on the moved boxes, each drawn in turn from one stream."""
    from fakefinder.data.landmarks import FaceMesh

    boxes = mesh_part_boxes(FaceMesh().landmarks(face))
    augmenter = Augmenter.from_spec("reframe=1,parts=1", margin=0.3)
    both = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        image, place = face, FaceParts(0.3, boxes)
        moved = rng.random() < 0.5
        if moved:
            image, place = AUGMENTATIONS["reframe"][0](image, rng, 1.0, place)
        if rng.random() < 0.5:
            image = AUGMENTATIONS["parts"][0](image, rng, 1.0, place)
            both += moved
        assert np.array_equal(augmenter(face, np.random.default_rng(seed), boxes), image), seed
    assert both >= 2


def test_a_blend_mask_moves_as_the_pixels_do_and_draws_nothing(face):
    """`--blend-map`'s target: after flips and reframes the mask still lies over the pixels it marked, and the
    image is the one the augmenter makes without a mask."""
    mask = np.zeros((224, 224), np.float32)
    cv2.ellipse(mask, (80, 130), (40, 60), 20, 0, 360, 1.0, -1)  # off-centre and tilted: a flip shows
    marked = np.repeat(np.round(mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    moves = Augmenter.from_spec("flip=1,reframe=1", margin=0.3)
    changed = 0
    for seed in range(8):
        image, moved = moves.apply(marked, np.random.default_rng(seed), None, mask)
        assert np.abs(image[..., 0] / 255 - moved).max() < 2 / 255, seed
        changed += not np.allclose(moved, mask)
        assert np.array_equal(moves(marked, np.random.default_rng(seed)), image)
    assert changed >= 4
    everything = Augmenter.from_spec("compressed,reframe", margin=0.3)
    for seed in range(4):
        with_mask, _ = everything.apply(face, np.random.default_rng(seed), None, mask)
        assert np.array_equal(with_mask, everything(face, np.random.default_rng(seed))), seed
    assert everything.apply(face, np.random.default_rng(0))[1] is None
    with pytest.raises(UsageError, match="keras"):
        Augmenter.from_spec("keras", margin=0.3).apply(face, np.random.default_rng(0), None, mask)
