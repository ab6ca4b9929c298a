"""Self-blended pseudo-fakes: the face mesh on a real photograph, blends that change only what their mask covers,
reproducible for a seed, and a detector trained on real faces alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from media import astronaut, coffee, huge_png

from fakefinder import Compute, PrepareSettings, TrainSettings, UsageError, load_dataset, load_detector, prepare, train
from fakefinder.data import landmarks
from fakefinder.data.crops import eye_angle, square_crop
from fakefinder.data.faces import create_face_detector
from fakefinder.data.landmarks import (
    CHIN,
    LANDMARKS,
    LEFT_EYE_OUTER,
    NOSE_TIP,
    RIGHT_EYE_OUTER,
    UPPER_LIP,
    FaceMesh,
    stored_landmarks,
)
from fakefinder.errors import OptionError
from fakefinder.training.augment import Augmenter
from fakefinder.training.loader import CropDataset, EpochBatches
from fakefinder.training.pseudofakes import FreshBlends, hull_mask, self_blend, with_pseudo_fakes


@pytest.fixture(scope="module")
def face():
    """A crop of a real photograph's face, cut as `prepare` cuts them, and the face box inside it."""
    image = astronaut()
    box = create_face_detector("blazeface").detect(image)[0]
    crop = square_crop(image, box, margin=0.3, size=224)
    side = 224 / 1.6  # the box's long side in the crop
    return crop, (112 - side / 2, 112 - side / 2, 112 + side / 2, 112 + side / 2)


def test_the_face_mesh_finds_a_real_face_inside_its_box_and_nothing_in_a_faceless_image(face):
    crop, (x0, y0, x1, y1) = face
    points = FaceMesh().landmarks(crop)
    assert points.shape == (468, 2)
    inner = points[[RIGHT_EYE_OUTER, LEFT_EYE_OUTER, NOSE_TIP, UPPER_LIP]]
    assert ((inner[:, 0] > x0) & (inner[:, 0] < x1) & (inner[:, 1] > y0) & (inner[:, 1] < y1)).all()
    eyes_y = points[[RIGHT_EYE_OUTER, LEFT_EYE_OUTER], 1].max()
    assert eyes_y < points[NOSE_TIP, 1] < points[UPPER_LIP, 1] < points[CHIN, 1]  # top to bottom
    assert points[RIGHT_EYE_OUTER, 0] < points[NOSE_TIP, 0] < points[LEFT_EYE_OUTER, 0]  # the image's left first
    image = coffee()
    h, w = image.shape[:2]
    side = min(h, w)
    middle = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    for faceless in (cv2.resize(image, (224, 224)), cv2.resize(middle, (224, 224))):  # the middle scores ~0.57
        assert FaceMesh().landmarks(faceless) is None


def test_a_pseudo_fake_differs_from_its_real_only_inside_its_mask_which_follows_the_landmarks(face):
    crop, _ = face
    points = FaceMesh().landmarks(crop)
    changed = 0
    for seed in range(6):
        fake, mask = self_blend(crop, points, np.random.default_rng(seed))
        outside = mask == 0
        assert np.array_equal(fake[outside], crop[outside])
        changed += int((fake[~outside] != crop[~outside]).any())
        ys, xs = np.nonzero(mask > 0.5 * mask.max())
        assert np.hypot(xs.mean() - points[:, 0].mean(), ys.mean() - points[:, 1].mean()) < 0.1 * 224
        hull = hull_mask(crop.shape, points, 0.3)
        far = cv2.dilate(hull, np.ones((61, 61), np.uint8)) == 0  # 30 px beyond the face's outline
        assert mask[far].max() < 0.05
    assert changed == 6


