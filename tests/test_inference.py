from __future__ import annotations

import csv
import dataclasses
import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from media import astronaut, coffee, write_video
from safetensors.torch import save_file
from sklearn import metrics as sk

from fakefinder import (
    CollectionOptions,
    Compute,
    LoadOptions,
    TrainSettings,
    UsageError,
    load_dataset,
    load_detector,
    train,
)
from fakefinder.data.splits import split_dataset
from fakefinder.inference.evaluation import dataset_logits, evaluate, predict
from fakefinder.metrics import bootstrap_auc
from fakefinder.models.backbones import create_backbone
from fakefinder.models.features import load_crops
from fakefinder.models.modelfile import load_model
from fakefinder.models.strength import cllr, cllr_min
from fakefinder.workflows.study import study

pytestmark = pytest.mark.slow  # every test scores with a trained model, or trains one


@pytest.fixture(scope="module")
def model(baseline):
    return baseline


def test_evaluate_matches_scikit_learn_by_hand(model, prepared):
    """On an unseen dataset (all five manipulations), frame and video metrics equal sklearn's on the calibrated
    scores, judged at the model's own threshold; log loss before calibration is reported beside."""
    result = evaluate(model.model_path, prepared.out, by="method")
    data = load_dataset(prepared.out)
    detector = load_detector(model.model_path)
    z = dataset_logits(detector, data)
    p = detector.card.calibration.apply(z)
    t = detector.threshold
    y = data.labels
    frame = result.whole.evaluation.frame
    assert frame.auc == pytest.approx(sk.roc_auc_score(y, p)) and frame.n == len(y) == 30
    assert frame.log_loss == pytest.approx(sk.log_loss(y, p))
    assert frame.ap == pytest.approx(sk.average_precision_score(y, p))
    assert frame.accuracy == pytest.approx(sk.accuracy_score(y, p >= t))
    assert result.uncalibrated.frame.log_loss == pytest.approx(sk.log_loss(y, 1 / (1 + np.exp(-z))))
    videos = sorted(set(data.video_ids))
    vp = np.array([p[data.video_ids == v].mean() for v in videos])
    vy = np.array([y[data.video_ids == v][0] for v in videos])
    assert result.whole.evaluation.video.auc == pytest.approx(sk.roc_auc_score(vy, vp))
    assert result.whole.evaluation.video.log_loss == pytest.approx(sk.log_loss(vy, vp))
    # The cost of the card's likelihood ratios over these videos, and after the best recalibration
    strength_map = detector.card.strength.map
    assert result.whole.cost.cllr == pytest.approx(cllr(strength_map.likelihood_ratios(vp), vy))
    assert result.whole.cost.cllr_min == pytest.approx(cllr_min(vp, vy))
    assert result.to_dict()["cllr"] == result.whole.cost.cllr and "Cllr_min" in result.summary()
    assert result.by["swap"].cost.cllr is not None and result.to_dict()["by"]["swap"]["cllr_min"] is not None
    # The AUC's 95% interval resamples the videos' sources (here one video each), each method's with its own videos
    sources = data.sources(videos)
    assert (result.whole.interval.low, result.whole.interval.high) == pytest.approx(
        bootstrap_auc(vy, vp, groups=sources, seed=detector.card.seed))
    assert result.whole.interval.sources == result.to_dict()["video"]["sources"] == len(set(sources))
    assert f"{result.whole.interval.shown()} AP" in result.summary()
    assert result.to_dict()["by"]["swap"]["video"]["auc_low"] == result.by["swap"].interval.low is not None
    (tn, fp), (fn, tp) = result.whole.evaluation.confusion
    assert (tn, fp, fn, tp) == tuple(sk.confusion_matrix(vy, vp >= t).ravel())
    assert set(result.by) == {"swap", "resample", "warp", "colour", "mouth"}  # each method's fakes and all reals
    swap = np.isin(vy, [0]) | np.isin(videos, list(set(data.video_ids[data.methods == "swap"])))
    assert result.by["swap"].evaluation.video.n == 6 and result.by["swap"].evaluation.video.auc == pytest.approx(
        sk.roc_auc_score(vy[swap], vp[swap]))
    # The rule in words: with 3 real and 3 fake validation videos, no error rates are stated
    assert f"verdict: {model.trained.model.card.verdict.meaning()}" in result.summary()
    assert "too few videos" in result.summary() and "calibration: log loss" in result.summary()
    # The default path (ONNX Runtime at fp32) agrees with the live PyTorch model at fp32 on the crops themselves
    # (the cached-feature path, PyTorch at the card's precision, is `--runtime torch`'s: the test below).
    live = load_model(model.model_path)
    live = dataclasses.replace(live, card=dataclasses.replace(live.card, precision="fp32"))
    assert np.abs(live.predict_faces(load_crops(data.crop_files)) - p).max() < 1e-3


