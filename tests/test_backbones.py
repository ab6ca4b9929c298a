from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from safetensors.torch import save_file

from fakefinder import UsageError
from fakefinder.backbones import create_backbone, feature_hw

VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision's indices in vgg16().features


def _bgr(name: str) -> np.ndarray:
    return cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)


def test_efficientnet_lite0_weights_are_genuine_imagenet():
    """The packaged weights classify real photos: chelsea is an Egyptian cat (285), coffee an espresso (967)."""
    backbone = create_backbone("efficientnet_lite0")
    with torch.no_grad():
        logits = backbone.module(backbone.preprocess([_bgr("chelsea"), _bgr("coffee")]))
    assert logits.argmax(1).tolist() == [285, 967]
    assert backbone.key["weights_digest"].startswith("57934424")  # the digest in the file's own name


def test_feature_shapes():
    lite = create_backbone("efficientnet_lite0")
    vgg = create_backbone("vgg16", weights="none", input_size=150, normalization="rescale")
    x = np.zeros((150, 150, 3), np.uint8)
    with torch.no_grad():
        assert tuple(lite.features(lite.preprocess([x])).shape[1:]) == lite.feature_shape() == (1280, 7, 7)
        assert tuple(vgg.features(vgg.preprocess([x])).shape[1:]) == vgg.feature_shape() == (512, 4, 4)
    assert feature_hw("vgg16", 224) == 7 and feature_hw("efficientnet_lite0", 150) == 5
    assert lite.images_seen == 1 and vgg.images_seen == 1


def test_vgg16_uses_torchvision_parameter_names():
    names = set(create_backbone("vgg16", weights="none").module.state_dict())
    assert names == {f"features.{i}.{p}" for i in VGG_CONVS for p in ("weight", "bias")}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg16_loads_a_local_weights_file_ignoring_the_classifier(tmp_path, suffix):
    source = {k: v.contiguous() for k, v in create_backbone("vgg16", weights="none", seed=3).module.state_dict().items()}
    state = {**source, "classifier.0.weight": torch.zeros(4, 4)}  # a full torchvision file has a classifier
    path = tmp_path / f"vgg16{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    loaded = create_backbone("vgg16", weights=path)
    assert all(torch.equal(v, source[k]) for k, v in loaded.module.state_dict().items())
    assert loaded.weights == path.name and len(loaded.weights_digest) == 64


def test_wrong_weights_file_is_a_one_line_usage_error(tmp_path):
    lite = create_backbone("efficientnet_lite0").module.state_dict()
    torch.save(lite, tmp_path / "lite.pth")
    with pytest.raises(UsageError, match="not vgg16 weights"):
        create_backbone("vgg16", weights=tmp_path / "lite.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UsageError, match="cannot read weights"):
        create_backbone("vgg16", weights=tmp_path / "junk.pth")


def test_vgg16_imagenet_without_network_fails_fast_saying_how(tmp_path, monkeypatch):
    import fakefinder.backbones as backbones

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch.hub cache
    monkeypatch.setattr(backbones, "VGG16_URL", "http://127.0.0.1:9/vgg16-397923af.pth")  # nothing listens
    start = time.monotonic()
    with pytest.raises(UsageError) as info:
        create_backbone("vgg16")
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert "\n" not in message and "--weights PATH" in message and str(tmp_path) in message