def test_blends_are_reproducible_for_a_seed_and_work_without_landmarks(face):
    crop, _ = face
    points = FaceMesh().landmarks(crop)
    a, b, c = (self_blend(crop, points, np.random.default_rng(s))[0] for s in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    fake, mask = self_blend(crop, None, np.random.default_rng(0))  # no mesh: an ellipse where the face sits
    assert mask[112, 112] > 0 and mask[2, 2] == 0 and np.array_equal(fake[mask == 0], crop[mask == 0])


def test_varied_masks_are_the_hull_the_hull_without_forehead_the_parts_or_the_lower_face(face):
    from fakefinder.training.pseudofakes import BROWS, SHAPES, blends_key

    crop, _ = face
    points = FaceMesh().landmarks(crop)
    hull, no_forehead, parts, lower = (hull_mask(crop.shape, points, 0.3, kind) for kind in SHAPES["varied-lower"])
    assert SHAPES["varied"] == SHAPES["varied-lower"][:3]
    brows = int(points[list(BROWS), 1].min())
    assert hull[:brows - 2].any() and not no_forehead[:brows - 2].any()  # the forehead left out, as a 68-point hull
    assert (no_forehead <= hull).all() and (parts <= hull).all() and parts.sum() < 0.5 * no_forehead.sum()
    eyes_and_mouth = points[[RIGHT_EYE_OUTER, NOSE_TIP, UPPER_LIP]].round().astype(int)
    assert all(parts[y, x] == 1 for x, y in eyes_and_mouth) and parts[points[CHIN, 1].astype(int) - 3].max() == 0
    (eye_x, eye_y), (lip_x, lip_y), (chin_x, chin_y) = points[[RIGHT_EYE_OUTER, UPPER_LIP, CHIN]].round().astype(int)
    assert lower[lip_y, lip_x] == 1 and lower[chin_y - 3, chin_x] == 1 and lower[eye_y, eye_x] == 0  # mouth and jaw
    assert (lower <= no_forehead).all() and lower.sum() < 0.7 * no_forehead.sum()
    areas = {}
    for name in SHAPES:
        areas[name] = []
        for seed in range(24):
            fake, mask = self_blend(crop, points, np.random.default_rng(seed), TrainSettings(blend_mask=name))
            assert np.array_equal(fake[mask == 0], crop[mask == 0])
            areas[name].append(int((mask > 0.5 * mask.max()).sum()))
        assert max(areas[name]) > 2.5 * min(areas[name])  # whole faces and their parts alone
    assert areas["varied"] != areas["varied-lower"]
    same = [self_blend(crop, points, np.random.default_rng(3), TrainSettings())[0] for _ in range(2)]
    assert np.array_equal(*same)

    class Data:
        manifest_digest = "d"

    # blends made before the setting existed are found again; varied ones are kept apart
    keys = {blends_key(Data, TrainSettings(blend_mask=name)) for name in ("hull", *SHAPES)}
    assert blends_key(Data, TrainSettings()) == "039f02bbc6cf5f35" and len(keys) == 3


def test_blend_writes_a_grid_per_crop_and_a_bad_file_is_one_line(face, tmp_path):
    crop, _ = face
    cv2.imwrite(str(tmp_path / "face.png"), crop)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "blend", str(tmp_path / "face.png"),
                           str(tmp_path / "broken.png"), str(tmp_path / "out"), "--seeds", "8"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"{tmp_path / 'broken.png'}: cannot read as an image"
    grid = cv2.imread(str(tmp_path / "out" / "face-blends.png"))
    assert grid.shape == (8 * 224, 3 * 224, 3)
    assert np.array_equal(grid[:224, :224], crop)  # the real beside its mask and its pseudo-fake
    # the recipe's masks (every shape: whole faces and their parts alone), unless a flag says otherwise
    def areas(grid):  # of each row's mask, at half its peak (a blend ratio below 1 scales the mask)
        masks = [grid[r:r + 224, 224:448, 0].astype(int) for r in range(0, len(grid), 224)]
        return [int((m > 0.5 * m.max()).sum()) for m in masks]

    assert max(areas(grid)) > 2.5 * min(areas(grid))
    hull = subprocess.run([sys.executable, "-m", "fakefinder", "blend", str(tmp_path / "face.png"),
                           str(tmp_path / "hull"), "--seeds", "8", "--blend-mask", "hull"], capture_output=True,
                          text=True, timeout=120)
    assert hull.returncode == 0, hull.stderr
    hulls = areas(cv2.imread(str(tmp_path / "hull" / "face-blends.png")))
    assert max(hulls) < 2.5 * min(hulls)


@pytest.mark.slow
def test_a_collection_of_real_faces_alone_trains_on_self_blended_pseudo_fakes(learnable, tmp_path):
    src = tmp_path / "src" / "real"
    src.mkdir(parents=True)
    data = load_dataset(learnable.out)
    for path in data.crop_files[data.labels == 0][:40]:
        shutil.copy(path, src / f"{len(list(src.iterdir()))}.png")
    reals = prepare(tmp_path / "src", tmp_path / "reals", settings=PrepareSettings(detector="none"),
                    compute=Compute(processes=1))
    assert reals.faces == 40
    kept = load_dataset(reals.out, need_both_classes=False)  # face crops are kept whole, never padded with black
    assert np.array_equal(cv2.imread(str(kept.crop_files[0])), cv2.imread(str(src.parent / f"{kept.video_ids[0]}.png")))
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "train", str(reals.out), "--fakes", "real",
                           "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--fakes self-blended" in proc.stderr
    with pytest.raises(UsageError, match="one class only"):
        train(reals.out, TrainSettings(epochs=2))
    result = train(reals.out, TrainSettings(fakes="self-blended", blends=1, epochs=8, patience=0, lr=3e-3),
                   tracking=f"sqlite:///{tmp_path / 'mlflow.db'}")
    losses = [e["train_loss"] for e in result.trained.history.epochs]
    assert losses[-1] < 0.8 * losses[0]  # it learns to tell the pseudo-fakes from their reals
    trained = result.trained
    assert (trained.dataset.methods == "self-blended").sum() == 40 and trained.dataset.name == "src+self-blended"
    assert trained.model.card.train["fakes"] == "self-blended"
    assert trained.model.card.evidence.val_fakes == "self-blended"
    fill = trained.model.card.face_fill  # the crops are whole images: faces in videos are cut to fill as much
    assert 0.3 < fill < 1 and load_dataset(reals.out, need_both_classes=False).settings.detector == "none"
    settings = load_detector(result.model_path, device="cpu").settings
    assert settings.detector == "blazeface" and settings.margin == pytest.approx((0.95 / fill - 1) / 2, abs=1e-3)
    assert abs(settings.margin - 0.3) < 0.1  # these crops were cut from videos at margin 0.3
    assert "(reals and their self-blended pseudo-fakes)" in trained.model.card.evidence.summary("src")
    # Its strength of evidence says plainly that its figures are against its own pseudo-fakes, and stays weak
    detector = load_detector(result.model_path, device="cpu")
    assert detector.card.strength.map.fakes == "self-blended"
    assert "against its own self-blended pseudo-fakes" in detector.describe()
    strength = detector.judge(1.0)["strength"]
    assert strength.likelihood_ratio < 10 and strength.fakes == "self-blended"
    assert "self-blended (pseudo-fake) validation videos" in strength.sentence()
    blends = sorted((reals.out / ".fakefinder" / "blends").rglob("*.png"))
    assert len(blends) == 40
    stamps = [p.stat().st_mtime_ns for p in blends]
    train(reals.out, TrainSettings(fakes="self-blended", blends=1, epochs=1), tracking=None)
    assert [p.stat().st_mtime_ns for p in blends] == stamps  # made once, then found again


def test_prepare_stores_each_crops_face_mesh_once_and_a_faceless_or_rewritten_crop_is_recorded(face, tmp_path):
    crop, _ = face
    src = tmp_path / "src" / "real"
    src.mkdir(parents=True)
    cv2.imwrite(str(src / "face.png"), crop)
    cv2.imwrite(str(src / "coffee.png"), cv2.resize(coffee(), (224, 224)))
    (src / "broken.png").write_bytes(b"not an image")
    result = prepare(tmp_path / "src", tmp_path / "out", settings=PrepareSettings(detector="none"),
                     compute=Compute(processes=1))
    assert result.faces == 2 and result.errors == 1
    data = load_dataset(result.out, need_both_classes=False)
    store = result.out / LANDMARKS
    stamp = store.stat().st_mtime_ns
    names = [Path(v).stem for v in data.video_ids]
    points = dict(zip(names, stored_landmarks(result.out, data.crop_paths)))
    assert store.stat().st_mtime_ns == stamp  # prepare measured them: read, not measured again
    assert np.isnan(points["coffee"]).all()  # no face: recorded, not fatal
    assert np.allclose(points["face"], FaceMesh().landmarks(crop))  # in the crop's pixels
    prepare(tmp_path / "src", tmp_path / "out", settings=PrepareSettings(detector="none"), compute=Compute(processes=1))
    assert store.stat().st_mtime_ns == stamp  # a rerun that changed no crop measures nothing
    rewritten = data.crop_files[names.index("face")]
    cv2.imwrite(rewritten, cv2.flip(crop, 1))  # a crop rewritten at its path is measured again
    os.utime(rewritten, ns=(stamp + 10**9, stamp + 10**9))  # however coarse the file system's clock
    again = dict(zip(names, stored_landmarks(result.out, data.crop_paths)))
    assert np.allclose(again["face"], FaceMesh().landmarks(cv2.flip(crop, 1)))


def _three_reals(face, tmp_path):
    """A prepared collection of three real crops: the face, shifted 0, 4 and 8 pixels."""
    crop, _ = face
    src = tmp_path / "src" / "real"
    src.mkdir(parents=True)
    for k in range(3):
        cv2.imwrite(str(src / f"{k}.png"), np.roll(crop, 4 * k, axis=1))
    return prepare(tmp_path / "src", tmp_path / "out", settings=PrepareSettings(detector="none"),
                   compute=Compute(processes=1))


def test_fine_tuning_sees_a_new_pseudo_fake_each_epoch_batched_beside_its_real(face, tmp_path, monkeypatch):
    reals = _three_reals(face, tmp_path)
    reads = []
    read = landmarks.read_landmarks
    monkeypatch.setattr(landmarks, "read_landmarks", lambda root, **kw: reads.append(root) or read(root, **kw))
    settings = TrainSettings(fakes="self-blended", blends=2)
    data = with_pseudo_fakes(load_dataset(reals.out, need_both_classes=False), settings)
    assert list(data.origins) == [-1, -1, -1, 0, 0, 1, 1, 2, 2]
    fresh = FreshBlends.of(data, settings)
    assert data.face_fill() is not None and len(reads) == 1  # landmarks.npz read once for the blends and the fill
    assert fresh.blend(data.crop_files, 0, np.random.default_rng(0)) is None  # a real is read as it is
    (first, mask), (second, _) = (fresh.blend(data.crop_files, 3, np.random.default_rng(e)) for e in (0, 1))
    real = cv2.imread(str(data.crop_files[0]))
    assert not np.array_equal(first, second) and not np.array_equal(first, real)
    assert np.array_equal(first, fresh.blend(data.crop_files, 3, np.random.default_rng(0))[0])  # seeded
    assert np.array_equal(first[mask == 0], real[mask == 0]) and (first[mask > 0.5] != real[mask > 0.5]).any()
    together = np.where(data.origins >= 0, data.origins, np.arange(len(data)))
    sampler = EpochBatches(np.arange(len(data)), 9, 0, shuffle=True, together=together)
    for epoch in range(3):
        sampler.epoch = epoch
        order = [row for batch in sampler for row, _ in batch]
        assert sorted(order) == list(range(9))
        keys = together[order]
        assert all(len(set(keys[i:i + 3])) == 1 for i in (0, 3, 6))  # each real beside its two pseudo-fakes


@pytest.mark.slow
def test_blend_map_learns_each_pseudo_fakes_mask_and_leaves_the_model_file_as_it_was(face, tmp_path):
    """`--blend-map`: the loader gives a pseudo-fake the mask it was blended through, framed as its image, a real an
    empty one, and a fake of the data's own a mask marked unknown; the run trains a model unlike the one without
    it (the map's convolution learns and moves the base) in a file of the same weights' names."""
    from fakefinder import fit_detector
    from fakefinder.models.backbones import Preprocess
    from fakefinder.models.modelfile import save_model
    from fakefinder.training.finetune import epoch_rng

    reals = _three_reals(face, tmp_path)
    settings = TrainSettings(fakes="self-blended", blends=1, trainable_blocks="all", blend_map=1.0)
    data = with_pseudo_fakes(load_dataset(reals.out, need_both_classes=False), settings)
    fresh, preprocess = FreshBlends.of(data, settings), Preprocess(112, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    labels = data.labels.copy()
    labels[1] = 1  # as a fake of the data's own (no origin: nothing says where it was changed)
    loader = CropDataset(data.crop_files, labels, preprocess, None, settings.seed, fresh, blend_map=True)
    for epoch in (1, 2):
        (real, _, empty, real_known), (x, y, mask, known) = loader[0, epoch], loader[3, epoch]
        assert int(data.origins[3]) == 0 and y == 1 and known == 1 and real_known == 1 and not empty.any()
        made = fresh.blend(data.crop_files, 3, epoch_rng(settings.seed, epoch, 3, 1))[1]
        assert mask.shape == (112, 112) and 0.2 < float(mask.max()) <= 1
        assert torch.allclose(mask, torch.from_numpy(cv2.resize(made, (112, 112), interpolation=cv2.INTER_AREA)))
        assert torch.equal(x[:, mask == 0], real[:, mask == 0]) and not torch.equal(x, real)
    assert loader[1, 1][3] == 0 and not loader[1, 1][2].any()
    assert len(CropDataset(data.crop_files, labels, preprocess, None, settings.seed, fresh)[3, 1]) == 2

    tiny = TrainSettings.preset("self-blended").replace(weights="none", input_size=64, epochs=2, batch_size=4,
                                                        precision="fp32", probe=False, augment="default")
    weights = {}
    for weight in (0.0, 1.0):
        save_model(tmp_path / f"{weight}.safetensors", fit_detector(reals.out, tiny.replace(blend_map=weight)).model)
        from safetensors.torch import load_file

        weights[weight] = load_file(tmp_path / f"{weight}.safetensors")
    assert weights[0.0].keys() == weights[1.0].keys()
    assert any(not torch.equal(weights[0.0][k], weights[1.0][k]) for k in weights[0.0] if "_blocks" in k)
    for bad in (dict(), dict(fakes="self-blended"), dict(fakes="self-blended", trainable_blocks="all",
                                                         augment="keras")):
        with pytest.raises(OptionError, match="blend_map"):
            TrainSettings(blend_map=1.0, **bad)
    assert TrainSettings.preset(fakes="both", blend_map=1.0).members()["supervised"].blend_map == 0


@pytest.mark.parametrize("pairs", ["alike", "apart"])
def test_alike_augments_a_real_and_its_pseudo_fake_with_one_draw(face, tmp_path, pairs):
    """SBI's recipe: one draw for both (the same flip, re-compression, colour, cutout), so only the blend tells
    them apart. Cutout shows the draw: its black squares fall on the same pixels of both when alike."""
    settings = TrainSettings(fakes="self-blended", blends=1, pair_augment=pairs)
    data = with_pseudo_fakes(load_dataset(_three_reals(face, tmp_path).out, need_both_classes=False), settings)
    together = np.where(data.origins >= 0, data.origins, np.arange(len(data)))
    fresh, as_array = FreshBlends.of(data, settings), lambda image: image.astype(np.float32)
    plain = CropDataset(data.crop_files, data.labels, as_array, None, settings.seed, fresh)
    augmented = CropDataset(data.crop_files, data.labels, as_array, Augmenter.from_spec("cutout", margin=data.margin),
                            settings.seed, fresh, draws=together if pairs == "alike" else None)

    def black(dataset: CropDataset, row: int, epoch: int) -> torch.Tensor:
        return dataset[row, epoch][0].amax(dim=-1) == 0

    def cut(real: int, fake: int, epoch: int) -> list[torch.Tensor]:  # the pixels cutout blacked out in each
        before = black(plain, real, epoch) | black(plain, fake, epoch)  # the crops' own black border
        return [black(augmented, row, epoch) & ~before for row in (real, fake)]

    assert augmented[3, 0][1] == 1 and not torch.equal(augmented[0, 0][0], augmented[3, 0][0])
    pairs_cut = [cut(real, fake, epoch) for epoch in range(3) for real, fake in [(0, 3), (1, 4), (2, 5)]]
    assert any(a.any() for a, _ in pairs_cut)
    assert all(torch.equal(a, b) for a, b in pairs_cut) == (pairs == "alike")


def test_aligned_crops_have_level_eyes_and_old_preparations_keep_their_key(tmp_path):
    detector = create_face_detector("blazeface")
    image = astronaut()
    h, w = image.shape[:2]
    tilted = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h))
    box = max(detector.detect(tilted), key=lambda b: b.area)
    assert abs(eye_angle(box) + 20) < 5  # turned counter-clockwise: the eyes rise to the image's right

    def angle_in(crop):
        return eye_angle(max(detector.detect(crop), key=lambda b: b.area))

    plain, upright = (square_crop(tilted, box, margin=0.3, size=224, align=a) for a in (False, True))
    assert abs(angle_in(plain) + 20) < 5 and abs(angle_in(upright)) < 4
    assert upright.shape == plain.shape == (224, 224, 3)
    assert "align" not in PrepareSettings().digest_fields() and PrepareSettings(align=True).digest_fields()["align"]
    old = dict(fps=1.0, frames=None, max_side=1000, detector="none", margin=0.3, faces="largest", min_face=0,
               size=224)  # crops of faces padded by a margin, before --detector none meant margin 0
    assert PrepareSettings.recorded(old).margin == 0.3 and PrepareSettings(**old).margin == 0
    with pytest.raises(OptionError, match="align needs a detector that finds the eyes"):
        PrepareSettings(align=True, detector="haar")


