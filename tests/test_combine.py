"""`combine`: one model file of several detectors, a face's logit the largest of the members' calibrated logits (or
their mean), calibrated together on held-out videos; it loads, exports and scores as any model file does."""

from __future__ import annotations

import dataclasses
import json
import shutil

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


def members_logits(paths, crops, precision: str | None = None) -> np.ndarray:
    """Each member's calibrated face logits, computed apart from the combined file."""
    nets = [load_model(p) for p in paths]
    if precision:  # whatever the card's (bf16 where the CPU has it)
        nets = [dataclasses.replace(n, card=dataclasses.replace(n.card, precision=precision)) for n in nets]
    return np.array([n.card.calibration.scale * n.face_logits(crops) + n.card.calibration.shift for n in nets])


def test_the_file_carries_each_member_and_scores_the_largest_calibrated_logit(members, combined, learnable):
    a, b, split = members
    card = read_card(combined)
    assert card.members == (read_card(a), read_card(b)) and card.train["combine"] == "max"
    model = load_model(combined)
    data = load_dataset(learnable.out)
    crops = load_crops(list(data.crop_files[:12]))
    np.testing.assert_allclose(model.face_logits(crops), members_logits((a, b), crops).max(0), atol=1e-6)
    # ONNX Runtime, the default runtime of verdicts, runs both bases in one graph at fp32 and gives the same logits
    onnx = load_detector(combined, device="cpu")
    assert type(onnx.model).__name__ == "OnnxModel"
    np.testing.assert_allclose(onnx.model.face_logits(crops), members_logits((a, b), crops, "fp32").max(0),
                               atol=LOGIT_TOL, rtol=LOGIT_TOL)


def test_the_mean_rule_scores_the_mean_calibrated_logit_on_both_runtimes(members, learnable, tmp_path):
    """`--rule mean`, for members of one recipe trained with other seeds: their calibrated logits averaged."""
    a, b, split = members
    out = tmp_path / "mean.safetensors"
    assert main(["combine", str(a), str(b), "--data", str(learnable.out), "--split", str(split), "--out", str(out),
                 "--rule", "mean", "--quiet", "--device", "cpu"]) == 0
    card = read_card(out)
    assert card.combine_rule == "mean" and "the mean of their calibrated logits" in card.summary()
    crops = load_crops(list(load_dataset(learnable.out).crop_files[:12]))
    separate = members_logits((a, b), crops)
    assert np.abs(separate[0] - separate[1]).max() > 0.1  # the mean differs from either member and from the max
    np.testing.assert_allclose(load_model(out).face_logits(crops), separate.mean(0), atol=1e-6)
    onnx = load_detector(out, device="cpu")
    np.testing.assert_allclose(onnx.model.face_logits(crops), members_logits((a, b), crops, "fp32").mean(0),
                               atol=LOGIT_TOL, rtol=LOGIT_TOL)


def test_calibrated_on_the_validation_part_and_measured_on_the_test_part(members, combined, learnable, tmp_path):
    from fakefinder.inference.recalibration import combine_scored

    a, b, split = members
    card = read_card(combined)
    measured = json.loads(combined.with_suffix(".json").read_text())
    data = load_dataset(learnable.out)
    parts = load_split(split, data).parts[:len(data)]
    again, logits, scored_parts = combine_scored([a, b], data, tmp_path / "again.safetensors", split=split)
    assert again.test_auc == pytest.approx(measured["test_auc"]) and np.array_equal(scored_parts, parts)
    assert np.isnan(logits[parts == "train"]).all() and np.isfinite(logits[parts != "train"]).all()  # not scored
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

    a, b, split = members
    for given, reason in [((a,), "2 to 8 model files, not 1"), ((a,) * 9, "not 9"), ((a, combined), "single detector"),
                          ((a, b), "--split")]:
        with pytest.raises(UsageError) as caught:
            combine(given, learnable.out, tmp_path / "x.safetensors")
        assert reason in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UsageError, match=r"no combination rule 'median' \(choose from max, mean\)"):
        combine((a, b), learnable.out, tmp_path / "x.safetensors", split=split, rule="median")
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
    unknown = dict(header, train=dict(header["train"], combine="median"))
    for bad, reason in [(nested, "members[0]"), (few, "members"), (unknown, "train.combine must be one of max, mean")]:
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


# frozen members: seconds, not minutes; the supervised member's own epochs, so that the card shows them reach it
TINY_BOTH = TrainSettings.preset(fakes="both").replace(trainable_blocks=0, supervised_epochs=3)


