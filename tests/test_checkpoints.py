"""Published detectors, read from files laid out as their authors saved them (built here with the same key names,
shapes, wrappers and pickling), run directly by evaluate/predict and used by train as a start."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fakefinder import Compute, TrainSettings, fit_detector, load_dataset, load_detector
from fakefinder.models.backbones import create_backbone
from fakefinder.models.features import load_crops

# lukemelas (our) names -> timm's, per block kind: written out here from timm's EfficientNet, independently of
# the mapping in fakefinder.checkpoints.
TIMM_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand",
           "_project_conv": "conv_pw", "_bn2": "bn2"}
TIMM_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl", "_bn2": "bn3"}
TIMM_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
B0_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)


def timm_state(ours: dict) -> dict:
    """Our EfficientNet-B0 state dict under timm's names: blocks.<stage>.<index>.<part>."""
    starts = np.cumsum((0,) + B0_STAGE_REPEATS)
    out = {}
    for key, value in ours.items():
        m = re.match(r"_blocks\.(\d+)\.(_\w+)\.(\w+)$", key)
        if m:
            flat, part, kind = int(m[1]), m[2], m[3]
            stage = int(np.searchsorted(starts, flat, side="right")) - 1
            names = TIMM_DS if stage == 0 else TIMM_IR
            out[f"blocks.{stage}.{flat - starts[stage]}.{names[part]}.{kind}"] = value
        else:
            module, kind = key.rsplit(".", 1)
            out[f"{TIMM_TOP[module]}.{kind}"] = value
    return out


@pytest.fixture(scope="module")
def dfdc_winner_file(tmp_path_factory):
    """A DeepFakeClassifier checkpoint as the DFDC winner's training script saved it (B0 instead of B7 to stay
    small): {epoch, state_dict, bce_best} with DistributedDataParallel's `module.` prefix, the encoder's ImageNet
    classifier still inside, fc = Linear(C, 1), no file extension."""
    base = create_backbone("efficientnet_b0", weights="none", seed=11).module
    state = {f"module.encoder.{k}": v for k, v in timm_state(base.state_dict()).items()}
    torch.manual_seed(0)
    state["module.fc.weight"], state["module.fc.bias"] = torch.randn(1, 1280) * 0.05, torch.tensor([0.1])
    path = tmp_path_factory.mktemp("dfdc") / "final_111_DeepFakeClassifier_tf_efficientnet_b0_ns_0_36"
    torch.save({"epoch": 36, "state_dict": state, "bce_best": np.float64(0.191)}, path)
    return path, base, state


FFPP_SAVE = textwrap.dedent("""
    import sys, types, torch
    from torch import nn
    from fakefinder.models.backbones import xception as ours
    # The FaceForensics++ repository's classes, under the module paths its pickles name.
    cadene = types.ModuleType("pretrainedmodels.models.xception")
    for cls in (ours.Xception, ours.Block, ours.SeparableConv2d):
        cls.__module__ = cadene.__name__
        setattr(cadene, cls.__name__, cls)
    network = types.ModuleType("network.models")
    class TransferModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = ours.Xception()
            del self.model.fc
            self.model.last_linear = nn.Sequential(nn.Dropout(0.5), nn.Linear(2048, 2))
        def forward(self, x):
            return self.model.last_linear(torch.flatten(nn.functional.adaptive_avg_pool2d(
                self.model.forward_features(x), 1), 1))
    TransferModel.__module__ = network.__name__
    network.TransferModel = TransferModel
    sys.modules.update({"pretrainedmodels": types.ModuleType("pretrainedmodels"),
                        "pretrainedmodels.models": types.ModuleType("pretrainedmodels.models"),
                        cadene.__name__: cadene, "network": types.ModuleType("network"), network.__name__: network})
    torch.manual_seed(5)
    model = TransferModel().eval()
    with torch.no_grad():
        for m in model.modules():  # non-trivial BatchNorm statistics, as a trained model has
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1); m.running_var.uniform_(0.5, 1.5)
        x = torch.load(sys.argv[2])
        expected = torch.softmax(model(x), 1)[:, 1]
    torch.save(model, sys.argv[1], _use_new_zipfile_serialization=False)  # torch 1.0's format, a whole model
    torch.save(expected, sys.argv[3])
""")