def test_evaluate_test_part_of_the_run_reproduces_training_metrics(model, learnable, tracking, tmp_path):
    out = tmp_path / "eval.json"
    # Training measured its test part on PyTorch at the card's precision: --runtime torch reproduces it to the
    # last digit (the default, ONNX Runtime at fp32, within the runtimes' difference: tests/test_onnx.py)
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "evaluate", model.run_id, str(learnable.out),
                           "--split", "test", "--tracking-uri", tracking, "--json", str(out), "--runtime", "torch"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    assert {"frame", "video", "confusion", "no_face_videos"} <= set(got)
    assert got["video"]["auc"] == pytest.approx(model.test.video.auc)
    assert got["frame"]["log_loss"] == pytest.approx(model.test.frame.log_loss, abs=1e-9)
    assert got["video"]["n"] == model.test.video.n
    # the AUC's interval over the test videos' sources, as the card states it: a fake and its original drawn together
    evidence = model.trained.model.card.evidence
    assert [got["video"]["auc_low"], got["video"]["auc_high"]] == pytest.approx(
        [evidence.test_auc_low, evidence.test_auc_high])
    assert got["video"]["auc_low"] <= got["video"]["auc"] <= got["video"]["auc_high"]
    assert 1 < got["video"]["sources"] < got["video"]["n"]


def test_predict_real_fake_image_faceless_and_broken_inputs(model, learnable, tmp_path):
    data = load_dataset(learnable.out)
    split = split_dataset(data, seed=0)
    test_videos = sorted({v for v, p in zip(data.video_ids, split.parts) if p == "test"})
    labels = {v: int(data.labels[data.video_ids == v][0]) for v in test_videos}
    real = next(v for v in test_videos if labels[v] == 0)
    fake = next(v for v in test_videos if labels[v] == 1)
    src = learnable.out.parent / "swap"
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.imread(str(data.crop_files[0])))
    write_video(tmp_path / "noface.mp4", coffee(), seconds=2)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    inputs = [src / f"{real}.mp4", src / f"{fake}.mp4", tmp_path / "photo.png", tmp_path / "noface.mp4",
              tmp_path / "broken.mp4", tmp_path / "missing.mp4"]
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(model.model_path), *map(str, inputs),
                           "--json", "-", "--csv", str(tmp_path / "verdicts.csv"), "--quiet", "--device", "auto"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = {r["input"]: r for r in json.loads(proc.stdout)}
    r, f = out[str(inputs[0])], out[str(inputs[1])]
    assert f["p_fake"] > r["p_fake"] and f["decision"] == "FAKE" and r["decision"] == "REAL"  # the threshold's
    scored = sorted((row for row in out.values() if row["p_fake"] is not None), key=lambda row: row["p_fake"])
    assert len(scored) == 3
    for row in scored:  # every scored verdict states the strength of its evidence, within what its data can show
        s = row["strength"]
        assert set(s) >= {"likelihood_ratio", "bounded", "real_percentile", "fake_percentile", "support", "n_real",
                          "n_fake", "fakes", "sentence", "colour"} and s["fakes"] == "real"
        assert 1 / (s["n_fake"] + 2) <= s["likelihood_ratio"] <= s["n_real"] + 2
        assert 0 <= s["real_percentile"] <= 1 and 0 <= s["fake_percentile"] <= 1
        assert row["decision"] in ("FAKE", "REAL") and row["conclusive_lr"] == 3
        if 1 / 3 < s["likelihood_ratio"] < 3:  # the headline never claims more than the evidence
            assert row["verdict"] == "INCONCLUSIVE"
        else:
            assert row["verdict"] == ("FAKE" if s["likelihood_ratio"] >= 3 else "REAL")
        assert s["sentence"].startswith("Scores like this are ") and s["support"] in s["sentence"]
    ratios = [row["strength"]["likelihood_ratio"] for row in scored]
    assert ratios == sorted(ratios) and ratios[-1] > ratios[0]  # the LR rises with P(fake)
    assert r["faces"] == 4 and len(r["frames"]) == 4  # 2 s at the model's 2 fps
    face = r["frames"][1]["faces"][0]
    assert r["frames"][1]["t"] == pytest.approx(0.5, abs=0.1)  # within the card's sampling tolerance
    assert len(face["box"]) == 4 and 0 <= face["p_fake"] <= 1
    photo = out[str(inputs[2])]
    assert photo["faces"] == 1 and photo["verdict"] in ("REAL", "FAKE", "INCONCLUSIVE") and photo["error"] is None
    faceless = out[str(inputs[3])]
    assert faceless["p_fake"] is None and faceless["verdict"] is None and faceless["error"] is None
    assert faceless["strength"] is None and faceless["strength_note"] == "no score: no face found"
    assert faceless["decision"] is None
    assert out[str(inputs[4])]["error"].startswith("cannot open as video")
    assert out[str(inputs[5])]["error"] == "file not found"
    assert "no face found" in proc.stderr  # the human-readable table, and what its verdicts mean
    assert "strength of evidence" in proc.stderr and "\nstrength: FAKE at likelihood ratio >= 3" in proc.stderr
    assert f"\ndecision: {r['rule']}\n" in proc.stderr and "\nmodel: swap-efficientnet_lite0 was trained" in proc.stderr
    for row in out.values():
        assert set(row) >= {"input", "p_fake", "verdict", "decision", "strength", "strength_note", "error", "faces",
                            "frames", "tracks", "threshold", "rule", "inconclusive_band"}
    assert [t["track"] for t in r["tracks"]] == [0] and r["tracks"][0]["faces"] == 4  # one person, one track
    with open(tmp_path / "verdicts.csv", newline="") as f:  # the same verdicts, one row per input
        table = {row["input"]: row for row in csv.DictReader(f)}
    assert list(table) == [str(i) for i in inputs]
    for name, row in table.items():
        assert row["verdict"] == (out[name]["verdict"] or "") and row["error"] == (out[name]["error"] or "")
        assert row["p_fake"] == ("" if out[name]["p_fake"] is None else str(out[name]["p_fake"]))
        assert row["decision"] == (out[name]["decision"] or "")
        strength = out[name]["strength"] or {}
        assert row["likelihood_ratio"] == str(strength.get("likelihood_ratio", ""))
        assert row["support"] == strength.get("support", "")
        assert int(row["faces"]) == out[name]["faces"] and int(row["frames_used"]) == len(out[name]["frames"])


