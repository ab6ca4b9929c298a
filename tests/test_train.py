from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fakefinder import Compute, TrainSettings, fit_detector, load_dataset, train
from fakefinder.data.manifest import features_dir
from fakefinder.data.splits import load_split, split_dataset
from fakefinder.hardware import resolve_precision
from fakefinder.models.features import FeatureCache, load_crops
from fakefinder.models.modelfile import load_model, read_card, save_model
from fakefinder.training.finetune import TIMING_KEYS

pytestmark = pytest.mark.slow  # every test trains, or reads the trained baseline

METRIC_KEYS = {"accuracy", "auc", "ap", "log_loss", "eer", "n", "ece"}


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakefinder", *map(str, args)], capture_output=True, text=True)


def run_artifacts(tracking: str, run_id: str, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking)
    local = client.download_artifacts(run_id, "", str(tmp_path))
    return client.get_run(run_id), client, local


def test_frozen_efficientnet_learns_held_out_fakes(baseline):
    assert baseline.test.video.auc >= 0.9 and baseline.val.video.auc >= 0.9
    assert baseline.test.video.n == 6 and baseline.test.frame.n == 24  # 3 source groups of 2 videos, 4 crops each
    assert baseline.test.video.log_loss < 0.5
    assert baseline.trained.split.by == "source" and baseline.model_path.is_file()


def test_same_command_gives_the_same_numbers(learnable, tracking, baseline):
    again = train(learnable.out, TrainSettings(), tracking=tracking)
    assert again.history.epochs[0].keys() == baseline.history.epochs[0].keys()
    strip = [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in again.history.epochs]
    assert strip == [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in baseline.history.epochs]
    assert again.test.to_dict() == baseline.test.to_dict() and again.run_id != baseline.run_id


def test_the_core_trains_without_any_tracking_and_leaves_no_global_state_behind(learnable, tmp_path, monkeypatch):
    """fit_detector needs no MLflow and no Optuna, reports progress to a callback, prints nothing, and restores
    every process-global setting it touches (seeds, thread counts, socket timeout, environment)."""
    import logging
    import os
    import socket

    # Libraries set environment variables when first imported (OpenCV, TorchInductor): a first run imports them.
    fit_detector(learnable.out, TrainSettings(epochs=1), compute=Compute(cache_dir=tmp_path / "warm-up"))
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    before = (torch.get_num_threads(), socket.getdefaulttimeout(), dict(os.environ),
              logging.getLogger("mlflow").level, np.random.get_state()[1][:4].tolist())
    events, loaded = [], set(sys.modules)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # where a default tracking store would appear
    trained = fit_detector(learnable.out, TrainSettings(epochs=3), progress=events.append,
                           compute=Compute(cache_dir=tmp_path / "cache"))
    assert torch.equal(torch.rand(3), expected_next)  # the global torch RNG did not move
    after = (torch.get_num_threads(), socket.getdefaulttimeout(), dict(os.environ),
             logging.getLogger("mlflow").level, np.random.get_state()[1][:4].tolist())
    assert after == before
    assert list(cwd.iterdir()) == []  # nothing tracked, nothing written beside the caller
    assert not {m.split(".")[0] for m in set(sys.modules) - loaded} & {"mlflow", "optuna"}
    assert trained.history.completed == 3 and trained.test is not None and trained.model.card.run_id == ""
    stages = {e.stage for e in events}
    assert {"features", "head", "head epochs"} <= stages
    epochs = [e for e in events if e.stage == "head epochs"]
    assert [e.done for e in epochs] == [1, 2, 3] and all("train_loss" in e.info for e in epochs)


def test_core_result_is_what_train_records(learnable, tracking, baseline):
    core = fit_detector(learnable.out, TrainSettings())
    assert core.test.to_dict() == baseline.test.to_dict()
    assert core.model.card.verdict == baseline.trained.model.card.verdict


def test_feature_cache_means_zero_backbone_passes_on_reuse(learnable, tmp_path):
    n = pq.read_metadata(learnable.manifest_path).num_rows
    first = train(learnable.out, TrainSettings(epochs=2), compute=Compute(cache_dir=tmp_path))
    second = train(learnable.out, TrainSettings(epochs=2, n_neurons=64, lr=1e-4), compute=Compute(cache_dir=tmp_path))
    flat = train(learnable.out, TrainSettings(epochs=1, pool="flatten"), compute=Compute(cache_dir=tmp_path))
    assert (first.backbone_images, second.backbone_images, flat.backbone_images) == (n, 0, n)
    assert len(list(tmp_path.iterdir())) == 2  # one cache per (backbone key, pooling)


