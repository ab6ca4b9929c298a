"""`combine`: one model file of several detectors, a face's logit the largest of the members' calibrated logits,
calibrated together on held-out videos; it loads, exports and scores as any model file does."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fakefinder import TrainSettings, load_dataset, load_detector, train
from fakefinder._cli import main
from fakefinder.data.crops import load_crops
from fakefinder.data.splits import load_split
from fakefinder.errors import UsageError
from fakefinder.models.modelcard import ModelCard
from fakefinder.models.modelfile import load_model, read_card

pytestmark = pytest.mark.slow  # trains a second detector, exports two bases

LOGIT_TOL = 1e-3  # ONNX Runtime against PyTorch at fp32, as tests/test_onnx.py holds them


@pytest.fixture(scope="module")
def members(baseline, learnable, tracking, tmp_path_factory):
    """Two detectors trained on one split of `learnable`: the baseline and one with another head and seed."""
    root = tmp_path_factory.mktemp("combine")
    split = root / "split.json"
    baseline.trained.split.save(split)
    other = train(learnable.out, TrainSettings(seed=1, n_neurons=64, pool="avg"), tracking=tracking,
                  out=root / "other.safetensors", split_file=split)
    return baseline.model_path, other.model_path, split


@pytest.fixture(scope="module")
def combined(members, learnable, tmp_path_factory):
    a, b, split = members
    out = tmp_path_factory.mktemp("combined") / "both.safetensors"
    code = main(["combine", str(a), str(b), "--data", str(learnable.out), "--split", str(split), "--out", str(out),
                 "--quiet", "--device", "cpu", "--json", str(out.with_suffix(".json"))])
    assert code == 0
    return out


def test_the_file_carries_each_member_and_scores_the_largest_calibrated_logit(members, combined, learnable):
    a, b, split = members
    card = read_card(combined)
    assert card.members == (read_card(a), read_card(b)) and card.train["combine"] == "max"
    model = load_model(combined)
    data = load_dataset(learnable.out)
    crops = load_crops(list(data.crop_files[:12]))
    def largest(precision: str | None = None) -> np.ndarray:
        nets = [load_model(p) for p in (a, b)]
        if precision:  # whatever the card's (bf16 where the CPU has it)
            nets = [dataclasses.replace(n, card=dataclasses.replace(n.card, precision=precision)) for n in nets]
        return np.max([n.card.calibration.scale * n.face_logits(crops) + n.card.calibration.shift for n in nets],
                      axis=0)

    np.testing.assert_allclose(model.face_logits(crops), largest(), atol=1e-6)
    # ONNX Runtime, the default runtime of verdicts, runs both bases in one graph at fp32 and gives the same logits
    onnx = load_detector(combined, device="cpu")
    assert type(onnx.model).__name__ == "OnnxModel"
    np.testing.assert_allclose(onnx.model.face_logits(crops), largest("fp32"), atol=LOGIT_TOL, rtol=LOGIT_TOL)


def test_calibrated_on_the_validation_part_and_measured_on_the_test_part(members, combined, learnable):
    _, _, split = members
    card = read_card(combined)
    measured = json.loads(combined.with_suffix(".json").read_text())
    data = load_dataset(learnable.out)
    parts = load_split(split, data).parts[:len(data)]
    assert card.calibrated_on.val_videos == len(set(data.video_ids[parts == "val"]))
    assert measured["test_videos"] == card.strength.test_videos == len(set(data.video_ids[parts == "test"]))
    assert card.evidence.name.startswith("combined (") and card.evidence.test_auc == pytest.approx(measured["test_auc"])
    told = load_detector(combined, device="cpu").describe()  # what predict and the web page show of the model
    assert "It combines 2 detectors" in told and all(m.evidence.summary(m.dataset) in told for m in card.members)
    for runtime in ("onnx", "torch"):  # Grad-CAM would have to choose a member: one line instead
        with pytest.raises(UsageError, match="combined model"):
            load_detector(combined, device="cpu", runtime=runtime).differentiable()


def test_export_writes_both_bases_in_one_graph(combined, learnable, tmp_path, capsys):
    out = tmp_path / "both.onnx"
    assert main(["export", str(combined), str(out)]) == 0
    assert "efficientnet_lite0 + efficientnet_lite0" in capsys.readouterr().out
    crops = load_crops(list(load_dataset(learnable.out).crop_files[:6]))
    exported, cached = load_detector(out), load_detector(combined, device="cpu")
    assert exported.card == cached.card
    from fakefinder._files import sha256_file
    from fakefinder.models.onnxcache import cached_path
    from fakefinder.models.onnxfile import load_onnx

    assert load_onnx(cached_path(sha256_file(combined))).card == cached.card  # the cached export passes its checks
    np.testing.assert_allclose(exported.model.face_logits(crops), cached.model.face_logits(crops), atol=1e-5)


def test_a_verdict_of_the_combined_model_is_the_same_on_both_runtimes(combined, collection):
    video = collection.out / f"{collection.videos[0].name}.mp4"
    onnx = load_detector(combined, device="cpu").predict_video(video)
    torch = load_detector(combined, device="cpu", runtime="torch")
    at_fp32 = tuple(dataclasses.replace(m, card=dataclasses.replace(m.card, precision="fp32"))
                    for m in torch.model.members)  # as ONNX Runtime computes (a card's auto is bf16 on some CPUs)
    torch = dataclasses.replace(torch, model=dataclasses.replace(torch.model, members=at_fp32)).predict_video(video)
    assert onnx.p_fake == pytest.approx(torch.p_fake, abs=1e-3) and onnx.error is None


def test_what_cannot_be_combined_is_refused_in_one_line(members, combined, learnable, tmp_path):
    from fakefinder.inference.recalibration import combine

    a, b, _ = members
    for given, reason in [((a,), "at least two"), ((a, combined), "single detector"), ((a, b), "--split")]:
        with pytest.raises(UsageError) as caught:
            combine(given, learnable.out, tmp_path / "x.safetensors")
        assert reason in str(caught.value) and "\n" not in str(caught.value)
    wide = train(learnable.out, TrainSettings(input_size=160), out=tmp_path / "wide.safetensors").model_path
    with pytest.raises(UsageError, match="input_size 160 differs"):
        combine((a, wide), learnable.out, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_a_combined_card_that_nests_or_lies_is_refused_in_one_line(combined, tmp_path):
    from safetensors.torch import load_file, save_file

    header = read_card(combined).to_json()
    tensors = load_file(str(combined))
    nested = dict(header, members=[header, header["members"][1]])
    few = dict(header, members=header["members"][:1])
    for bad, reason in [(nested, "members[0]"), (few, "members")]:
        path = tmp_path / "bad.safetensors"
        save_file(tensors, str(path), metadata={"fakefinder": json.dumps(bad)})
        with pytest.raises(UsageError, match=reason.replace("[", r"\[")) as caught:
            load_model(path)
        assert "\n" not in str(caught.value)
    deep = header
    for _ in range(5000):  # refused before the nested card is read: no recursion a hostile file could exhaust
        deep = dict(header, members=[deep, header["members"][1]])
    with pytest.raises(UsageError, match=r"members\[0\] is itself a combined model"):
        ModelCard.from_json(deep)
    missing = {k: v for k, v in tensors.items() if not k.startswith("members.1.head.")}
    save_file(missing, str(tmp_path / "cut.safetensors"), metadata={"fakefinder": json.dumps(header)})
    with pytest.raises(UsageError, match="tensor members.1.head.* is missing"):
        load_model(tmp_path / "cut.safetensors")