def test_predict_fails_when_every_input_failed(model, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(model.model_path),
                           str(tmp_path / "broken.mp4"), str(tmp_path / "missing.mp4"), "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "file not found" in proc.stdout and "cannot open as video" in proc.stdout


def test_evaluate_and_predict_take_device_auto(model, learnable, collection):
    """train's default device works where a model is used, too (it crashed with a traceback)."""
    video = collection.out / f"{collection.videos[0].name}.mp4"
    for command in (["evaluate", str(model.model_path), str(learnable.out)],
                    ["predict", str(model.model_path), str(video)]):
        proc = subprocess.run([sys.executable, "-m", "fakefinder", *command, "--device", "auto", "--quiet"],
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_study_on_two_prepared_collections(learnable, prepared, tracking, tmp_path):
    result = study(learnable.out, prepared.out, out=tmp_path / "study", tracking=tracking,
                   config=TrainSettings(epochs=5))
    steps = [r.step for r in result.rows]
    assert steps == ["1 baseline", "1 cross-dataset", "2 retrained", "4 retrained, back"]
    assert [r.step for r in result.leak] == ["leak: frame split", "leak: source split"]
    cross = result.rows[1].evaluation.video
    assert cross.n == 10  # all of B, never trained on
    table = (tmp_path / "study" / "study.md").read_text()
    assert table.count("\n| ") == 6 + 1 and "Leak check" in table
    assert result.report.is_file() and "cross-dataset study" in result.report.read_text()


def test_a_model_whose_base_weights_moved_says_so_and_takes_their_new_place(prepared, collection, tracking, tmp_path):
    def vgg16_file(path, seed):
        state = create_backbone("vgg16", weights="none", seed=seed).module.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path

    weights = vgg16_file(tmp_path / "vgg16.safetensors", seed=5)
    config = TrainSettings.reference(weights=str(weights), input_size=64, pool="avg", epochs=1, trainable_blocks=0)
    result = train(prepared.out, config, out=tmp_path / "models", tracking=tracking)
    video = collection.out / f"{collection.videos[0].name}.mp4"
    torch_run = LoadOptions(runtime="torch")  # PyTorch reads the base from its file; the ONNX export carries it
    before = predict(result.model_path, [video], load=torch_run)[0]
    exported = predict(result.model_path, [video])[0]  # the default: ONNX Runtime, its export now cached
    moved = weights.rename(tmp_path / "elsewhere.safetensors")

    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(result.model_path), str(video),
                           "--runtime", "torch"], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(weights) in proc.stderr and "--base-weights" in proc.stderr
    assert predict(result.model_path, [video])[0].p_fake == exported.p_fake  # the cached export needs no file
    after = predict(result.model_path, [video], load=dataclasses.replace(torch_run, base_weights=moved))[0]
    assert after.p_fake == before.p_fake is not None
    assert evaluate(result.model_path, prepared.out,
                    load=dataclasses.replace(torch_run, base_weights=moved)).whole.evaluation.video.n == 10
    with pytest.raises(UsageError, match="trained on vgg16 weights"):  # another file is not the base it learnt on
        predict(result.model_path, [video], load=dataclasses.replace(
            torch_run, base_weights=vgg16_file(tmp_path / "other.safetensors", seed=6)))


def test_predict_imports_only_what_a_verdict_needs(model, collection):
    """A cold `predict` pays for every import: not for the tables `prepare` writes (pyarrow), the face tracks'
    solver for a few faces a frame (SciPy), tracking (MLflow) or heatmaps (captum)."""
    clip = next(collection.out.glob("*.mp4"))
    code = ("import sys; from fakefinder._cli import main; code = main(['predict', sys.argv[1], sys.argv[2], "
            "'--quiet']); print(sorted(m for m in ('pyarrow', 'scipy', 'mlflow', 'captum', 'sklearn', 'optuna') "
            "if m in sys.modules), file=sys.stderr); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, str(model.model_path), str(clip)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]"


def test_evaluate_on_several_collections_gives_one_table_of_collections_methods_and_framing(
        model, prepared, collection, tmp_path):
    from fakefinder import PrepareSettings, prepare

    tight = prepare(collection.out, tmp_path / "tight", settings=PrepareSettings(frames=2, margin=0.0),
                    collection=CollectionOptions(dataset="tight"), compute=Compute(processes=1))
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "evaluate", str(model.model_path), str(prepared.out),
                           str(tight.out), "--json", str(tmp_path / "table.json"), "--html",
                           str(tmp_path / "table.html"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert all({"cllr", "cllr_min"} <= set(r) for r in rows) and rows[0]["cllr"] is not None
    methods = ["colour", "mouth", "resample", "swap", "warp"]
    assert [(r["collection"], r["group"]) for r in rows] == [
        (name, group) for name in ("syn", "tight") for group in [None, *methods]]
    alone = evaluate(model.model_path, tight.out, by="method")
    assert rows[6]["video"] == alone.to_dict()["video"] and rows[6]["faces_per_video"] == 2.0  # its interval too
    assert rows[7]["video"]["auc"] == alone.by["colour"].evaluation.video.auc and rows[7]["video"]["n"] == 6
    assert rows[0]["framing"] is None  # framed as the model's training crops
    # said, since a detector scores the framing it knows; the face mesh measures how much tighter, and how to fix it
    assert re.fullmatch(r"margin 0 \(model: 0.3\), face fills 0.[89]\d of a crop \(model: 0.[56]\d\); "
                        r"prepare --margin 0.30 frames it so, as does prepare --like MODEL", rows[6]["framing"])
    table = proc.stdout
    assert "video AUC" in table and "ECE" in table and "as trained" in table and "margin 0 (model: 0.3)" in table
    assert "Cllr" in table and "Cllr_min" in table
    page = (tmp_path / "table.html").read_text()  # the same table for a report
    assert page.count("<tr>") == len(rows) + 1 and f"<td>{rows[6]['framing']}</td>" in page and "<td>tight</td>" in page
    many = subprocess.run([sys.executable, "-m", "fakefinder", "evaluate", str(model.model_path), str(prepared.out),
                           str(tight.out), "--split", "test"], capture_output=True, text=True, timeout=300)
    assert many.returncode == 2 and "--split takes one DATA" in many.stderr


def test_an_image_name_that_is_not_utf8_is_read_like_any_other(model, tmp_path):
    """OpenCV's imread crashes the process (SIGSEGV) on such a name: the batch would be lost. Read in Python, the
    odd name is scored and shown as escapes, and so are the others."""
    import os

    folder = tmp_path / "photos"
    folder.mkdir()
    face = cv2.imencode(".jpg", astronaut())[1].tobytes()
    (folder / os.fsdecode(b"\xff\xfe.jpg")).write_bytes(face)
    (folder / "astronaut.jpg").write_bytes(face)
    (folder / "coffee.jpg").write_bytes(cv2.imencode(".jpg", coffee())[1].tobytes())
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(model.model_path), str(folder),
                           "--json", str(tmp_path / "out.json"), "--csv", str(tmp_path / "out.csv")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    results = {os.path.basename(r["input"]): r for r in json.loads((tmp_path / "out.json").read_text())}
    assert len(results) == 3 and not any(r["error"] for r in results.values()), results
    assert results[os.fsdecode(b"\xff\xfe.jpg")]["p_fake"] == results["astronaut.jpg"]["p_fake"] is not None
    assert "\\xff\\xfe.jpg" in proc.stdout and "\\xff\\xfe.jpg" in (tmp_path / "out.csv").read_text()


def test_prepare_like_a_model_gives_evaluate_the_faces_and_video_scores_of_its_verdicts(model, collection, tmp_path):
    """`prepare --like MODEL` reads a collection as `predict` reads a video for MODEL (its frames and framing, every
    face), and `evaluate` scores a video by the rule `predict` does (the most suspicious face track), so the figures
    it reports are those of the verdicts; a model trained on face crops frames videos by its crops' fill."""
    import pyarrow.parquet as pq

    from fakefinder.data.faces import BlazeFaceDetector
    from fakefinder.data.landmarks import margin_for_fill
    from fakefinder.inference.evaluation import evaluate_collections
    from fakefinder.inference.framing import FRAMING, settings_like
    from fakefinder.models.modelfile import save_model

    def cli(out: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fakefinder", "prepare", str(collection.out), str(tmp_path / out),
                               *args, "--quiet", "--processes", "1"], capture_output=True, text=True, timeout=300)

    trained = model.trained.model.card.prepare
    proc = cli("small", "--like", str(model.model_path), "--size", "160")
    assert proc.returncode == 0, proc.stderr
    small = load_dataset(tmp_path / "small", need_both_classes=False).settings
    assert small == trained.replace(size=160, faces="all")  # a flag given wins
    proc = cli("like", "--like", str(model.model_path))
    assert proc.returncode == 0, proc.stderr
    data = load_dataset(tmp_path / "like", need_both_classes=False)
    assert evaluate_collections(model.model_path, [data.root]).rows[0].framing == ""  # framed as trained
    detector = load_detector(model.model_path)
    ids, _, scores = data.videos(np.arange(len(data)), detector.card.calibration.apply(dataset_logits(detector, data)),
                                 detector.video_rule)
    videos = pq.read_table(data.root / "videos.parquet").to_pydict()
    paths = {v: collection.out / s for v, s in zip(videos["video_id"], videos["source_path"])}
    verdicts = predict(detector, [paths[v] for v in ids])
    assert not [r.error for r in verdicts if r.error] and np.allclose([r.p_fake for r in verdicts], scores, atol=1e-6)
    # Trained on face crops (--detector none): videos are cut by BlazeFace to fill a crop as those crops were filled
    loaded = load_model(model.model_path, device="cpu")
    card = dataclasses.replace(loaded.card, prepare=trained.replace(detector="none"), face_fill=0.8)
    crops = save_model(tmp_path / "crops.safetensors", dataclasses.replace(loaded, card=card))
    like = settings_like(crops)
    assert {k: like[k] for k in FRAMING} == {
        "detector": "blazeface", "margin": round(margin_for_fill(BlazeFaceDetector.MESH_FILL, 0, 0.8), 3),
        "size": trained.size, "align": trained.align}
    assert dataclasses.asdict(load_detector(crops, device="cpu").settings) == like  # what predict and serve read
    unknown = save_model(tmp_path / "unknown.safetensors",
                         dataclasses.replace(loaded, card=dataclasses.replace(card, face_fill=None)))
    proc = cli("never", "--like", str(unknown))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown.safetensors" in proc.stderr
    assert "fill was never measured" in proc.stderr and not (tmp_path / "never").exists()