def test_run_records_flags_curves_metrics_and_artifacts(baseline, tracking, tmp_path):
    run, client, local = run_artifacts(tracking, baseline.run_id, tmp_path)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["n_layers"] == "1" and params["lr"] == "0.001" and params["backbone"] == "efficientnet_lite0"
    assert len(client.get_metric_history(baseline.run_id, "val_loss")) == baseline.history.completed
    assert metrics["epochs_completed"] == baseline.history.completed and metrics["wall_seconds"] > 0
    phases = {k: v for k, v in metrics.items() if k.startswith("seconds_")}  # where the wall time went: frozen base
    assert phases.keys() == {"seconds_start", "seconds_head", "seconds_calibration"}
    assert sum(phases.values()) <= metrics["wall_seconds"] < sum(phases.values()) + 1
    assert {f"seconds_{k}": v for k, v in baseline.to_json()["phases"].items()} == pytest.approx(phases)  # --json
    assert metrics["test_video_auc"] == pytest.approx(baseline.test.video.auc)
    assert metrics["threshold"] == pytest.approx(baseline.trained.model.card.verdict.threshold)
    assert "val_frame_log_loss_uncalibrated" in metrics and "test_video_ece" in metrics
    assert {"fakefinder.manifest_digest", "fakefinder.git_commit"} <= set(tags)
    assert tags["fakefinder.leaky_split"] == "False" and params["device"] == "cpu"  # the device that ran, not auto
    files = {p.name for p in Path(local).rglob("*") if p.is_file()}
    assert {"history.csv", "learning_curves.png", "model_summary.txt", "split.json", "metrics.json",
            "predictions.parquet", f"{baseline.run_id}.safetensors"} <= files
    summary = (tmp_path / "model_summary.txt").read_text()
    assert "efficientnet_lite0" in summary and "head parameters: 328,193" in summary  # 1280*256+256 + 256+1
    from sklearn.metrics import roc_auc_score

    from fakefinder.metrics import video_scores

    table = pq.read_table(next(Path(local).rglob("predictions.parquet"))).to_pydict()
    test = np.array(table["part"]) == "test"  # its videos scored by their tracks, as training scored them
    _, vy, vp = video_scores(np.array(table["video_id"])[test], np.array(table["label"])[test],
                             np.array(table["p_fake"])[test], tracks=np.array(table["track"])[test])
    assert roc_auc_score(vy, vp) == pytest.approx(baseline.test.video.auc)
    assert "calibration: temperature" in summary and baseline.trained.model.card.verdict.meaning() in summary


def test_early_stopping_restores_the_best_epoch(learnable):
    config = TrainSettings(optimizer="adam", lr=3e-2, n_neurons=512, epochs=60, patience=3, balance="none",
                           schedule="constant", warmup=0.0)
    trained = fit_detector(learnable.out, config)
    history = trained.history
    assert history.completed < 60 and history.best_epoch == history.completed - 3
    # The saved head on the cached validation features gives the best epoch's val loss exactly.
    val = trained.part_rows("val")
    model = trained.model
    table = FeatureCache(features_dir(learnable.out), model.backbone, "avg",
                         precision=model.card.precision).features(list(trained.dataset.crop_files))
    with torch.no_grad():
        p = torch.sigmoid(model.head(torch.from_numpy(table.take(val)))).double().numpy()
    y = trained.dataset.labels[val]
    q = np.clip(p, 1e-7, 1 - 1e-7)
    loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    assert loss == pytest.approx(history.epochs[history.best_epoch - 1]["val_loss"], abs=1e-6)
    assert min(e["val_loss"] for e in history.epochs) == pytest.approx(loss, abs=1e-6)


def test_patience_zero_means_no_early_stopping(learnable):
    trained = fit_detector(learnable.out, TrainSettings(epochs=6, patience=0, lr=3e-2, optimizer="adam"))
    assert trained.history.completed == 6 and trained.history.best_epoch == 6


