from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import skimage.data
import torch
from safetensors.torch import save_file

from fakefinder import UsageError
from fakefinder.models.backbones import backbone_names, create_backbone, get_spec

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
    assert get_spec("vgg16").feature_side(224) == 7 and get_spec("efficientnet_lite0").feature_side(150) == 5
    assert get_spec("xception").feature_side(299) == 10
    assert lite.images_seen == 1 and vgg.images_seen == 1


def test_vgg16_uses_torchvision_parameter_names():
    names = set(create_backbone("vgg16", weights="none").module.state_dict())
    assert names == {f"features.{i}.{p}" for i in VGG_CONVS for p in ("weight", "bias")}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg16_loads_a_local_weights_file_ignoring_the_classifier(tmp_path, suffix):
    state = create_backbone("vgg16", weights="none", seed=3).module.state_dict()
    source = {k: v.contiguous() for k, v in state.items()}
    state = {**source, "classifier.0.weight": torch.zeros(4, 4)}  # a full torchvision file has a classifier
    path = tmp_path / f"vgg16{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    loaded = create_backbone("vgg16", weights=path)
    assert all(torch.equal(v, source[k]) for k, v in loaded.module.state_dict().items())
    assert loaded.weights == path.name and len(loaded.weights_digest) == 64


def write_keras_vgg16(path, kernels, biases, *, names: str, full_model: bool = False, chunked: bool = False):
    """An .h5 file laid out as Keras writes VGG16 (input and pool layers hold no weights); Keras 1 or 2 names."""
    empty = np.array([], dtype="S1")
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        layers, conv = ["input_1"], 0
        root.create_group("input_1").attrs["weight_names"] = empty
        for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
            for j in range(1, convs + 1):
                name = f"block{block}_conv{j}"
                weight_names = ([f"{name}_W_1:0", f"{name}_b_1:0"] if names == "keras1"
                                else [f"{name}/kernel:0", f"{name}/bias:0"])
                group = root.create_group(name)
                group.attrs["weight_names"] = [n.encode() for n in weight_names]
                group[weight_names[0]], group[weight_names[1]] = kernels[conv], biases[conv]
                layers.append(name)
                conv += 1
            root.create_group(f"block{block}_pool").attrs["weight_names"] = empty
            layers.append(f"block{block}_pool")
        if full_model:  # the top: a dense layer, which the base ignores
            group = root.create_group("fc1")
            group.attrs["weight_names"] = [b"fc1/kernel:0", b"fc1/bias:0"]
            group["fc1/kernel:0"], group["fc1/bias:0"] = np.ones((8, 4), np.float32), np.ones(4, np.float32)
            layers.append("fc1")
        encoded = [n.encode() for n in layers]
        if chunked:  # Keras splits long name lists into numbered attributes
            root.attrs["layer_names0"], root.attrs["layer_names1"] = encoded[:7], encoded[7:]
        else:
            root.attrs["layer_names"] = encoded


@pytest.mark.parametrize("style", [{"names": "keras1"}, {"names": "keras2", "chunked": True},
                                   {"names": "keras2", "full_model": True}])
