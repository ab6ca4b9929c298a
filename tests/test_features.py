"""The feature cache stays right when several processes fill it at once, and never serves damaged features."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fakefinder import Compute, TrainSettings, fit_detector, load_dataset
from fakefinder.models.backbones import create_backbone
from fakefinder.models.features import FeatureCache, load_crops
from fakefinder.models.head import pooled

pytestmark = pytest.mark.slow  # feature extraction racing in processes, and training on the cache

EXTRACT = """
import sys
from fakefinder.models.backbones import create_backbone
from fakefinder.data.dataset import load_dataset
from fakefinder.models.features import FeatureCache
data = load_dataset(sys.argv[1])
files = list(data.crop_files)[int(sys.argv[3]):int(sys.argv[4])]
FeatureCache(sys.argv[2], create_backbone("efficientnet_lite0"), "avg").features(files, batch_size=8)
"""


def direct_features(files) -> np.ndarray:
    backbone = create_backbone("efficientnet_lite0")
    with torch.no_grad():
        return pooled(backbone.features(backbone.preprocess(load_crops(files))), "avg").numpy()


def test_extractors_racing_on_one_cache_leave_every_crop_present_and_correct(learnable, tmp_path):
    data = load_dataset(learnable.out)
    files = list(data.crop_files)
    n = len(files)
    # Two processes at once, overlapping in the middle third; then a third one over everything.
    procs = [subprocess.Popen([sys.executable, "-c", EXTRACT, str(learnable.out), str(tmp_path), str(a), str(b)])
             for a, b in ((0, 2 * n // 3), (n // 3, n))]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    backbone = create_backbone("efficientnet_lite0")
    cache = FeatureCache(tmp_path, backbone, "avg")
    table = cache.features(files)
    assert backbone.images_seen == 0  # everything was there: no crop lost by a concurrent write
    assert len(list(cache.dir.glob("shard-*.json"))) >= 2
    want = direct_features(files)
    got = table.take(np.arange(n))
    assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max()


@pytest.mark.parametrize("damage", ["zeroed_rows", "permuted_rows", "truncated"])
def test_a_damaged_shard_is_detected_and_extracted_again(prepared, tmp_path, damage):
    data = load_dataset(prepared.out)
    files = list(data.crop_files)
    cache = FeatureCache(tmp_path, create_backbone("efficientnet_lite0"), "avg")
    clean = cache.features(files).take(np.arange(len(files))).copy()
    shard = next(cache.dir.glob("shard-*.npy"))
    array = np.load(shard)
    if damage == "zeroed_rows":
        array[3:7] = 0
        np.save(shard, array)
    elif damage == "permuted_rows":
        np.save(shard, array[::-1].copy())
    else:
        shard.write_bytes(shard.read_bytes()[:1000])
    messages = []
    backbone = create_backbone("efficientnet_lite0")
    again = FeatureCache(tmp_path, backbone, "avg").features(files, progress=lambda e: messages.append(e.message))
    assert backbone.images_seen == len(files)  # extracted again, not served
    assert np.array_equal(again.take(np.arange(len(files))), clean)
    assert any("is damaged" in m for m in messages)


def test_training_on_a_damaged_cache_gives_the_clean_numbers(learnable, tmp_path):
    clean = fit_detector(learnable.out, TrainSettings(epochs=3), compute=Compute(cache_dir=tmp_path))
    cache_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    for shard in cache_dir.glob("shard-*.npy"):
        array = np.load(shard)
        np.save(shard, array[np.random.default_rng(0).permutation(len(array))])
    again = fit_detector(learnable.out, TrainSettings(epochs=3), compute=Compute(cache_dir=tmp_path))
    assert again.test.to_dict() == clean.test.to_dict() and again.backbone_images == len(again.dataset)