def test_test_part_never_influences_training(learnable, tracking, baseline, tmp_path):
    """Flip every test label: training history, validation metrics, calibration and threshold stay identical;
    test metrics change."""
    _, _, local = run_artifacts(tracking, baseline.run_id, tmp_path / "artifacts")
    data = tmp_path / "flipped"
    shutil.copytree(learnable.out, data, ignore=shutil.ignore_patterns("models"))
    split = load_split(tmp_path / "artifacts" / "split.json", load_dataset(data))
    table = pq.read_table(data / "manifest.parquet").to_pylist()
    for row, part in zip(table, split.parts):
        if part == "test":
            row["label"] = 1 - row["label"]
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(data / "manifest.parquet")),
                   data / "manifest.parquet")
    flipped = fit_detector(data, TrainSettings(), split_file=tmp_path / "artifacts" / "split.json")
    drop = TIMING_KEYS
    assert [{k: v for k, v in e.items() if k not in drop} for e in flipped.history.epochs] == [
        {k: v for k, v in e.items() if k not in drop} for e in baseline.history.epochs]
    assert flipped.val.to_dict() == baseline.val.to_dict()
    assert flipped.model.card.calibration == baseline.trained.model.card.calibration
    assert flipped.model.card.verdict == baseline.trained.model.card.verdict
    assert flipped.test.video.auc <= 0.1 < baseline.test.video.auc
    # The strength-of-evidence map is fitted on validation videos alone; only its test Cllr sees the flip
    flipped_strength, strength = flipped.model.card.strength, baseline.trained.model.card.strength
    assert flipped_strength.map == strength.map and flipped_strength.test_cllr > strength.test_cllr


def test_frame_split_is_flagged_leaky(learnable):
    result = train(learnable.out, TrainSettings(split="frame", epochs=2))
    assert result.to_json()["leaky_split"] is True and "LEAKY" in result.summary()


def test_model_file_round_trip_and_card(baseline, learnable, tmp_path):
    card = read_card(baseline.model_path)
    assert card.base.backbone == "efficientnet_lite0" and card.base.included is False
    assert card.prepare.fps == 2 and card.head.in_features == 1280 and card.head.pool == "avg"
    assert card.calibration.method == "temperature" and card.verdict.rule == "eer"
    assert card.data_digest == load_dataset(learnable.out).manifest_digest and card.run_id == baseline.run_id
    names = pq.read_table(learnable.manifest_path)["crop_path"].to_pylist()[:16]
    crops = load_crops([learnable.out / r for r in names])
    model = load_model(baseline.model_path)
    p = model.predict_faces(crops)
    save_model(tmp_path / "copy.safetensors", model)
    assert np.array_equal(load_model(tmp_path / "copy.safetensors").predict_faces(crops), p)
    assert p.shape == (16,) and ((p >= 0) & (p <= 1)).all()


def test_reference_preset_runs_vgg16_trained_whole_end_to_end(prepared, tracking, tmp_path):
    """The study's recipe: VGG16 at 150 px on 0-1 pixels, Flatten, Dense(256), RMSprop 2e-5, its base not
    frozen, Keras' augmentation, verdict at 0.5 (shortened to one epoch here)."""
    proc = cli("train", prepared.out, "--preset", "reference", "--weights", "none", "--epochs", "1",
               "--tracking-uri", tracking, "--out", tmp_path, "--json", "-", "--quiet", "--loader-processes", "0")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"run_id", "model_path", "val", "test"} <= set(out)
    for part in ("val", "test"):
        for level in ("frame", "video"):
            assert set(out[part][level]) == METRIC_KEYS
    card = read_card(out["model_path"])
    assert (card.base.backbone, card.base.input_size, card.base.normalization, card.base.weights,
            card.base.included) == ("vgg16", 150, "rescale", "none", True)
    assert card.head.pool == "flatten" and (card.head.in_features, card.head.n_layers, card.head.n_neurons) == (
        8192, 1, 256)
    assert card.train["lr"] == "2e-05" and card.train["batch_size"] == "10" and card.train["optimizer"] == "rmsprop"
    assert card.train["trainable_blocks"] == "all" and card.train["augment"] == "keras"
    assert card.verdict.threshold == 0.5 and card.calibration.method == "none"
    assert out["run_id"] in proc.stderr  # the summary goes to stderr when JSON goes to stdout


@pytest.mark.parametrize("case", ["no_manifest", "one_class", "empty_split", "bad_option", "bad_backbone",
                                  "truncated_manifest", "truncated_crop", "bad_tracking_store"])
