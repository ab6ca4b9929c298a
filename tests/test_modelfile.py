"""Model files are shared, so they are untrusted input: every header value is typed, bounded and checked against
the stored tensors before anything is allocated; unknown versions are refused; files get the user's umask."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fakefinder import ModelCard, UsageError
from fakefinder.metrics import bootstrap_auc
from fakefinder.models.modelfile import HEADER_KEY, load_model, read_card, save_model


@pytest.fixture(scope="module")
def model_file(baseline):
    return baseline.model_path


def header_of(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[HEADER_KEY])


def rewrite(src, dst, change=None, tensors=None) -> None:
    """The same model file with its header (and maybe its tensors) changed, as a hostile sender would."""
    header = header_of(src)
    if change:
        change(header)
    data = tensors if tensors is not None else load_file(str(src))
    save_file(data, str(dst), metadata={HEADER_KEY: json.dumps(header)})


@pytest.mark.slow
def test_the_card_round_trips_and_says_how_to_use_the_model(model_file):
    card = read_card(model_file)
    assert ModelCard.from_json(card.to_json()) == card
    header = header_of(model_file)
    assert header["format"] == "fakefinder-model/5" and header["label"].startswith("1 = FAKE")
    assert {"base", "head", "calibration", "verdict", "precision", "prepare", "data_digest", "evidence",
            "strength"} <= set(header)


def test_the_card_keeps_a_strength_of_evidence_map_fitted_on_validation_videos_and_its_test_cllr(baseline, model_file):
    """Format 5: the two propositions, the score-to-LR map of the validation videos (counted by source), its LRs'
    Cllr, Cllr_min and EER on the test videos, and the LR from which the headline says FAKE or REAL."""
    from fakefinder.metrics import video_scores
    from fakefinder.models.strength import cllr

    card, trained = read_card(model_file), baseline.trained
    strength = card.strength
    assert header_of(model_file)["strength"]["propositions"] == ["manipulated", "authentic"]
    assert strength.conclusive == 3.0 and strength.map is not None and strength.map.fakes == "real"
    val = trained.part_rows("val")
    sources = set(zip(trained.dataset.labels[val], trained.dataset.groups[val]))
    assert (strength.map.n_real, strength.map.n_fake) == (sum(y == 0 for y, _ in sources),
                                                          sum(y == 1 for y, _ in sources))
    test = trained.part_rows("test")
    p = card.calibration.apply(trained.logits["test"])
    _, vy, vp = video_scores(trained.dataset.video_ids[test], trained.dataset.labels[test], p,
                             rule=card.verdict.video_rule)
    assert strength.test_videos == len(vy) == card.evidence.test_videos
    assert strength.test_cllr == pytest.approx(cllr(strength.map.likelihood_ratios(vp), vy))
    assert 0 <= strength.test_cllr_min <= 1 and 0 <= strength.test_eer <= 1
    assert card.evidence == baseline.trained.model.card.evidence  # the data's evidence is kept apart, unchanged


def test_a_card_of_format_4_reads_as_strength_unknown(model_file, tmp_path, collection):
    from fakefinder import load_detector
    from fakefinder.models.modelcard import UNKNOWN_OLD

    def as_v4(h):
        h.update(format="fakefinder-model/4")
        h.pop("strength")

    old = tmp_path / "v4.safetensors"
    rewrite(model_file, old, as_v4)
    detector = load_detector(old)
    assert detector.card.strength is None
    judged = detector.judge(0.99)
    assert judged["strength"] is None
    assert judged["strength_note"] == UNKNOWN_OLD == "strength unknown (model card format < 5)"
    assert judged["verdict"] == detector.verdict.call(0.99) and judged["decision"] == "FAKE"  # today's behaviour
    video = next(collection.out.glob("*.mp4"))
    row = detector.predict(video).to_dict()
    assert row["strength"] is None and row["strength_note"] == UNKNOWN_OLD and row["decision"] in ("FAKE", "REAL")
    assert f"strength: {UNKNOWN_OLD}" in detector.describe()


@pytest.mark.slow
def test_the_cards_test_interval_draws_whole_sources(baseline):
    """A fake and the real it was made from are one piece of evidence: the card's test AUC interval draws the test
    part's sources whole. On every video of the baseline's data as the test part (15 sources of a real and its fake)
    and the scores of a poorer detector than the baseline, whose test AUC of 1 leaves every interval at [1, 1]."""
    import dataclasses

    from fakefinder import TrainSettings
    from fakefinder.metrics import evaluate_scores
    from fakefinder.training.core import _evidence

    trained, config = baseline.trained, TrainSettings()
    data = trained.dataset
    split = dataclasses.replace(trained.split, parts=np.full(len(trained.split.parts), "test", dtype=object))
    rows = np.arange(len(data))
    p = 1 / (1 + np.exp(-(data.labels - 0.5 + np.random.default_rng(0).normal(size=len(rows)))))
    test = evaluate_scores(data.video_ids, data.labels, p, rule=config.video_rule, tracks=data.tracks())
    ids, vy, vp = data.videos(rows, p, config.video_rule)
    evidence = _evidence("poor", data, split, (ids, vy, vp), test, config)
    sources = data.sources(ids)
    by_source = bootstrap_auc(vy, vp, groups=sources, seed=config.seed)
    assert len(set(sources)) == len(ids) / 2 and 0.5 < test.video.auc < 1
    assert by_source != pytest.approx(bootstrap_auc(vy, vp, seed=config.seed))  # the check can fail
    assert (evidence.test_auc, evidence.test_auc_low, evidence.test_auc_high) == pytest.approx(
        (test.video.auc, *by_source))


@pytest.mark.slow
def test_the_card_says_how_much_to_trust_the_model(baseline, model_file):
    """What a reader weighs a verdict by: the model's name, the data's name and size, the test AUC with its
    bootstrap interval, the rates at the threshold with the number of videos behind them, the inconclusive band."""
    card, trained = read_card(model_file), baseline.trained
    evidence, verdict = card.evidence, card.verdict
    parts = {p: len(set(trained.dataset.video_ids[trained.part_rows(p)])) for p in ("train", "val", "test")}
    assert evidence.name == "swap-efficientnet_lite0" and card.dataset == "swap"
    assert (evidence.train_videos, evidence.val_videos, evidence.test_videos) == tuple(parts.values())
    assert evidence.test_auc == pytest.approx(baseline.test.video.auc)
    assert evidence.test_auc_low <= evidence.test_auc <= evidence.test_auc_high
    assert verdict.real_videos + verdict.fake_videos == parts["val"] and verdict.band == 0.05
    summary = evidence.summary(card.dataset)
    assert summary.startswith(f"swap-efficientnet_lite0 was trained on {parts['train']} videos of swap and "
                              f"calibrated on {parts['val']}; its test AUC is {evidence.test_auc:.2f} (95% interval ")
    # 30 videos split 60/20/20: too few validation videos to state error rates, and the card says so
    assert verdict.meaning().endswith(f"validated on too few videos ({verdict.real_videos} real, "
                                      f"{verdict.fake_videos} fake) to state its error rates")
    assert "INCONCLUSIVE within 0.05" in verdict.meaning()
    t = verdict.threshold
    assert [verdict.call(p) for p in (None, t + 0.06, t + 0.04, t - 0.04, t - 0.06)] == [
        None, "FAKE", "INCONCLUSIVE", "INCONCLUSIVE", "REAL"]


def test_a_verdict_with_enough_videos_states_its_rates_and_their_sample_sizes():
    from fakefinder.models.modelcard import Verdict

    verdict = Verdict(0.4, "eer", "mean", 0.05, 0.9, 40, 60, 0.05)
    assert verdict.meaning() == ("FAKE at P(fake) >= 0.400, INCONCLUSIVE within 0.05 of it (eer): flags 5.0% of 40 "
                                 "real validation videos and catches 90.0% of 60 fake ones")


def _load_in_subprocess(path, limit_bytes: int) -> subprocess.CompletedProcess:
    """Load a model with the address space capped: a header that made us allocate gigabytes would die here."""
    code = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit_bytes}, {limit_bytes}));"
            f"import fakefinder.models.modelfile as m; m.load_model({str(path)!r})")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("field,value,message", [
    ("input_size", 6000, "base.input_size must be in [32, 1024]"),
    ("n_neurons", 12000, "head.n_neurons must be in [1, 8192]"),
    ("n_neurons", 512, "tensor head.layers.0.weight is shape (256, 1280), the model card implies (512, 1280)"),
    ("in_features", 2048, "head.in_features 2048 does not fit efficientnet_lite0"),
    ("threshold", 7, "threshold must be in [0, 1]"),
    ("scale", "big", "scale must be a number, got 'big'"),
    ("backbone", "resnet", "base.backbone must be one of efficientnet_b0"),
    ("run_id", "../../../tmp/elsewhere", "run_id must be a run id, got '../../../tmp/elsewhere'"),
    ("log10_upper", 5.0, "strength.map.log10_upper must be <= "),  # a map claiming more than its videos can show
    ("cap", 11.0, "strength.map.cap must be in [0, 10]"),
    ("conclusive", 1.0, "strength.conclusive must be in (1, 1e+06]"),
])
@pytest.mark.slow
def test_bad_header_values_are_refused_before_anything_is_allocated(model_file, tmp_path, field, value, message):
    def change(h):
        part = {"input_size": "base", "backbone": "base", "n_neurons": "head", "in_features": "head",
                "threshold": "verdict", "scale": "calibration", "conclusive": "strength"}.get(field)
        if field in ("log10_upper", "cap"):
            h["strength"]["map"][field] = value
            return
        (h[part] if part else h)[field] = value

    bad = tmp_path / "bad.safetensors"
    rewrite(model_file, bad, change)
    with pytest.raises(UsageError) as info:
        load_model(bad)
    text = str(info.value)
    assert "\n" not in text and str(bad) in text
    assert message.replace("verdict threshold", "threshold") in text or message in text, text
    proc = _load_in_subprocess(bad, 3 << 30)  # the process dies rather than allocate past 3 GiB
    assert proc.returncode == 1 and "UsageError" in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", ["missing_field", "wrong_type", "future_version", "not_a_model", "truncated",
                                  "extra_tensor", "weights_elsewhere"])
@pytest.mark.slow
def test_damaged_or_foreign_files_are_one_line_errors(model_file, tmp_path, case):
    bad = tmp_path / "bad.safetensors"
    if case == "missing_field":
        rewrite(model_file, bad, lambda h: h["head"].pop("n_layers"))
        expected = "n_layers is missing"
    elif case == "wrong_type":
        rewrite(model_file, bad, lambda h: h.update(head=[1, 2]))
        expected = "head must be an object"
    elif case == "future_version":
        rewrite(model_file, bad, lambda h: h.update(format="fakefinder-model/99"))
        expected = "model format version 99 is newer than this fakefinder"
    elif case == "not_a_model":
        save_file({"x": torch.zeros(2)}, str(bad))
        expected = "neither a fakefinder model file nor a published detector"
    elif case == "truncated":
        bad.write_bytes(model_file.read_bytes()[:5000])
        expected = "not a fakefinder model file"
    elif case == "extra_tensor":
        tensors = load_file(str(model_file))
        tensors["head.layers.9.weight"] = torch.zeros(3)
        rewrite(model_file, bad, tensors=tensors)
        expected = "unexpected tensor head.layers.9.weight"
    else:  # a header naming a file that is not the base it was trained on is refused before that file is parsed
        rewrite(model_file, bad, lambda h: h["base"].update(weights="passwd", weights_path="/etc/passwd"))
        expected = "but /etc/passwd has"
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(bad), str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


@pytest.mark.slow
def test_a_version_1_model_of_fakefinder_0_1_still_loads(model_file, tmp_path):
    v2 = header_of(model_file)
    v1 = {"format": "fakefinder-model/1", "fakefinder": "0.1.0", "label": "1 = FAKE; outputs are P(fake)",
          "base": {k: v2["base"][k] for k in ("backbone", "weights", "weights_digest", "input_size",
                                               "normalization")},
          "pool": "avg", "precision": v2["precision"], "head": {k: v for k, v in v2["head"].items() if k != "pool"},
          "threshold": 0.5, "includes_base": False, "prepare": v2["prepare"], "video_rule": "mean", "seed": 0,
          "train": {}, "run_id": "abc"}
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(model_file)), str(old), metadata={HEADER_KEY: json.dumps(v1)})
    model = load_model(old)
    assert model.card.calibration.method == "none" and model.threshold == 0.5 and model.card.source == "fakefinder 0.1"


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_model_files_get_the_users_umask(model_file, tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = save_model(tmp_path / f"u{umask:o}.safetensors", load_model(model_file))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.slow
def test_a_trained_model_has_base_and_head_on_one_device(model_file):
    model = load_model(model_file)
    devices = {p.device for p in model.backbone.module.parameters()} | {p.device for p in model.head.parameters()}
    assert len(devices) == 1



def _protocol_members(protocol) -> tuple[dict, set, set]:
    """(methods by name, properties, plain attributes) that a protocol class declares itself."""
    import inspect

    own = {n: v for n, v in vars(protocol).items() if not n.startswith("_")}
    methods = {n: v for n, v in own.items() if inspect.isfunction(v)}
    return methods, {n for n, v in own.items() if isinstance(v, property)}, set(protocol.__annotations__)


def _parameters(function) -> list[tuple]:
    import inspect

    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_both_runtimes_implement_the_one_scoring_protocol_with_its_signatures():
    """`scoring.ScoringModel` is the one spelling of a scoring model: the PyTorch and the ONNX Runtime models both
    have each of its members, with its parameters (names, kinds, defaults); only PyTorch's is differentiable."""
    from fakefinder.models.modelfile import DeepfakeModel
    from fakefinder.models.onnxfile import OnnxModel
    from fakefinder.models.scoring import DifferentiableModel, ScoringModel

    methods, properties, attributes = _protocol_members(ScoringModel)
    assert set(methods) == {"face_logits", "predict_faces", "file_logits"} and properties == {"threshold"}
    assert attributes == {"card"}
    for cls in (DeepfakeModel, OnnxModel):
        for name, declared in methods.items():
            assert _parameters(getattr(cls, name)) == _parameters(declared), f"{cls.__name__}.{name}"
        for name in properties:
            assert isinstance(getattr(cls, name), property), f"{cls.__name__}.{name}"
    torch_methods, torch_properties, torch_attributes = _protocol_members(DifferentiableModel)
    assert not torch_methods and torch_properties == {"device"} and torch_attributes == {"backbone", "head"}
    assert {"backbone", "head", "card"} <= set(DeepfakeModel.__dataclass_fields__)
    assert isinstance(DeepfakeModel.device, property) and not hasattr(OnnxModel, "backbone")