def test_fakes_self_blended_alone_starts_from_the_measured_recipe_and_flags_still_win():
    from fakefinder._cli import _options, build_parser

    recipe = TrainSettings.preset("self-blended")
    assert recipe.fakes == "self-blended" and not recipe.frozen
    args = build_parser("train").parse_args(["train", "DATA", "--fakes", "self-blended"])
    assert _options.settings_from(args, TrainSettings, args.preset) == recipe
    args = build_parser("train").parse_args(["train", "DATA", "--fakes", "self-blended", "--trainable-blocks", "0"])
    assert _options.settings_from(args, TrainSettings, args.preset) == recipe.replace(trainable_blocks=0)
    both = TrainSettings.preset(fakes="both")  # the recipe's self-blended member, and a supervised one
    assert recipe.augment == both.augment == "compressed" and recipe.blend_mask == both.blend_mask == "varied-lower"
    # pair batches change nothing for the self-blended member: a pseudo-fake is always batched beside its real
    them = dict(supervised_augment="default", supervised_pair_augment="alike")
    assert both.combined and both.members() == {
        "self-blended": recipe.replace(both="combined", pair_batches=True, **them),
        "supervised": both.replace(fakes="real", augment="default", pair_augment="alike")}
    assert both.members()["supervised"].augment == "default"  # H.264 made its log loss worse
    assert both.members()["supervised"].epochs == 6  # bench/paired.py: 6 beat 3 in-domain
    assert both.members()["supervised"].pair_batches  # and fakes beside their originals beat those
    assert both.members()["supervised"].pair_augment == "alike"  # each pair augmented alike, better still
    assert both.members()["self-blended"].pair_augment == "apart"  # not told apart there: as measured
    args = build_parser("train").parse_args(["train", "DATA", "--fakes", "both", "--both", "mixed"])
    mixed = _options.settings_from(args, TrainSettings, args.preset)  # the recipe on both kinds of fakes
    assert not mixed.combined and mixed == recipe.replace(fakes="both", both="mixed", pair_batches=True, **them)
    args = build_parser("train").parse_args(["train", "DATA", "--fakes", "both", "--supervised-augment", "none"])
    assert _options.settings_from(args, TrainSettings, args.preset).members()["supervised"].augment == "none"
    with pytest.raises(OptionError, match="supervised_augment has no augmentation 'h265'"):
        TrainSettings(supervised_augment="h265")
    assert TrainSettings.preset(fakes="real") == TrainSettings()  # the default recipe otherwise