@pytest.fixture(scope="module")
def ffpp_file(tmp_path_factory, learnable):
    """FaceForensics++' full_c23.p: a whole pickled TransferModel, Cadene's Xception inside, 2 classes."""
    folder = tmp_path_factory.mktemp("ffpp")
    detector_input = folder / "x.pt"
    crops = load_crops(load_dataset(learnable.out).crop_files[:4])
    backbone = create_backbone("xception", weights="none")
    torch.save(backbone.preprocess(crops).contiguous(), detector_input)
    proc = subprocess.run([sys.executable, "-c", FFPP_SAVE, str(folder / "full_c23.p"), str(detector_input),
                           str(folder / "expected.pt")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return folder / "full_c23.p", torch.load(folder / "expected.pt"), crops


@pytest.mark.slow
def test_the_dfdc_winners_checkpoint_runs_as_a_detector(dfdc_winner_file, learnable):
    path, base, state = dfdc_winner_file
    detector = load_detector(path)
    card = detector.card
    assert card.source == "DFDC winner" and card.base.backbone == "efficientnet_b0" and card.base.input_size == 380
    assert card.base.normalization == "imagenet" and card.verdict.video_rule == "confident"
    assert detector.settings.frames == 32 and detector.settings.faces == "all"
    ours = detector.model.backbone.module.state_dict()
    for k, v in base.state_dict().items():  # every encoder tensor landed under its own name
        if not k.startswith("_fc."):
            assert torch.equal(ours[k], v), k
    crops = load_crops(load_dataset(learnable.out).crop_files[:3])
    x = detector.model.backbone.preprocess(crops)
    with torch.no_grad():  # the winner's forward: encoder features, average pool, fc, sigmoid
        expected = torch.sigmoid(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(
            base.eval().forward_features(x), 1), 1) @ state["module.fc.weight"].T + state["module.fc.bias"])[:, 0]
    np.testing.assert_allclose(detector.predict_faces(crops), expected.numpy(), rtol=1e-4, atol=1e-5)
    video = learnable.out.parent / "swap" / f"{load_dataset(learnable.out).video_ids[0]}.mp4"
    result = detector.predict_video(video)
    assert result.error is None and result.p_fake is not None


@pytest.mark.slow
def test_the_faceforensics_xception_pickle_is_read_without_running_it(ffpp_file):
    path, expected, crops = ffpp_file
    detector = load_detector(path)
    assert detector.card.source == "FaceForensics++ Xception" and detector.card.base.input_size == 299
    assert detector.card.base.normalization == "inception"
    np.testing.assert_allclose(detector.predict_faces(crops), expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_published_checkpoint_starts_training(dfdc_winner_file, learnable, tmp_path):
    path, base, state = dfdc_winner_file
    config = TrainSettings(backbone="efficientnet_b0", weights=str(path), n_layers=0, epochs=1, input_size=64,
                           calibration="none")
    trained = fit_detector(learnable.out, config, compute=Compute(cache_dir=tmp_path))
    ours = trained.model.backbone.module.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in base.state_dict().items() if not k.startswith("_fc."))
    assert trained.model.card.base.weights == path.name
    with pytest.raises(Exception, match="DFDC winner checkpoint of efficientnet_b0, not efficientnet_lite0"):
        fit_detector(learnable.out, TrainSettings(weights=str(path), epochs=1), compute=Compute(cache_dir=tmp_path))


@pytest.mark.slow
def test_evaluate_and_predict_take_the_checkpoint_file_as_the_model(ffpp_file, prepared, collection):
    path, _, _ = ffpp_file
    video = collection.out / f"{collection.videos[0].name}.mp4"
    for command in (["evaluate", str(path), str(prepared.out)], ["predict", str(path), str(video)]):
        proc = subprocess.run([sys.executable, "-m", "fakefinder", *command, "--quiet"], capture_output=True,
                              text=True)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_a_pickle_that_would_run_code_is_not_run(tmp_path):
    """A weights file whose pickle calls os.system: the call is never made; the file is refused in one line."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {tmp_path / 'pwned'}",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    from fakefinder import UsageError

    with pytest.raises(UsageError, match="evil.pth: cannot read weights: not a model or weights file"):
        create_backbone("vgg16", weights=tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_a_pickle_hiding_code_inside_a_torch_function_is_not_run(tmp_path):
    """torch.storage._load_from_bytes unpickles its argument without limits: naming it must not reach that."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {tmp_path / 'pwned'}",))

    class Smuggled:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (pickle.dumps(Evil()),))

    with open(tmp_path / "smuggled.pth", "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(2)}, "extra": Smuggled()}, f)
    from fakefinder import UsageError

    with pytest.raises(UsageError, match="smuggled.pth"):
        create_backbone("vgg16", weights=tmp_path / "smuggled.pth")
    assert not (tmp_path / "pwned").exists()
