from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fakefinder.experiment import load_data, train
from fakefinder.features import FeatureCache, load_crops
from fakefinder.manifest import features_dir
from fakefinder.modelfile import load_model, read_header, save_model
from fakefinder.splits import load_split
from fakefinder.training import TrainConfig

METRIC_KEYS = {"accuracy", "auc", "ap", "log_loss", "eer", "n"}


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakefinder", *map(str, args)], capture_output=True, text=True)


def run_artifacts(tracking: str, run_id: str, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(tracking)
    client = mlflow.MlflowClient()
    local = client.download_artifacts(run_id, "", str(tmp_path))
    return client.get_run(run_id), client, local


@pytest.fixture(scope="module")
def baseline(learnable, tracking):
    return train(learnable.out, config=TrainConfig(), tracking_uri=tracking, progress=False)


def test_frozen_efficientnet_learns_held_out_fakes(baseline):
    assert baseline.test.video.auc >= 0.9 and baseline.val.video.auc >= 0.9
    assert baseline.test.video.n == 6 and baseline.test.frame.n == 24  # 3 source groups of 2 videos, 4 crops each
    assert baseline.test.video.log_loss < 0.5
    assert baseline.split_by == "source" and baseline.model_path.is_file()


def test_same_command_gives_the_same_numbers(learnable, tracking, baseline):
    again = train(learnable.out, config=TrainConfig(), tracking_uri=tracking, progress=False)
    assert again.history.epochs == baseline.history.epochs
    assert again.test.to_dict() == baseline.test.to_dict() and again.run_id != baseline.run_id


def test_feature_cache_means_zero_backbone_passes_on_reuse(learnable, tracking, tmp_path):
    n = pq.read_metadata(learnable.manifest_path).num_rows
    first = train(learnable.out, config=TrainConfig(epochs=2), cache_dir=tmp_path, tracking_uri=tracking,
                  progress=False)
    second = train(learnable.out, config=TrainConfig(epochs=2, n_neurons=64, lr=1e-4), cache_dir=tmp_path,
                   tracking_uri=tracking, progress=False)
    flat = train(learnable.out, config=TrainConfig(epochs=1, pool="flatten"), cache_dir=tmp_path,
                 tracking_uri=tracking, progress=False)
    assert (first.backbone_images, second.backbone_images, flat.backbone_images) == (n, 0, n)
    assert len(list(tmp_path.iterdir())) == 2  # one cache per (backbone key, pooling)


def test_run_records_flags_curves_metrics_and_artifacts(baseline, tracking, tmp_path):
    run, client, local = run_artifacts(tracking, baseline.run_id, tmp_path)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["n_layers"] == "1" and params["lr"] == "0.001" and params["backbone"] == "efficientnet_lite0"
    assert len(client.get_metric_history(baseline.run_id, "val_loss")) == baseline.history.completed
    assert metrics["epochs_completed"] == baseline.history.completed and metrics["wall_seconds"] > 0
    assert metrics["test_video_auc"] == pytest.approx(baseline.test.video.auc)
    assert {"fakefinder.manifest_digest", "fakefinder.split_digest", "fakefinder.git_commit"} <= set(tags)
    assert tags["fakefinder.leaky_split"] == "False"
    files = {p.name for p in __import__("pathlib").Path(local).rglob("*") if p.is_file()}
    assert {"history.csv", "learning_curves.png", "model_summary.txt", "split.json", "metrics.json",
            f"{baseline.run_id}.safetensors"} <= files
    summary = (tmp_path / "model_summary.txt").read_text()
    assert "efficientnet_lite0" in summary and "head parameters: 328,193" in summary  # 1280*256+256 + 256+1


def test_early_stopping_restores_the_best_epoch(learnable, tracking):
    config = TrainConfig(optimizer="adam", lr=3e-2, n_neurons=512, epochs=60, patience=3, balance="none")
    result = train(learnable.out, config=config, tracking_uri=tracking, progress=False)
    history = result.history
    assert history.completed < 60 and history.best_epoch == history.completed - 3
    # The saved head, applied to the cached validation features, gives the best epoch's val loss exactly.
    data = load_data(learnable.out)
    from fakefinder.experiment import split_data

    val = np.flatnonzero(split_data(data, config, None).parts == "val")
    model = load_model(result.model_path)
    table = FeatureCache(features_dir(learnable.out), model.backbone, "avg").features(list(data.crops))
    with torch.no_grad():
        p = torch.sigmoid(model.head(torch.from_numpy(table.take(val)))).double().numpy()
    y = data.labels[val]
    q = np.clip(p, 1e-7, 1 - 1e-7)
    loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    assert loss == pytest.approx(history.epochs[history.best_epoch - 1]["val_loss"], abs=1e-6)
    assert min(e["val_loss"] for e in history.epochs) == pytest.approx(loss, abs=1e-6)


def test_test_part_never_influences_training(learnable, tracking, baseline, tmp_path):
    """Flip every test label: training history and validation metrics stay identical, test metrics change."""
    _, _, local = run_artifacts(tracking, baseline.run_id, tmp_path / "artifacts")
    data = tmp_path / "flipped"
    shutil.copytree(learnable.out, data, ignore=shutil.ignore_patterns("models"))
    table = pq.read_table(data / "manifest.parquet").to_pylist()
    split = load_split(tmp_path / "artifacts" / "split.json", [r["video_id"] for r in table],
                       [r["group"] for r in table], [str(data / r["crop_path"]) for r in table])
    for row, part in zip(table, split.parts):
        if part == "test":
            row["label"] = 1 - row["label"]
    pq.write_table(__import__("pyarrow").Table.from_pylist(table, schema=pq.read_schema(data / "manifest.parquet")),
                   data / "manifest.parquet")
    flipped = train(data, config=TrainConfig(), split_file=tmp_path / "artifacts" / "split.json",
                    tracking_uri=tracking, progress=False)
    assert flipped.history.epochs == baseline.history.epochs
    assert flipped.val.to_dict() == baseline.val.to_dict()
    assert flipped.test.video.auc <= 0.1 < baseline.test.video.auc


def test_frame_split_is_flagged_leaky(learnable, tracking):
    result = train(learnable.out, config=TrainConfig(split="frame", epochs=2), tracking_uri=tracking,
                   progress=False)
    assert result.to_json()["leaky_split"] is True and "LEAKY" in result.summary()


def test_model_file_round_trip_and_header(baseline, learnable, tmp_path):
    header = read_header(baseline.model_path)
    assert header["label"].startswith("1 = FAKE") and header["base"]["backbone"] == "efficientnet_lite0"
    assert header["prepare"]["fps"] == 2 and header["includes_base"] is False and header["threshold"] == 0.5
    names = pq.read_table(learnable.manifest_path)["crop_path"].to_pylist()[:16]
    crops = load_crops([learnable.out / r for r in names])
    model = load_model(baseline.model_path)
    p = model.predict_faces(crops)
    save_model(tmp_path / "copy.safetensors", model, include_base=False, extra={"prepare": header["prepare"]})
    assert np.array_equal(load_model(tmp_path / "copy.safetensors").predict_faces(crops), p)
    assert p.shape == (16,) and ((p >= 0) & (p <= 1)).all()


def test_reference_preset_runs_vgg16_end_to_end(prepared, tracking, tmp_path):
    proc = cli("train", prepared.out, "--preset", "reference", "--weights", "none", "--epochs", "2",
               "--val", "0.2", "--test", "0.2", "--tracking-uri", tracking, "--out", tmp_path, "--json", "-", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"run_id", "model_path", "val", "test"} <= set(out)
    for part in ("val", "test"):
        for level in ("frame", "video"):
            assert set(out[part][level]) == METRIC_KEYS
    header = read_header(out["model_path"])
    assert header["base"] == {**header["base"], "backbone": "vgg16", "input_size": 150, "normalization": "rescale",
                              "weights": "none"}
    assert header["pool"] == "flatten" and header["head"] == {"in_features": 8192, "n_layers": 1, "n_neurons": 256,
                                                              "dropout": 0.0}
    assert header["train"]["lr"] == "2e-05" and header["train"]["batch_size"] == "10"
    assert out["run_id"] in proc.stderr  # the one-line summary goes to stderr when JSON goes to stdout


def test_fine_tuning_the_last_block_stores_the_base(prepared, tracking, tmp_path):
    result = train(prepared.out, config=TrainConfig(trainable_blocks=1, epochs=1, batch_size=8), out=tmp_path,
                   tracking_uri=tracking, progress=False)
    assert result.history.completed == 1 and result.val is not None
    assert read_header(result.model_path)["includes_base"] is True
    model = load_model(result.model_path)
    crops = load_crops(sorted((prepared.out / "faces").rglob("*.png"))[:4])
    assert np.array_equal(model.predict_faces(crops), load_model(result.model_path).predict_faces(crops))


@pytest.mark.parametrize("case", ["no_manifest", "one_class", "empty_split", "bad_option"])
def test_unusable_data_exits_2_with_one_line(case, prepared, tracking, tmp_path):
    data, extra = tmp_path / "data", []
    data.mkdir()
    if case == "one_class":
        table = pq.read_table(prepared.manifest_path)
        pq.write_table(table.filter(__import__("pyarrow").compute.equal(table["label"], 0)), data / "manifest.parquet")
    elif case == "empty_split":
        data, extra = prepared.out, ["--val", "0.05", "--test", "0.05"]
    elif case == "bad_option":
        data, extra = prepared.out, ["--lr", "-1"]
    proc = cli("train", data, "--tracking-uri", tracking, "--quiet", *extra)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    expected = {"no_manifest": "no manifest.parquet", "one_class": "one class only", "empty_split": "part is empty",
                "bad_option": "--lr must be positive"}[case]
    assert expected in lines[0]


def test_features_beyond_the_memory_budget_stream_from_the_memory_map(learnable, baseline):
    from fakefinder.backbones import create_backbone
    from fakefinder.experiment import frozen_setup, split_data
    from fakefinder.training import fit

    data, config = load_data(learnable.out), TrainConfig(epochs=3)
    split = split_data(data, config, None)
    parts = {p: np.flatnonzero(split.parts == p) for p in ("train", "val", "test")}
    cache = FeatureCache(features_dir(learnable.out), create_backbone(), "avg")
    table = cache.features(list(data.crops))
    assert isinstance(table.shards[0], np.memmap) and cache.backbone.images_seen == 0
    predictions = []
    for budget in (1 << 30, 0):  # resident on the device, then gathered from the memmap batch by batch
        head, model, batches, predict = frozen_setup(table, data.labels, parts, parts["train"], config, "cpu",
                                                     resident_bytes=budget)
        fit(model, batches, predict, data.labels[parts["train"]].astype(np.float32),
            data.labels[parts["val"]].astype(np.float32), config)
        predictions.append(predict("val"))
    assert np.array_equal(*predictions)


def test_cached_features_equal_the_base_on_each_crop(prepared, tmp_path):
    """Many small batches (read ahead by threads) land in the right rows, in order, none skipped."""
    from fakefinder.backbones import create_backbone
    from fakefinder.features import pooled

    data = load_data(prepared.out)
    backbone = create_backbone()
    table = FeatureCache(tmp_path, backbone, "avg").features(list(data.crops), batch_size=4)
    assert backbone.images_seen == len(data.crops) == 30
    with torch.no_grad():
        direct = pooled(backbone.features(backbone.preprocess(load_crops(data.crops))), "avg").numpy()
    cached = table.take(np.arange(len(table)))
    assert np.abs(cached - direct).max() <= 2e-3 * np.abs(direct).max()  # float16 storage