def test_a_loaded_model_is_a_scoring_model(model_file):
    from fakefinder.models.scoring import DifferentiableModel, ScoringModel

    model = load_model(model_file)
    assert isinstance(model, ScoringModel) and isinstance(model, DifferentiableModel)
    assert not isinstance(object(), ScoringModel)


def _with_head(model_file, path, change) -> str:
    """The model with its last head bias (or weight) changed; returns that tensor's name."""
    tensors = load_file(str(model_file))
    name = sorted(k for k in tensors if k.startswith("head.layers."))[-1]
    tensors[name] = change(tensors[name].clone())
    rewrite(model_file, path, tensors=tensors)
    return name


@pytest.mark.slow
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_model_with_non_finite_weights_is_refused_by_every_command(model_file, collection, prepared, tmp_path,
                                                                     value):
    bad = tmp_path / "nan.safetensors"
    name = _with_head(model_file, bad, lambda t: t.fill_(value))
    video = collection.out / f"{collection.videos[0].name}.mp4"
    for command in (["predict", bad, video, "--json", "-"], ["evaluate", bad, prepared.out],
                    ["serve", "--model", bad, "--port", "0"]):
        proc = subprocess.run([sys.executable, "-m", "fakefinder", *map(str, command)], capture_output=True,
                              text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and proc.stdout == "" and len(lines) == 1, (command, proc.stdout, proc.stderr)
        assert f"tensor {name} holds non-finite values" in lines[0] and str(bad) in lines[0]


@pytest.mark.slow
def test_a_score_that_is_not_a_number_is_an_error_never_a_verdict(model_file, collection, tmp_path):
    """Finite weights that overflow (a head weight of 1e38 makes every logit infinite)."""
    from fakefinder import predict

    huge = tmp_path / "huge.safetensors"
    _with_head(model_file, huge, lambda t: t.fill_(1e38))
    result = predict(huge, [collection.out / f"{collection.videos[0].name}.mp4"])[0]
    assert result.p_fake is None and result.verdict is None and "non-finite score" in result.error
