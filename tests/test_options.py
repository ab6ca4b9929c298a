"""Every setting is declared once; flags, validation, grid coercion and tracked params are derived from it."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from fakefinder import OptionError, PrepareSettings, TrainSettings, TuneSettings
from fakefinder._cli import build_parser
from fakefinder.options import declared


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


@pytest.mark.parametrize("command,cls", [("prepare", PrepareSettings), ("train", TrainSettings),
                                         ("tune", TuneSettings)])
def test_every_declared_setting_is_exactly_one_flag_with_its_default_in_the_help(command, cls):
    parser = command_parser(command)
    flags = {opt: a for a in parser._actions for opt in a.option_strings}
    for name, d in declared(cls).items():
        assert d.flag in flags, f"{command} lacks {d.flag}"
        assert flags[d.flag].dest == name
        assert "(default " in flags[d.flag].help
    help_text = parser.format_help()
    for name, d in declared(cls).items():
        assert help_text.count(d.flag + " ") + help_text.count(d.flag + "\n") + help_text.count(
            d.flag + ",") >= 1


def test_choices_come_from_the_registries():
    from fakefinder.data.faces import FACE_DETECTORS
    from fakefinder.models.backbones import backbone_names

    train_help = command_parser("train").format_help().replace("\n", " ").replace("  ", " ")
    for name in backbone_names():
        assert name in train_help
    prepare_help = command_parser("prepare").format_help()
    for name in FACE_DETECTORS:
        assert name in prepare_help
    with pytest.raises(OptionError, match="backbone must be one of efficientnet_b0, .*xception, got 'resnet'"):
        TrainSettings(backbone="resnet")
    from fakefinder.options import without_registries

    with without_registries():  # a self-contained artefact's record: its type and bounds still hold
        assert TrainSettings(backbone="resnet").backbone == "resnet"
        with pytest.raises(OptionError, match="input_size"):
            TrainSettings(backbone="resnet", input_size=4)
    with pytest.raises(OptionError, match="got 'resnet'"):
        TrainSettings(backbone="resnet")


def test_each_stage_implements_exactly_the_names_the_settings_validate_against():
    """The registries' names live below the settings (`registries`); each stage's own registry must agree with
    them, so that neither a setting nor a stage can gain or lose a name alone."""
    import dataclasses

    from fakefinder import metrics, registries
    from fakefinder.data.faces import FACE_DETECTORS
    from fakefinder.models import backbones
    from fakefinder.training.augment import AUGMENTATIONS

    declared_train, declared_prepare = declared(TrainSettings), declared(PrepareSettings)
    assert set(declared_prepare["detector"].choices()) == set(FACE_DETECTORS) == set(registries.FACE_DETECTORS)
    assert set(declared_train["backbone"].choices()) == set(backbones.backbone_names()) == set(registries.BACKBONES)
    assert set(backbones._REGISTRY) == set(registries.BACKBONES)
    assert set(declared_train["normalization"].choices()) == set(backbones.NORMALIZATIONS)
    assert set(registries.NORMALIZATIONS) == set(backbones.NORMALIZATIONS)
    assert set(AUGMENTATIONS) == set(registries.AUGMENTATIONS)
    assert set(declared(TuneSettings)["metric"].choices()) == set(metrics.SELECTION_METRICS)
    measured = {f.name for f in dataclasses.fields(metrics.Metrics)} - {"n"}
    assert measured == set(registries.DIRECTIONS)  # every metric computed has a direction, and no other
    with pytest.raises(RuntimeError, match=r"undeclared \['resnet'\], not implemented \['vgg16'\]"):
        registries.implements("backbone", ["vgg16", "xception"], ["resnet", "xception"])


def test_library_errors_name_the_setting_and_the_cli_names_the_flag(prepared):
    with pytest.raises(OptionError) as info:
        TrainSettings(lr=-1, n_layers=9)
    assert str(info.value) == "n_layers must be in [0, 8], got 9; lr must be in (0, 10], got -1"
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "train", str(prepared.out), "--lr", "-1",
                           "--n-layers", "9"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("fakefinder train: error: --n-layers must be in [0, 8], got 9; --lr must be in "
                                   "(0, 10], got -1.0")
    bad_type = subprocess.run([sys.executable, "-m", "fakefinder", "train", str(prepared.out), "--epochs", "many"],
                              capture_output=True, text=True)
    assert bad_type.returncode == 2 and "--epochs" in bad_type.stderr and "must be an integer" in bad_type.stderr


def test_presets_are_declared_settings_and_flags_override_them():
    parser = build_parser("train")
    args = parser.parse_args(["train", "data", "--preset", "reference", "--lr", "1e-4"])
    from fakefinder._cli._options import settings_from

    config = settings_from(args, TrainSettings, args.preset)
    assert config == TrainSettings.preset("reference", lr=1e-4)
    assert (config.backbone, config.trainable_blocks, config.lr) == ("vgg16", "all", 1e-4)
    with pytest.raises(OptionError):
        TrainSettings.preset("reference", epochs=0)


def test_tracked_params_are_every_declared_setting():
    config = TrainSettings(trainable_blocks="all", grad_clip=None)
    params = config.to_params()
    assert set(params) == set(declared(TrainSettings))
    assert params["trainable_blocks"] == "all" and params["grad_clip"] == "none" and params["lr"] == "0.001"
    from fakefinder.options import build

    assert build(TrainSettings, params) == config  # what a run records is enough to rebuild its settings


def test_coercion_follows_the_declared_types():
    d = declared(TrainSettings)
    assert d["lr"].coerce("1e-5") == 1e-5 and d["epochs"].coerce("3") == 3 and d["epochs"].coerce(3.0) == 3
    assert d["trainable_blocks"].coerce("all") == "all" and d["trainable_blocks"].coerce("2") == 2
    assert d["probe"].coerce("no") is False and d["input_size"].coerce("none") is None
    for field, value in (("epochs", "2.5"), ("epochs", True), ("lr", "fast"), ("probe", "maybe")):
        with pytest.raises(OptionError, match=field):
            d[field].coerce(value)


def test_a_cards_backbone_is_a_registered_name_and_a_refusal_quotes_a_bounded_part_of_it():
    """Checked against the registry where the base is built (.safetensors); a bounded plain name where it is not
    (an ONNX graph is its own base); a 50 MB name is refused in a short line."""
    from fakefinder import options
    from fakefinder.errors import UsageError
    from fakefinder.models.modelcard import BaseCard, Calibration, HeadSpec, ModelCard, Verdict

    card = ModelCard(base=BaseCard(backbone="efficientnet_lite0"), head=HeadSpec(in_features=1280),
                     calibration=Calibration(), verdict=Verdict(), precision="fp32", prepare=None).to_json()
    for name, registered, bare in (("nope", "must be one of", None), ("x" * 50 * 2**20, "must be one of", "a name"),
                                   ("a b\x1b[2J", "must be one of", "a name")):
        card["base"]["backbone"] = name
        with pytest.raises(UsageError, match=registered) as caught:
            ModelCard.from_json(card)
        assert len(str(caught.value)) < 400
        with options.without_registries():
            if bare is None:
                assert ModelCard.from_json(card).base.backbone == name
            else:
                with pytest.raises(UsageError, match=bare) as caught:
                    ModelCard.from_json(card)
                assert len(str(caught.value)) < 200