@pytest.mark.slow
def test_the_gpu_recipe_runs_tiny_on_a_cpu(face, tmp_path):
    """`--preset self-blended-gpu` (EfficientNet-B4, varied masks): its figures need a GPU; here it trains an epoch on
    three reals at 64 px from random weights, so that the recipe itself is known to run."""
    from fakefinder import fit_detector

    reals = _three_reals(face, tmp_path)
    recipe = TrainSettings.preset("self-blended-gpu")
    assert (recipe.backbone, recipe.input_size, recipe.blend_mask, recipe.fakes) == (
        "efficientnet_b4", None, "varied", "self-blended") and not recipe.frozen
    tiny = recipe.replace(weights="none", input_size=64, epochs=1, batch_size=4, precision="fp32", probe=False)
    trained = fit_detector(reals.out, tiny)
    assert trained.model.card.base.backbone == "efficientnet_b4" and trained.model.card.train["blend_mask"] == "varied"


def test_blend_reads_a_crop_whose_name_is_not_utf8(tmp_path):
    """OpenCV's imread crashes the process on such a name: read in Python, each crop gets its grid."""
    crop = cv2.imencode(".png", cv2.resize(astronaut()[0:256, 100:356], (128, 128)))[1].tobytes()
    odd, good = tmp_path / os.fsdecode(b"\xff\xfe.png"), tmp_path / "good.png"
    odd.write_bytes(crop)
    good.write_bytes(crop)
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "blend", str(odd), str(good), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_-blends.png", "good-blends.png"]