def test_unusable_data_exits_2_with_one_line(case, prepared, tracking, tmp_path):
    data, extra, store = tmp_path / "data", [], tracking
    data.mkdir()
    if case == "one_class":
        table = pq.read_table(prepared.manifest_path)
        pq.write_table(table.filter(pa.compute.equal(table["label"], 0)), data / "manifest.parquet")
    elif case == "empty_split":
        data, extra = prepared.out, ["--val", "0.05", "--test", "0.05"]
    elif case == "bad_option":
        data, extra = prepared.out, ["--lr", "-1"]
    elif case == "bad_backbone":
        data, extra = prepared.out, ["--backbone", "resnet50"]
    elif case == "truncated_manifest":
        (data / "manifest.parquet").write_bytes(prepared.manifest_path.read_bytes()[:300])
    elif case == "truncated_crop":
        shutil.copytree(prepared.out, data, dirs_exist_ok=True)
        crop = sorted((data / "faces").rglob("*.png"))[3]
        crop.write_bytes(crop.read_bytes()[:100])
        extra = ["--cache", tmp_path / "cache"]
    elif case == "bad_tracking_store":
        data, store = prepared.out, f"sqlite:///{tmp_path / 'broken.db'}"
        (tmp_path / "broken.db").write_bytes(b"SQLite format 3\0" + b"\x07" * 300)
    proc = cli("train", data, "--tracking-uri", store, "--quiet", "--epochs", "1", *extra)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    expected = {"no_manifest": "no manifest.parquet", "one_class": "one class only", "empty_split": "part is empty",
                "bad_option": "--lr must be in (0, 10]", "bad_backbone": "--backbone must be one of efficientnet_b0",
                "truncated_manifest": "manifest.parquet: unreadable", "truncated_crop": "cannot read face crop",
                "bad_tracking_store": "broken.db"}[case]
    assert expected in lines[0]


def test_the_bf16_path_is_taken_when_asked_whatever_the_cpu(learnable, tmp_path):
    """Forced, so that CPUs without native bf16 (where `auto` means fp32) test it too: its features are cached
    apart from fp32's, differ from them by bf16's rounding only, and a model trained with them says so."""
    from fakefinder.models.backbones import create_backbone

    backbone = create_backbone("efficientnet_lite0")
    files = list(load_dataset(learnable.out).crop_files[:16])
    half = FeatureCache(tmp_path, backbone, "avg", precision="bf16")
    full = FeatureCache(tmp_path, backbone, "avg", precision="fp32")
    assert half.dir != full.dir
    a, b = (c.features(files).take(np.arange(16)).astype(np.float32) for c in (half, full))
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.05 * np.abs(b).max()
    trained = fit_detector(learnable.out, TrainSettings(epochs=2, precision="bf16"),
                           compute=Compute(cache_dir=tmp_path))
    assert trained.model.card.precision == "bf16" and np.isfinite(trained.val.frame.log_loss)


def test_features_beyond_the_memory_budget_stream_from_the_memory_map(learnable):
    from fakefinder.models.backbones import create_backbone
    from fakefinder.models.features import FeatureRows, head_logits

    data = load_dataset(learnable.out)
    split = split_dataset(data, seed=0)
    val = np.flatnonzero(split.parts[:len(data)] == "val")
    # The cache that training at the default precision uses (bf16 on CPUs that run it natively, else fp32),
    # filled here if no earlier test did; then read by a base that extracts nothing.
    precision = resolve_precision(TrainSettings().precision, "cpu")
    FeatureCache(features_dir(learnable.out), create_backbone("efficientnet_lite0"), "avg",
                 precision=precision).features(list(data.crop_files))
    cache = FeatureCache(features_dir(learnable.out), create_backbone("efficientnet_lite0"), "avg", precision=precision)
    table = cache.features(list(data.crop_files))
    assert isinstance(table.shards[0], np.memmap) and cache.backbone.images_seen == 0
    head = load_model(train(learnable.out, TrainSettings(epochs=2)).model_path).head
    resident, streamed = FeatureRows(table, val, "cpu"), FeatureRows(table, val, "cpu", budget=0)
    assert resident.resident and not streamed.resident
    assert np.array_equal(head_logits(head, resident), head_logits(head, streamed))


def test_cached_features_equal_the_base_on_each_crop(prepared, tmp_path):
    """Many small batches (read ahead by threads) land in the right rows, in order, none skipped."""
    from fakefinder.models.backbones import create_backbone
    from fakefinder.models.head import pooled

    data = load_dataset(prepared.out)
    backbone = create_backbone("efficientnet_lite0")
    table = FeatureCache(tmp_path, backbone, "avg").features(list(data.crop_files), batch_size=4)
    assert backbone.images_seen == len(data) == 30
    with torch.no_grad():
        direct = pooled(backbone.features(backbone.preprocess(load_crops(data.crop_files))), "avg").numpy()
    cached = table.take(np.arange(len(table)))
    assert np.abs(cached - direct).max() <= 2e-3 * np.abs(direct).max()  # float16 storage
