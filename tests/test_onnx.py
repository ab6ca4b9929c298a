"""The detector as ONNX: `export` writes base and head with the card, ONNX Runtime gives PyTorch's fp32 scores,
`--runtime onnx` runs predict, evaluate and serve, and a file fakefinder did not write (or one edited since) is
refused in one line. Without the onnx extra these tests skip, except under CI=true, where they fail."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from fresh import without

from fakefinder import Compute, load_dataset, load_detector
from fakefinder.errors import OptionError, UsageError
from fakefinder.inference.detector import LoadOptions
from fakefinder.models.features import load_crops
from fakefinder.models.modelfile import load_model

HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
pytestmark = [pytest.mark.skipif(not HAVE_ONNX and os.environ.get("CI") != "true",
                                 reason="the onnx extra is not installed: pip install 'fakefinder[onnx]'"),
              pytest.mark.slow]  # exports and scores the trained baseline

# ONNX Runtime and PyTorch both compute in fp32 but sum in different orders (and kernels differ by CPU): logits
# agree to about 1e-5 here; 1e-3 of a logit (at most 2.5e-4 of P(fake)) leaves room for any CPU and still catches a
# wrong preprocessing, pooling or head, which move logits by far more.
LOGIT_TOL = 1e-3


def fp32(model):
    """The PyTorch model computing at fp32, whatever its card's precision (bf16 where the CPU has it)."""
    return dataclasses.replace(model, card=dataclasses.replace(model.card, precision="fp32"))


@pytest.fixture(scope="module")
def exported(baseline, tmp_path_factory):
    from fakefinder.models.onnxfile import export_onnx

    return export_onnx(load_model(baseline.model_path), tmp_path_factory.mktemp("onnx") / "detector.onnx")