def _npz(path: Path, **arrays) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def test_a_corrupt_landmarks_file_is_measured_again_and_never_makes_a_card_its_reader_refuses(face, tmp_path):
    """Meshes of 1e30, inf, the wrong shape or type, or a header declaring 10^12 floats: each is measured again
    (no traceback, no MemoryError), and training with self-blended fakes writes a model that loads."""
    import io
    import zipfile

    reals = _three_reals(face, tmp_path)
    store = reals.out / LANDMARKS
    with np.load(store) as z:
        keys, good = z["keys"], z["points"]
    assert np.isfinite(good).all()
    corrupt = {"1e30": dict(keys=keys, points=np.full_like(good, 1e30)),
               "inf": dict(keys=keys, points=np.where(np.arange(2) == 0, np.inf, good).astype(np.float32)),
               "far": dict(keys=keys, points=good + 400),  # finite, but far outside a 224 px crop
               "shape": dict(keys=keys, points=good[:, :100]),
               "type": dict(keys=keys, points=good.astype(np.int64)),
               "count": dict(keys=keys[:1], points=good)}
    for case, arrays in corrupt.items():
        _npz(store, **arrays)
        fresh = load_dataset(reals.out, need_both_classes=False)
        np.testing.assert_allclose(fresh.landmarks(np.arange(3)), good, atol=1e-3, err_msg=case)
    _npz(store, keys=keys, points=good)
    with zipfile.ZipFile(store) as z:
        entry = z.read("points.npy")
    payload = io.BytesIO(entry)
    np.lib.format.read_magic(payload)
    np.lib.format.read_array_header_1_0(payload)  # leaves `payload` at the array's bytes
    with zipfile.ZipFile(store, "w") as z:  # stored, not compressed, as np.savez writes
        z.writestr("keys.npy", _npy_bytes(keys))
        z.writestr("points.npy", _npy_header(np.dtype("<f4"), (10**9, 468, 2)) + payload.read())
    assert landmarks.read_landmarks(reals.out) == {}  # refused from the header: nothing allocated
    np.testing.assert_allclose(load_dataset(reals.out, need_both_classes=False).landmarks(np.arange(3)), good,
                               atol=1e-3)

    _npz(store, keys=keys, points=np.full_like(good, 1e30))
    trained = train(reals.out, TrainSettings(fakes="self-blended", blends=1, epochs=1), tracking=None)
    assert 0 < load_detector(trained.model_path).card.face_fill < 1  # measured again: a face fills part of its crop
    import dataclasses

    from fakefinder.models.modelfile import load_model, save_model

    model = load_model(trained.model_path)
    broken = dataclasses.replace(model, card=dataclasses.replace(model.card, face_fill=float("inf")))
    with pytest.raises(UsageError, match=r"not written: its model card would not load \(.*face_fill"):
        save_model(tmp_path / "broken.safetensors", broken)
    assert not (tmp_path / "broken.safetensors").exists()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_blend_has_predicts_input_limits_and_one_line_errors(tmp_path):
    """A PNG bomb is refused from its header (the other crops go on); --seeds beyond its bound, a bad --margin and
    OUT being a file are one line each."""
    good = tmp_path / "good.png"
    good.write_bytes(cv2.imencode(".png", cv2.resize(astronaut()[0:256, 100:356], (96, 96)))[1].tobytes())
    bomb = huge_png(tmp_path / "bomb.png", 30000, 30000)

    def blend(*argv):
        return subprocess.run([sys.executable, "-m", "fakefinder", "blend", *map(str, argv)], capture_output=True,
                              text=True, timeout=120)

    proc = blend(bomb, good, tmp_path / "out")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{bomb}: 900 megapixels, over the limit of 100" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good-blends.png"]
    for argv, shown in (((good, tmp_path / "out", "--seeds", "3000"), "--seeds must be an integer in [1, 32]"),
                        ((good, tmp_path / "out", "--margin", "-1"), "--margin must be"),
                        ((good, good), "not a folder")):
        proc = blend(*argv)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and shown in proc.stderr, proc.stderr