def test_vgg16_loads_keras_h5_weights_as_keras_computes_them(tmp_path, style):
    rng = np.random.default_rng(0)
    channels = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    kernels = [rng.normal(0, 0.05, (3, 3, cin, cout)).astype(np.float32) for cin, cout in zip(channels, channels[1:])]
    biases = [rng.normal(0, 0.1, cout).astype(np.float32) for cout in channels[1:]]
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_vgg16(path, kernels, biases, **style)
    backbone = create_backbone("vgg16", weights=path)
    assert backbone.weights == path.name and len(backbone.weights_digest) == 64

    # Keras' Conv2D(padding="same"): out[o, y, x] = b[o] + sum over dy, dx, i of K[dy, dx, i, o] * x[i, y+dy-1, x+dx-1]
    x = cv2.resize(skimage.data.astronaut(), (12, 12)).transpose(2, 0, 1).astype(np.float32) / 255
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    expected = biases[0][:, None, None] + sum(np.einsum("ihw,io->ohw", padded[:, dy:dy + 12, dx:dx + 12],
                                                        kernels[0][dy, dx].astype(np.float64))
                                              for dy in range(3) for dx in range(3))
    with torch.no_grad():
        got = backbone.module.features[0](torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    state = backbone.module.state_dict()
    for index, kernel, bias in zip(VGG_CONVS, kernels, biases):  # every layer lands in its place, in order
        assert state[f"features.{index}.weight"][5, 2, 0, 1] == kernel[0, 1, 2, 5]
        assert torch.equal(state[f"features.{index}.bias"], torch.from_numpy(bias))


def test_bad_keras_h5_files_are_one_line_usage_errors(tmp_path):
    rng = np.random.default_rng(0)
    write_keras_vgg16(tmp_path / "full.h5", [rng.normal(size=(3, 3, 3, 64)).astype(np.float32)] * 13,
                      [np.zeros(64, np.float32)] * 13, names="keras2")
    with pytest.raises(UsageError, match=r"full.h5: parameter features.2.weight has shape \(64, 3, 3, 3\)"):
        create_backbone("vgg16", weights=tmp_path / "full.h5")
    with h5py.File(tmp_path / "short.h5", "w") as f:  # a single convolution
        f.attrs["layer_names"] = [b"block1_conv1"]
        f.create_group("block1_conv1").attrs["weight_names"] = [b"k", b"b"]
        f["block1_conv1"]["k"], f["block1_conv1"]["b"] = np.zeros((3, 3, 3, 64)), np.zeros(64)
    with pytest.raises(UsageError, match=r"short.h5: not Keras VGG16 weights \(1 convolution layers, expected 13\)"):
        create_backbone("vgg16", weights=tmp_path / "short.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(UsageError, match="junk.h5: cannot read weights"):
        create_backbone("vgg16", weights=tmp_path / "junk.h5")


def test_wrong_weights_file_is_a_one_line_usage_error(tmp_path):
    lite = create_backbone("efficientnet_lite0").module.state_dict()
    torch.save(lite, tmp_path / "lite.pth")
    with pytest.raises(UsageError, match="not vgg16 weights"):
        create_backbone("vgg16", weights=tmp_path / "lite.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UsageError, match="cannot read weights"):
        create_backbone("vgg16", weights=tmp_path / "junk.pth")


@pytest.mark.parametrize("name", ["vgg16", "xception", "efficientnet_b4"])
def test_imagenet_weights_from_a_server_that_never_answers_fail_by_the_timeout_saying_how(tmp_path, monkeypatch,
                                                                                           name):
    """A URL weight source whose server takes the request and holds it, never answering: the download gives up by
    its own timeout (shortened here) with one line naming the URL and where to put the file, and no
    process-global socket timeout left changed."""
    import dataclasses
    import socket
    import threading

    from fakefinder.models import backbones
    from fakefinder.models.backbones import _spec

    spec = get_spec(name)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)  # the kernel takes the connection and the request; nobody ever answers
        held_url = f"http://127.0.0.1:{held.getsockname()[1]}/" + spec.imagenet.url.rsplit("/", 1)[1]
        unreachable = dataclasses.replace(spec.imagenet, url=held_url)
        monkeypatch.setitem(backbones._REGISTRY, name, dataclasses.replace(spec, imagenet=unreachable))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch.hub cache
        monkeypatch.setitem(_spec.download.__kwdefaults__, "timeout", 0.5)
        before = socket.getdefaulttimeout()
        hang_guard = threading.Timer(60, held.close)  # a download without a timeout then ends reset, not timed out
        hang_guard.start()
        try:
            with pytest.raises(UsageError) as info:
                create_backbone(name)
        finally:
            hang_guard.cancel()
    assert socket.getdefaulttimeout() == before
    message = str(info.value)
    assert "(TimeoutError)" in message, message  # it gave up by its timeout, however long the server holds on
    assert "\n" not in message and "or give the weights setting a file" in message and str(tmp_path) in message
    assert unreachable.url in message


def test_every_registered_backbone_has_its_spec_and_builds():
    names = backbone_names()
    assert {f"efficientnet_b{k}" for k in range(8)} | {f"efficientnet_lite{k}" for k in range(3)} | {
        "vgg16", "xception"} == set(names)
    for name in names:
        spec = get_spec(name)
        with torch.device("meta"):
            module = spec.build()
        assert hasattr(module, "forward_features") and len(module.feature_blocks()) >= 5
        assert spec.imagenet is not None and spec.imagenet.sha256


def _lukemelas(name: str):
    """The independent implementation of an EfficientNet: lukemelas' package for B, its Lite fork for Lite."""
    if "lite" in name:
        from efficientnet_lite_pytorch import EfficientNet
    else:
        from efficientnet_pytorch import EfficientNet
    return EfficientNet.from_name(name.replace("_", "-"), image_size=None)  # TF "same" padding at any size


@pytest.mark.parametrize("name", ["efficientnet_b0"] + [f"efficientnet_lite{k}" for k in range(3)]
                         + [pytest.param(f"efficientnet_b{k}", marks=pytest.mark.slow) for k in range(1, 8)])
def test_efficientnet_matches_its_reference_implementation_on_random_weights(name):
    """Same parameter names and shapes as lukemelas' packages, and the same features and logits."""
    ours = create_backbone(name, weights="none", seed=len(name)).module.float()
    theirs = _lukemelas(name)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 67, 53, generator=torch.Generator().manual_seed(1))  # odd sizes: padding is exercised
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), theirs.extract_features(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", range(3))
def test_efficientnet_lite_packages_hold_genuine_imagenet_weights(k):
    backbone = create_backbone(f"efficientnet_lite{k}")
    with torch.no_grad():
        logits = backbone.module(backbone.preprocess([_bgr("chelsea"), _bgr("coffee")]))
    assert logits.argmax(1).tolist() == [285, 967]


def _cadene_xception():
    """pretrainedmodels' xception.py, loaded on its own (the package imports torchvision)."""
    import importlib.util
    import sysconfig
    from pathlib import Path

    path = Path(sysconfig.get_paths()["purelib"]) / "pretrainedmodels" / "models" / "xception.py"
    spec = importlib.util.spec_from_file_location("cadene_xception", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.xception(num_classes=1000, pretrained=None)


@pytest.mark.slow
def test_xception_matches_cadene_on_random_weights():
    ours = create_backbone("xception", weights="none", seed=1).module.float()
    theirs = _cadene_xception()
    state = {("last_linear." + k[3:] if k.startswith("fc.") else k): v for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 96, 83, generator=torch.Generator().manual_seed(2))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), torch.relu(theirs.features(x)), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    assert ours.forward_features(torch.zeros(1, 3, 299, 299)).shape[-1] == get_spec("xception").feature_side(299)