@pytest.fixture(scope="module")
def crops(learnable):
    files = load_dataset(learnable.out).crop_files
    return load_crops(files[:: max(1, len(files) // 12)][:12])


@pytest.fixture(scope="module")
def video(learnable):
    return learnable.out.parent / "swap" / f"{load_dataset(learnable.out).video_ids[-1]}.mp4"


def test_the_onnx_detector_gives_pytorchs_fp32_scores_and_carries_its_card(baseline, exported, crops):
    from fakefinder.inference.framing import settings_like
    from fakefinder.models.onnxfile import OnnxModel, load_onnx, read_onnx_card
    from fakefinder.models.scoring import DifferentiableModel, ScoringModel

    model = load_model(baseline.model_path)
    onnx_model = load_onnx(exported)
    assert isinstance(onnx_model, OnnxModel) and onnx_model.card == read_onnx_card(exported) == model.card
    assert settings_like(exported) == settings_like(baseline.model_path)  # prepare --like reads either alike
    assert isinstance(onnx_model, ScoringModel) and not isinstance(onnx_model, DifferentiableModel)
    assert onnx_model.threshold == model.threshold and onnx_model.compute == "fp32"
    want = fp32(model).face_logits(crops)
    got = onnx_model.face_logits(crops)
    assert got.shape == want.shape == (len(crops),) and np.ptp(want) > 10 * LOGIT_TOL  # not all alike
    np.testing.assert_allclose(got, want, atol=LOGIT_TOL, rtol=LOGIT_TOL)
    np.testing.assert_allclose(onnx_model.predict_faces(crops), model.card.calibration.apply(want), atol=LOGIT_TOL)
    assert onnx_model.face_logits(crops[:1]).shape == (1,) and onnx_model.face_logits([]).shape == (0,)


# What a cold `predict` on the ONNX path must not import (the packages it has no use for; PyTorch alone is a
# second of every cold start): checked in a fresh process, for a .onnx file and a .safetensors model whose export
# is cached. ml_dtypes, which the onnx package's __init__ imports, took 1.2 s of a 2-core machine's cold start.
NOT_IMPORTED = ("torch", "torchvision", "timm", "safetensors", "onnxscript", "captum", "mlflow", "optuna", "ray",
                "fastapi", "matplotlib", "sklearn", "ml_dtypes")


def _predict_in_a_fresh_process(*args: str, prelude: str = "") -> tuple[list[dict], list[str], str]:
    """(predict's JSON, the packages of NOT_IMPORTED it imported, stderr), run through the CLI in a new process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = (f"{prelude}\nimport sys; from fakefinder._cli import main; code = main(['predict', *sys.argv[1:], "
            "'--json', '-']); print('imported:', *sorted({m.partition('.')[0] for m in sys.modules} & "
            f"set({NOT_IMPORTED!r})), file=sys.stderr); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr.strip().splitlines()[-1].split()[1:], proc.stderr


def test_predict_with_the_onnx_runtime_gives_pytorchs_verdict(baseline, exported, video, tmp_path):
    torch_detector = load_detector(baseline.model_path, device="cpu", runtime="torch")
    torch_detector.model = fp32(torch_detector.model)
    want = torch_detector.predict_video(video)
    load_detector(baseline.model_path)  # caches the export of the .safetensors model
    for model in (exported, baseline.model_path):
        got, imported, _ = _predict_in_a_fresh_process(str(model), str(video))
        assert imported == [], f"predict {model.name} imported {imported}"
        got = got[0]
        assert got["verdict"] == want.verdict and got["p_fake"] == pytest.approx(want.p_fake, abs=LOGIT_TOL)
        assert got["faces"] == want.faces and got["threshold"] == want.threshold
    by_runtime = load_detector(baseline.model_path, runtime="onnx")
    assert by_runtime.card == load_model(baseline.model_path).card
    assert by_runtime.predict_video(video).p_fake == pytest.approx(want.p_fake, abs=LOGIT_TOL)
    with pytest.raises(OptionError, match="must be onnx"):
        load_detector(exported, runtime="torch")
    if importlib.util.find_spec("captum"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(exported), str(video),
                               "--explain", str(tmp_path / "heat")], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--runtime torch" in proc.stderr
        assert not (tmp_path / "heat").exists()


def test_evaluate_and_serve_run_an_onnx_model(baseline, exported, learnable, video, tmp_path):
    from fakefinder import ServeSettings, evaluate
    from fakefinder.serve.jobs import JobQueue

    torch_result = evaluate(baseline.model_path, learnable.out, load=LoadOptions(runtime="torch"))
    onnx_result = evaluate(exported, learnable.out)
    on_onnx, on_torch = onnx_result.whole.evaluation.frame, torch_result.whole.evaluation.frame
    assert on_onnx.n == on_torch.n == len(load_dataset(learnable.out))
    # the PyTorch side runs at the card's precision from float16 cached features: close, not equal
    assert on_onnx.auc == pytest.approx(on_torch.auc, abs=0.02)
    queue = JobQueue({"m": str(exported)}, ServeSettings(concurrent_verdicts=1), root=tmp_path / "jobs")
    try:
        job = queue.new_job("clip.mp4", None)
        shutil.copy(video, queue.input_path(job))
        queue.submit_file(job)
        queue.wait(job, 120)
        assert job.state == "done", job.error
        view = queue.view(job)
        assert view["heatmaps"] == [] and "ONNX" in view["heatmaps_note"]
        assert queue.result(job)["verdict"] in ("REAL", "FAKE", "INCONCLUSIVE")
    finally:
        queue.close()


def _cached(model_path):
    from fakefinder._files import sha256_file
    from fakefinder.models.onnxcache import cached_path

    return cached_path(sha256_file(model_path))


def test_the_default_runtime_is_onnx_runtime_through_an_export_cached_once(baseline, crops, onnx_cache, tmp_path):
    from fakefinder.models.modelfile import DeepfakeModel, save_model
    from fakefinder.models.onnxcache import default_runtime
    from fakefinder.models.onnxfile import OnnxModel, load_onnx

    cached = _cached(baseline.model_path)
    assert cached.parent == onnx_cache / "onnx"  # tests never write the user's cache
    cached.unlink(missing_ok=True)
    detector = load_detector(baseline.model_path)
    assert isinstance(detector.model, OnnxModel) and detector.model.path == cached
    assert load_onnx(cached).card == detector.card == load_model(baseline.model_path).card
    written = cached.stat()
    again = load_detector(baseline.model_path)
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # read, not exported again
    assert not [p for p in cached.parent.iterdir() if p.suffix != ".onnx"]  # no temporary left beside it
    want = fp32(load_model(baseline.model_path)).face_logits(crops)
    for d in (detector, again):
        np.testing.assert_allclose(d.model.face_logits(crops), want, atol=LOGIT_TOL, rtol=LOGIT_TOL)
    # heatmaps: the same model file on PyTorch, loaded when first asked for, once
    assert detector.explains and isinstance(detector.differentiable(), DeepfakeModel)
    assert detector.differentiable() is detector.differentiable()
    # a base trained at bf16 by name keeps it, and a GPU is PyTorch's: both stay on PyTorch
    model = load_model(baseline.model_path)
    named = dataclasses.replace(model.card, precision="bf16", train={**model.card.train, "precision": "bf16"})
    bf16 = save_model(tmp_path / "bf16.safetensors", dataclasses.replace(model, card=named))
    assert isinstance(load_detector(bf16).model, DeepfakeModel) and not _cached(bf16).exists()
    assert default_runtime(baseline.model_path, "cuda") == "torch"
    assert default_runtime(baseline.model_path, "cpu") == default_runtime(baseline.model_path, "auto") == "onnx"


def test_a_deadline_stops_an_onnx_runtime_call_already_running(baseline, crops):
    """serve's --inference-timeout reaches into a call that never returns (ONNX Runtime's terminate flag), not
    only between frames; outside a deadline, and before it, scores are as ever."""
    import time

    from fakefinder.errors import DeadlineError
    from fakefinder.models.onnxfile import INPUT, _run, deadline

    model = load_detector(baseline.model_path).model
    want = model.face_logits(crops)
    many = {INPUT: model.preprocess_one.batch(crops * 30)}  # 360 faces in one call
    start = time.monotonic()
    _run(model.session, many)
    alone = time.monotonic() - start
    with deadline(time.monotonic() + 60, "too late"):  # before it: as ever
        np.testing.assert_allclose(model.face_logits(crops), want, atol=1e-6)
    with deadline(time.monotonic() + 0.25 * alone, "too late"):
        start = time.monotonic()
        with pytest.raises(DeadlineError, match="^too late$"):
            _run(model.session, many)
        assert time.monotonic() - start < 0.75 * alone, alone  # stopped mid-way, not at the end
        with pytest.raises(DeadlineError, match="^too late$"):  # past it: not started
            model.face_logits(crops)
    np.testing.assert_allclose(model.face_logits(crops), want, atol=1e-6)


def test_a_damaged_cached_export_is_refused_and_exported_again(baseline, crops):
    import onnx

    from fakefinder.models.onnxfile import load_onnx

    load_detector(baseline.model_path)
    cached = _cached(baseline.model_path)
    want = load_onnx(cached).face_logits(crops)
    proto = onnx.load(str(cached))
    weights = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    weights.raw_data = bytes(len(weights.raw_data))  # zeroed: the graph changed, its digest did not
    for damaged in (proto.SerializeToString(), cached.read_bytes()[:1000]):
        cached.write_bytes(damaged)
        detector = load_detector(baseline.model_path)
        np.testing.assert_allclose(detector.model.face_logits(crops), want, atol=LOGIT_TOL, rtol=LOGIT_TOL)
        assert cached.read_bytes() != damaged
        np.testing.assert_array_equal(load_onnx(cached).face_logits(crops), want)  # written again, whole


def test_a_cache_that_cannot_be_written_keeps_the_export_in_memory(baseline, crops, tmp_path, monkeypatch):
    from fakefinder._files import CACHE_ENV
    from fakefinder.models.onnxfile import OnnxModel

    # A file where the cache folder should be: no folder can be made in it, whoever runs the test (a folder
    # without write permission would not stop root)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    detector = load_detector(baseline.model_path)
    assert isinstance(detector.model, OnnxModel) and detector.model.path is None
    want = fp32(load_model(baseline.model_path)).face_logits(crops)
    np.testing.assert_allclose(detector.model.face_logits(crops), want, atol=LOGIT_TOL, rtol=LOGIT_TOL)
    assert blocked.read_text() == "" and sorted(tmp_path.iterdir()) == [blocked]


def test_without_onnxruntime_pytorch_gives_the_verdict(baseline, video):
    want = load_detector(baseline.model_path, runtime="torch").predict_video(video)
    load_detector(baseline.model_path)  # a cached export is there: still not used without ONNX Runtime
    got, imported, stderr = _predict_in_a_fresh_process(str(baseline.model_path), str(video),
                                                        prelude=without("onnxruntime"))
    assert "torch" in imported and "onnx" not in stderr.lower()  # nothing the user must act on
    assert got[0]["p_fake"] == pytest.approx(want.p_fake, abs=1e-9) and got[0]["verdict"] == want.verdict


def _refused(path, *reasons: str, card_reads: bool = False) -> None:
    """Loading `path` is refused in one line naming it and a reason; so is reading its card (`prepare --like`),
    unless the card is sound and only ONNX Runtime refuses the graph."""
    from fakefinder.models.onnxfile import load_onnx, read_onnx_card

    for read in (load_onnx,) if card_reads else (load_onnx, read_onnx_card):
        with pytest.raises(UsageError) as caught:
            read(path)
        text = str(caught.value)
        assert "\n" not in text and str(path) in text and any(r in text for r in reasons), text


def test_a_foreign_or_damaged_onnx_file_is_refused_in_one_line(exported, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logit"])], "foreign",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 224, 224])],
                              [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["n", 3, 224, 224])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    _refused(foreign, "no fakefinder metadata")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(foreign), str(foreign)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no fakefinder metadata" in proc.stderr

    (tmp_path / "text.onnx").write_bytes(b"\xff\xfe not a protobuf at all \x00\x01" * 50)
    _refused(tmp_path / "text.onnx", "not an ONNX file", "no fakefinder metadata")

    proto = onnx.load(str(exported))
    meta = {p.key: p for p in proto.metadata_props}
    card = json.loads(meta["fakefinder"].value)
    card["verdict"]["threshold"] = 0.01  # a plausible edit: still a valid card
    meta["fakefinder"].value = json.dumps(card)
    onnx.save(proto, str(tmp_path / "card.onnx"))
    _refused(tmp_path / "card.onnx", "digest does not match")

    meta["fakefinder"].value = "{not json"
    onnx.save(proto, str(tmp_path / "garbled.onnx"))
    _refused(tmp_path / "garbled.onnx", "card does not parse")

    proto = onnx.load(str(exported))
    weights = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    weights.raw_data = bytes(len(weights.raw_data))  # zeroed: the graph changed, the metadata did not
    onnx.save(proto, str(tmp_path / "graph.onnx"))
    _refused(tmp_path / "graph.onnx", "digest does not match")


def test_a_frozen_base_extracts_pytorchs_fp32_features_with_onnx_runtime(learnable, tmp_path):
    from fakefinder import TrainSettings, fit_detector
    from fakefinder.models.backbones import create_backbone
    from fakefinder.models.features import FeatureCache

    files = list(load_dataset(learnable.out).crop_files[:16])
    backbone = create_backbone("efficientnet_lite0")
    with_onnx = FeatureCache(tmp_path / "onnx", backbone, "avg", runtime="onnx")
    with_torch = FeatureCache(tmp_path / "torch", backbone, "avg", precision="fp32")
    assert with_onnx.dir.name == with_torch.dir.name  # one fp32 folder: equal features, whichever ran the base
    got, want = with_onnx.features(files).take(np.arange(16)), with_torch.features(files).take(np.arange(16))
    # both stored as float16 (5e-4 relative): the runtimes' 1e-5 difference shows only where a value rounds apart
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
    graphs = sorted(with_onnx.dir.glob("base-*.onnx"))
    assert len(graphs) == 1 and backbone.weights_digest[:16] in graphs[0].name
    with pytest.raises(OptionError, match="fine-tuning"):
        fit_detector(learnable.out, TrainSettings(trainable_blocks=1), compute=Compute(runtime="onnx"))
    trained = fit_detector(learnable.out, TrainSettings(epochs=2), compute=Compute(cache_dir=tmp_path / "onnx",
                                                                                   runtime="onnx"))
    assert trained.model.card.precision == "fp32" and trained.evaluations["test"].frame.n > 0


def _stamped_graph(nodes, path, *, functions=(), evidence=None) -> None:
    """A graph (N, 3, 224, 224) -> logit stamped as `export` stamps its files: card, format marker and digest."""
    import onnx
    from onnx import TensorProto, helper

    from fakefinder.models.modelcard import BaseCard, Calibration, Evidence, HeadSpec, ModelCard, Verdict
    from fakefinder.models.onnxfile import OPSET, _stamp

    graph = helper.make_graph(nodes, "swapped", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                               ["n", 3, 224, 224])],
                              [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], functions=list(functions))
    card = ModelCard(base=BaseCard(backbone="efficientnet_lite0"), head=HeadSpec(in_features=1280),
                     calibration=Calibration(), verdict=Verdict(), precision="fp32", prepare=None,
                     evidence=evidence or Evidence(), dataset="data")
    onnx.save(_stamp(model, card, "fp32"), str(path))


def test_a_graph_with_operators_export_never_writes_is_refused_at_load(tmp_path):
    """A Loop of 10^15 turns (stamped again, as anyone can) would hang predict: refused before a session exists,
    in the graph, inside a subgraph, or as a custom-domain operator."""
    from onnx import TensorProto, helper

    body = helper.make_graph([helper.make_node("Identity", ["cond"], ["cond_out"]),
                              helper.make_node("Identity", ["x"], ["x_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None)])
    turns = helper.make_tensor("turns", TensorProto.INT64, [], [10**15])
    go = helper.make_tensor("go", TensorProto.BOOL, [], [True])
    loop = [helper.make_node("Constant", [], ["turns"], value=turns), helper.make_node("Constant", [], ["go"],
                                                                                       value=go),
            helper.make_node("Loop", ["turns", "go", "image"], ["looped"], body=body),
            helper.make_node("ReduceMean", ["looped"], ["logit"], keepdims=0)]
    _stamped_graph(loop, tmp_path / "loop.onnx")
    _refused(tmp_path / "loop.onnx", "operator 'Loop'")

    mean = helper.make_node("ReduceMean", ["image"], ["logit"], keepdims=0)
    branch = helper.make_graph([helper.make_node("Loop", ["turns", "go", "image"], ["y"], body=body)], "then", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    hidden = helper.make_node("If", ["go"], ["unused"], then_branch=branch, else_branch=branch)
    _stamped_graph([helper.make_node("Constant", [], ["go"], value=go), hidden, mean], tmp_path / "if.onnx")
    _refused(tmp_path / "if.onnx", "operator 'If'")

    custom = helper.make_node("Spin", ["image"], ["logit"], domain="com.example")
    _stamped_graph([custom], tmp_path / "custom.onnx")
    _refused(tmp_path / "custom.onnx", "operator 'com.example.Spin'")

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(tmp_path / "loop.onnx"),
                           str(tmp_path / "loop.onnx")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "'Loop'" in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite0", "vgg16", "xception"])
def test_what_export_writes_for_each_backbone_family_is_within_the_allowed_operators(name):
    """OPERATORS is declared, not guessed: one member of each family (b0 and lite0 differ), both poolings, a head
    with dropout, exported as `export` does, uses only those operators."""
    from fakefinder.models.backbones import create_backbone
    from fakefinder.models.head import Head, in_features
    from fakefinder.models.modelcard import HeadSpec
    from fakefinder.models.onnxfile import OUTPUT, _traced, foreign_operator

    backbone = create_backbone(name, weights="none")
    channels, side, _ = backbone.feature_shape()
    for pool in ("flatten", "avg"):
        head = Head(HeadSpec(in_features=in_features(channels, side, pool), n_layers=1, n_neurons=4, dropout=0.5,
                             pool=pool)).eval()
        proto = _traced(backbone, pool, head, what=name, output=OUTPUT)
        assert foreign_operator(proto) is None, (name, pool, foreign_operator(proto))


def test_a_graph_onnx_runtime_cannot_load_is_refused_in_one_line(tmp_path):
    """Stamped like an export, allowed operators only, but not a valid graph: one line, not ONNX Runtime's
    traceback."""
    from onnx import helper

    broken = [helper.make_node("Add", ["image", "nowhere"], ["sum"]),
              helper.make_node("ReduceMean", ["sum"], ["logit"], keepdims=0)]
    _stamped_graph(broken, tmp_path / "broken.onnx")
    _refused(tmp_path / "broken.onnx", "ONNX Runtime cannot load it", card_reads=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(tmp_path / "broken.onnx"),
                           str(tmp_path / "broken.onnx")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


def test_card_text_printed_to_the_terminal_has_no_control_characters(tmp_path):
    """A card's text is anyone's: an escape sequence in its name would be obeyed by the terminal predict prints
    to. Printed without them (the JSON keeps the text as written, escaped by JSON)."""
    import cv2
    from media import coffee
    from onnx import helper

    from fakefinder.models.modelcard import Evidence

    name = "m\x1b]0;owned\x07\x1b[2J\u202eevil"
    _stamped_graph([helper.make_node("ReduceMean", ["image"], ["logit"], keepdims=0)], tmp_path / "m.onnx",
                   evidence=Evidence(name=name, train_videos=10, val_videos=5, test_videos=0))
    cv2.imwrite(str(tmp_path / "coffee.jpg"), coffee())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(tmp_path / "m.onnx"),
                           str(tmp_path / "coffee.jpg")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "m]0;owned[2Jevil was trained on 10 videos" in proc.stdout, proc.stdout
    assert not any(c in proc.stdout + proc.stderr for c in "\x1b\x07\u202e")