def test_train_fakes_both_trains_a_self_blended_and_a_supervised_member_and_combines_them(learnable, tmp_path):
    """`train --fakes both`: both members on one split, each its own run under the combined one, the file
    calibrated on the split's validation part and measured on its test part."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(learnable.out, TINY_BOTH, tracking=store, out=tmp_path / "models")
    card = read_card(result.model_path)
    assert [m.train["fakes"] for m in card.members] == ["self-blended", "real"]
    assert [m.train["epochs"] for m in card.members] == ["6", "3"]  # --epochs, and --supervised-epochs for its member
    assert [m.train["pair_batches"] for m in card.members] == ["True", "True"]  # the preset's, on each card
    assert [m.train["pair_augment"] for m in card.members] == ["apart", "alike"]  # --supervised-pair-augment's
    assert card.run_id == result.run_id and card.train["combine"] == "max"
    data = load_dataset(learnable.out)
    parts = load_split(result.split_path, data).parts[:len(data)]
    assert card.calibrated_on.val_videos == len(set(data.video_ids[parts == "val"]))
    assert result.test.video.n == card.strength.test_videos == len(set(data.video_ids[parts == "test"]))
    assert card.evidence.test_auc == pytest.approx(result.test.video.auc)
    client = mlflow.MlflowClient(tracking_uri=store)
    runs = {r.info.run_id: r for r in client.search_runs(["1"])}
    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert sorted(r.info.run_id for r in children) == sorted(m.run_id for m in result.members)
    assert all(r.data.params["split_file"] == str(result.split_path) for r in children)
    parent = runs[result.run_id]
    assert parent.info.status == "FINISHED" and parent.data.params["fakes"] == "both"
    assert parent.data.metrics["test_video_auc"] == pytest.approx(result.test.video.auc)
    assert "model" in [a.path for a in client.list_artifacts(result.run_id)]
    page = tmp_path / "report.html"  # its report: the combined model's ROC curves and mistakes on val and test
    assert main(["report", result.run_id, "--tracking-uri", store, "--out", str(page)]) == 0
    assert "It combines 2 detectors" in page.read_text() and "Hardest videos" in page.read_text()
    assert not list((tmp_path / "models" / ".checkpoints").glob("*.combined.json"))  # done: nothing to resume


def test_a_combined_run_killed_in_its_second_member_resumes_without_training_the_first_again(learnable, tmp_path):
    import mlflow

    store, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "models"

    def ctrl_c_once_the_first_member_is_done(event):
        if list((out / ".checkpoints").glob("*.combined.json")):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(learnable.out, TINY_BOTH, tracking=store, out=out, progress=ctrl_c_once_the_first_member_is_done)
    state = json.loads(next((out / ".checkpoints").glob("*.combined.json")).read_text())
    first = state["members"]["self-blended"]
    written = (out / f"{first['run_id']}.safetensors").stat().st_mtime_ns
    client = mlflow.MlflowClient(tracking_uri=store)
    assert client.get_run(state["run_id"]).info.status == "KILLED"
    assert main(["train", str(learnable.out), "--fakes", "both", "--trainable-blocks", "0", "--supervised-epochs", "3",
                 "--resume", "--out", str(out), "--tracking-uri", store, "--json", str(tmp_path / "run.json"),
                 "--quiet"]) == 0  # TINY_BOTH on the command line: the run it resumes
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["run_id"] == state["run_id"] and client.get_run(state["run_id"]).info.status == "FINISHED"
    assert result["members"][0] == {"kind": "self-blended", "run_id": first["run_id"], "model_path": first["model"],
                                    "seconds": None}
    assert (out / f"{first['run_id']}.safetensors").stat().st_mtime_ns == written  # not trained again
    assert result["split"] == state["split"] and read_card(result["model_path"]).members
    assert result["test"]["video"]["n"] == result["test_videos"]


def test_what_a_combined_run_cannot_do_is_refused_in_one_line(learnable, tmp_path):
    from fakefinder import fit_detector
    from fakefinder.errors import OptionError
    from fakefinder.training import experiment

    data = load_dataset(learnable.out)
    (tmp_path / "src" / "real").mkdir(parents=True)
    for i, crop in enumerate(data.crop_files[data.labels == 0][:4]):
        shutil.copy(crop, tmp_path / "src" / "real" / f"{i}.png")
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "reals"), "--detector", "none", "--quiet"]) == 0
    with pytest.raises(UsageError, match="no fakes: --fakes both trains its supervised member"):
        train(tmp_path / "reals", TINY_BOTH, out=tmp_path / "models")
    with pytest.raises(OptionError,
                       match="both combined trains two detectors and combines them, which `fakefinder train` does"):
        fit_detector(learnable.out, TINY_BOTH)
    with pytest.raises(OptionError, match="it cannot leave the test part alone"):
        train(learnable.out, TINY_BOTH, evaluate_test=False)
    with pytest.raises(OptionError, match="this trains one"):  # what a tuning trial calls
        experiment.train(learnable.out, TINY_BOTH)


def test_an_ensemble_trains_one_recipe_with_each_seed_and_scores_the_mean_of_their_logits(learnable, tmp_path):
    """`train --ensemble 2`: the recipe with seeds SEED and SEED+1 on one split, each its own run, the file
    calibrated and measured on the crops they learn from (reals and their pseudo-fakes for --fakes self-blended)."""
    from fakefinder import fit_detector
    from fakefinder.errors import OptionError
    from fakefinder.training.core import training_data

    settings = TrainSettings.preset(fakes="self-blended", trainable_blocks=0, seed=3, ensemble=2)
    result = train(learnable.out, settings, out=tmp_path / "models")
    card = read_card(result.model_path)
    assert [m.kind for m in result.members] == ["seed3", "seed4"] and [m.seed for m in card.members] == [3, 4]
    assert card.combine_rule == "mean" and {m.train["fakes"] for m in card.members} == {"self-blended"}
    assert "the mean of their calibrated logits" in card.summary()
    scored = training_data(learnable.out, settings.replace(ensemble=1))  # the first member's: its pseudo-fakes
    parts = load_split(result.split_path, scored).parts[:len(scored)]
    val = parts == "val"
    assert (scored.labels[val] == 1).any() and (scored.labels[val] == 0).any()
    assert card.calibrated_on.val_videos == len(set(scored.video_ids[val]))
    assert result.test.video.n == len(set(scored.video_ids[parts == "test"]))
    crops = load_crops(list(scored.crop_files[val][:8]))
    np.testing.assert_allclose(load_model(result.model_path).face_logits(crops),
                               members_logits([m.model_path for m in result.members], crops).mean(0), atol=1e-6)
    with pytest.raises(OptionError, match="ensemble 2 trains 2 detectors and combines them"):
        fit_detector(learnable.out, settings)
    with pytest.raises(OptionError, match="--fakes both --both combined is two kinds of detector already"):
        TrainSettings.preset(fakes="both", ensemble=2)
