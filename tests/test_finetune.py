"""Fine-tuning: it learns with the defaults, resumes to exactly the uninterrupted result, and runs under
DistributedDataParallel (gloo, two processes) to the one-process result at the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fakefinder import Compute, TrainSettings, fit_detector
from fakefinder.models.features import crop_digest
from fakefinder.models.modelfile import load_model
from fakefinder.training.core import PHASES
from fakefinder.training.finetune import TIMING_KEYS

SMALL = dict(trainable_blocks=2, input_size=96, epochs=4, batch_size=8, patience=0, seed=3)
TINY = dict(trainable_blocks=2, input_size=64, epochs=2, batch_size=8, patience=0, seed=3, probe=False)


def without_timing(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in epochs]


@pytest.mark.slow
def test_fine_tuning_with_the_defaults_learns(learnable, tmp_path):
    trained = fit_detector(learnable.out, TrainSettings(**SMALL), compute=Compute(cache_dir=tmp_path, processes=0))
    losses = [e["train_loss"] for e in trained.history.epochs]
    assert losses[-1] < losses[0] and trained.probe_history is not None  # started from the linear probe
    assert trained.model.card.base.included and trained.val.frame.auc > 0.8
    phases = trained.phases  # where the wall time went, each epoch's validation within fine-tuning
    assert list(phases) == list(PHASES) and sum(phases.values()) <= trained.seconds < sum(phases.values()) + 1
    assert 0 < sum(e["val_seconds"] for e in trained.history.epochs) < phases["fine_tune"]
    # the probe extracted the features of what it fits and watches, not the test part's: fine-tuning scores those
    cached = {d for sidecar in tmp_path.rglob("shard-*.json") for d in json.loads(sidecar.read_text())["digests"]}
    files = trained.dataset.crop_files
    assert {crop_digest(f) for f in files[trained.part_rows("val")]} <= cached
    assert not {crop_digest(f) for f in files[trained.part_rows("test")]} & cached
    # the val logits are the last validation's, not scored again: those of the weights the model ended with
    assert trained.logits["val"] is trained.history.val_logits
    again = trained.model.file_logits(files[trained.part_rows("val")])  # batched otherwise: bf16 moves last digits
    np.testing.assert_allclose(trained.logits["val"], again, atol=1e-4 if trained.model.card.precision == "fp32"
                               else 3e-2 * np.ptp(again))


@pytest.mark.slow
def test_the_input_pipeline_gives_the_same_batches_whatever_the_number_of_workers(prepared, tmp_path):
    config = TrainSettings(**TINY)
    a = fit_detector(prepared.out, config, compute=Compute(cache_dir=tmp_path, processes=0))
    b = fit_detector(prepared.out, config, compute=Compute(cache_dir=tmp_path, processes=2))
    assert without_timing(a.history.epochs) == without_timing(b.history.epochs)
    np.testing.assert_array_equal(a.logits["test"], b.logits["test"])


def test_a_checkpoint_of_another_format_is_refused_in_one_line_naming_it(tmp_path):
    from fakefinder.errors import UsageError
    from fakefinder.training.finetune import CHECKPOINT_FORMAT, read_checkpoint

    path = tmp_path / "run.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 2}, path)
    assert read_checkpoint(path, torch.device("cpu"))["epoch"] == 2
    torch.save({"format": CHECKPOINT_FORMAT + 1, "epoch": 2}, path)
    with pytest.raises(UsageError, match=f"^{path}: a checkpoint of format {CHECKPOINT_FORMAT + 1}, not ") as caught:
        read_checkpoint(path, torch.device("cpu"))
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_uninterrupted_result(learnable, tmp_path):
    """Kill a fine-tuning run after an epoch's checkpoint (SIGKILL: nothing runs on exit), resume it, and
    compare with the same run left alone: the same epochs, the same weights, the same test scores. It averages the
    weights of its last 80% of steps, so every checkpoint holds a mean begun."""
    args = ["--trainable-blocks", "2", "--input-size", "64", "--epochs", "3", "--batch-size", "8", "--patience",
            "0", "--seed", "3", "--average-weights", "0.8", "--loader-processes", "0", "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--quiet"]
    killed_out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fakefinder", "train", str(learnable.out), *args, "--out", str(killed_out),
           "--cache", str(tmp_path / "cache")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = killed_out / ".checkpoints"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(checkpoints.glob("*.pt"))
        saved = torch.load(found[0], weights_only=True) if found else {}
        if saved.get("epoch", 0) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved["average"]["n_averaged"] > 0  # the mean so far, which the resumed run continues
    resumed = subprocess.run([*cmd, "--resume", "--json", str(tmp_path / "resumed.json")], capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    once = subprocess.run([sys.executable, "-m", "fakefinder", "train", str(learnable.out), *args, "--out",
                           str(tmp_path / "once"), "--cache", str(tmp_path / "cache"), "--json",
                           str(tmp_path / "once.json")], capture_output=True, text=True)
    assert once.returncode == 0, once.stderr[-2000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("resumed", "once"))
    assert a["test"] == b["test"] and a["val"] == b["val"] and a["epochs_completed"] == b["epochs_completed"] == 3
    ma, mb = load_model(a["model_path"]), load_model(b["model_path"])
    for (k, v), w in zip(ma.backbone.module.state_dict().items(), mb.backbone.module.state_dict().values()):
        assert torch.equal(v, w), k
    assert not list(checkpoints.glob("*.pt"))  # finished: nothing left to resume
    import mlflow

    runs = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["1"])
    resumed_run = next(r for r in runs if r.info.run_id == a["run_id"])
    assert resumed_run.info.status == "FINISHED"  # the killed run was continued, not started again
    assert len(runs) == 2


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo over loopback")
def test_two_processes_under_torchrun_match_one_process_at_the_same_global_batch(prepared, tmp_path):
    """DDP averages the two halves' gradients: the same as one process on the whole batch, up to float error
    (the last batch is split unequally: the loss is weighted so that it still is)."""
    args = ["train", str(prepared.out), "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--trainable-blocks", "all", "--pool", "avg", "--epochs", "2", "--batch-size", "8", "--patience", "0",
            "--no-probe", "--augment", "flip,noise", "--loader-processes", "0", "--tracking-uri", "none", "--quiet",
            "--device", "cpu", "--precision", "fp32"]  # DDP's arithmetic, not bf16's rounding, is under test
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "fakefinder", *args, "--out", str(tmp_path / "one"), "--json",
                          str(tmp_path / "one.json")], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29533", "-m", "fakefinder", *args, "--out", str(tmp_path / "two"),
                          "--json", str(tmp_path / "two.json")], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    ma, mb = load_model(a["model_path"]), load_model(b["model_path"])
    # Float error only: summation order differs between one process and two, and on some CPUs' kernels Adam's
    # normalised steps carry it to 8e-4 of a tensor's largest value (measured on an AMX Xeon). The base learns at
    # 1e-4 a step for 8 steps: a wrong split of the batch or of its seeds shows as differences of that order, above
    # this tolerance (2e-3 of each tensor's largest value: 3e-5 to 4e-4 here).
    for (k, v), w in zip(ma.backbone.module.state_dict().items(), mb.backbone.module.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=2e-3 * float(v.abs().max()), msg=k)
    for part in ("val", "test"):
        assert a[part]["frame"]["log_loss"] == pytest.approx(b[part]["frame"]["log_loss"], abs=1e-4)
    assert len(list((tmp_path / "two").glob("*.safetensors"))) == 1  # one process writes


@pytest.mark.parametrize("rows, world, shares", [(10, 2, [[2, 2], [2, 2], [1, 1]]), (9, 2, [[2, 2], [2, 2]]),
                                                 (9, 1, [[4], [4], [1]]), (11, 4, [[1, 1, 1, 1], [1, 1, 1, 1]])])
def test_every_process_gets_a_share_of_every_batch(rows, world, shares):
    """A last batch with fewer samples than processes is left out, so no process runs out while others wait."""
    from fakefinder.training.loader import EpochBatches

    samplers = [EpochBatches(np.arange(rows), 4, 0, shuffle=True, rank=r, world=world) for r in range(world)]
    got = [list(map(len, step)) for step in zip(*(list(s) for s in samplers))]
    assert got == shares and all(len(s) == len(shares) for s in samplers)
    assert [samplers[0].global_size(i) for i in range(1, len(shares) + 1)] == [sum(step) for step in shares]


def test_progressive_resizing_feeds_each_epoch_its_side_growing_to_the_input_size(tmp_path):
    """`--progressive` (cheaper early epochs): the side grows evenly from the first epoch's to the input size, which
    the last epoch trains at, as the model is validated and used."""
    import cv2

    from fakefinder.models.backbones import Preprocess
    from fakefinder.training.loader import CropDataset, epoch_sides

    assert epoch_sides(160, 224, 6) == (160, 176, 184, 200, 208, 224) and epoch_sides(128, 224, 1) == (224,)
    for first, full, epochs in [(32, 64, 3), (150, 380, 100), (224, 224, 4)]:
        sides = epoch_sides(first, full, epochs)
        assert len(sides) == epochs and abs(sides[0] - first) <= 4 and sides[-1] == full
        assert list(sides) == sorted(sides) and all(s % 8 == 0 for s in sides[:-1])
    path = tmp_path / "crop.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8))
    files, labels, preprocess = np.array([str(path)]), np.zeros(1), Preprocess(64, (0.5,) * 3, (0.25,) * 3)
    growing = CropDataset(files, labels, preprocess, None, 0, sides=(32, 48, 64))
    plain = CropDataset(files, labels, preprocess, None, 0)
    assert [tuple(growing[0, epoch][0].shape) for epoch in (1, 2, 3)] == [(3, 32, 32), (3, 48, 48), (3, 64, 64)]
    assert torch.equal(growing[0, 3][0], plain[0, 3][0])


@pytest.mark.slow
def test_pair_batches_reach_the_fine_tuning_order_and_the_card(prepared, tmp_path):
    """Each fake beside its original changes the batches (hence the first epoch's loss); the card records it."""
    compute = Compute(cache_dir=tmp_path, processes=0)
    shuffled, paired = (fit_detector(prepared.out, TrainSettings(**TINY, pair_batches=pairs), compute=compute)
                        for pairs in (False, True))
    assert (paired.model.card.train["pair_batches"], shuffled.model.card.train["pair_batches"]) == ("True", "False")
    assert paired.history.epochs[0]["train_loss"] != shuffled.history.epochs[0]["train_loss"]


@pytest.mark.slow
def test_a_progressively_resized_run_trains_its_early_epochs_smaller_and_records_it(prepared, tmp_path):
    from fakefinder.errors import OptionError

    with pytest.raises(OptionError, match="progressive.*--trainable-blocks K > 0"):
        TrainSettings(progressive=32)  # a frozen base has no images to resize
    with pytest.raises(OptionError, match="progressive.*96 is above the base's input size 64") as caught:
        fit_detector(prepared.out, TrainSettings(**TINY, progressive=96))
    assert "\n" not in str(caught.value)
    compute = Compute(cache_dir=tmp_path, processes=0)
    steady = fit_detector(prepared.out, TrainSettings(**TINY), compute=compute)
    growing = fit_detector(prepared.out, TrainSettings(**TINY, progressive=32), compute=compute)
    assert (growing.model.card.train["progressive"], steady.model.card.train["progressive"]) == ("32", "none")
    first, last = (e["train_loss"] for e in growing.history.epochs)
    assert first != steady.history.epochs[0]["train_loss"] and np.isfinite(last)
    assert growing.model.card.base.input_size == 64  # validated, scored and used at the input size


def test_average_weights_keeps_the_mean_of_the_last_steps_validates_it_and_resumes_to_it(tmp_path):
    """`--average-weights F`: the model kept is the mean of the weights after each of the last F of the steps (SWA,
    densely), validation scores that mean, and a run stopped after a checkpoint resumes to the same mean."""
    from fakefinder.training.finetune import Loop, fit, param_groups

    gen = torch.Generator().manual_seed(0)
    x, xv = torch.randn(64, 5, generator=gen), torch.randn(16, 5, generator=gen)
    y = (x[:, 0] > 0).float()

    def run(fraction: float, *, checkpoint=None, resume=False, stop_at=None):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(5, 1), torch.nn.Flatten(0))
        after: list[list[torch.Tensor]] = []  # the weights after each step

        def batches(epoch):
            if epoch == stop_at:
                raise KeyboardInterrupt  # killed after the previous epoch's checkpoint
            for s in range(0, 64, 16):
                yield x[s:s + 16], y[s:s + 16]
                after.append([p.detach().clone() for p in model.parameters()])

        config = TrainSettings(epochs=3, patience=0, lr=0.1, average_weights=fraction)
        loop = Loop(model=model, batches=batches, steps_per_epoch=4, images_per_epoch=64,
                    val_logits=lambda: model(xv).detach().double().numpy(), val_y=np.tile([0.0, 1.0], 8),
                    train_y=y.numpy(), groups=param_groups(model, None, config), checkpoint=checkpoint)
        history = fit(loop, config, resume=resume)
        return model, after, history

    plain, after, _ = run(0.0)
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), after[-1]))  # the last step's weights
    model, after, history = run(0.5)  # 12 steps: the mean of steps 7 to 12
    mean = [torch.stack(w).mean(0) for w in zip(*after[6:])]
    for p, q in zip(model.parameters(), mean):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-6)
    assert not torch.allclose(next(model.parameters()), after[-1][0])
    np.testing.assert_allclose(history.val_logits, model(xv).detach().double().numpy(), rtol=0, atol=1e-6)
    # stopped after epoch 2, when 2 steps had been averaged, then resumed: the same mean
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(0.5, checkpoint=path, stop_at=3)
    resumed, _, _ = run(0.5, checkpoint=path, resume=True)
    for p, q in zip(resumed.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


@pytest.mark.parametrize("clip", [None, 0.05])
def test_sam_steps_with_the_gradient_taken_rho_along_the_ascent_and_leaves_the_weights_and_statistics_as_found(clip):
    """`--sam RHO`: each step is the optimiser's step from the weights it started at, with the gradient taken at
    those weights moved RHO along their normalised gradient (computed here by hand with autograd); BatchNorm
    statistics that train move once a step, as without SAM."""
    from fakefinder.training.finetune import Loop, fit, make_optimizer, param_groups

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen)
    y = (x[:, 0] > 0).float()

    def model_():
        torch.manual_seed(1)
        # no bias before the norm: its gradient is rounding noise, which Adam's first step turns into a whole step
        return torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1),
                                   torch.nn.Flatten(0))

    config = TrainSettings(epochs=1, patience=0, lr=0.1, warmup=0.0, schedule="constant", sam=0.5, grad_clip=clip)
    model = model_()
    loop = Loop(model=model, batches=lambda epoch: [(x, y)], steps_per_epoch=1, images_per_epoch=16, val_logits=None,
                val_y=None, train_y=y.numpy(), groups=param_groups(model, None, config))
    fit(loop, config)

    by_hand = model_()
    by_hand.train()
    mean_loss = torch.nn.BCEWithLogitsLoss()
    grads = torch.autograd.grad(mean_loss(by_hand(x), y), list(by_hand.parameters()))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    moved = model_()
    moved.train()
    with torch.no_grad():
        for p, g in zip(moved.parameters(), grads):
            p.add_(g * (0.5 / norm))
    for p, g in zip(by_hand.parameters(), torch.autograd.grad(mean_loss(moved(x), y), list(moved.parameters()))):
        p.grad = g
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(list(by_hand.parameters()), clip)
    make_optimizer(param_groups(by_hand, None, config), config).step()
    for p, q in zip(model.parameters(), by_hand.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    plain = model_()  # one forward at the starting weights: the statistics SAM's step must leave
    plain.train()
    plain(x)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(model[1], name), getattr(plain[1], name), rtol=0, atol=1e-7)
    from fakefinder.errors import OptionError

    with pytest.raises(OptionError, match="sam"):
        TrainSettings(sam=-1.0)


def test_blend_map_adds_where_the_blend_is_to_the_step_and_leaves_the_loss_reported_alone():
    """`--blend-map W`: each step differentiates the classification loss plus W times each image's mean binary
    cross-entropy between a 1 x 1 convolution of the base's last map and the share of each cell its mask covers
    (computed here by hand); an image whose mask is unknown (a fake of the data's own) adds nothing, and the loss
    reported is the classification's alone."""
    from fakefinder.models.backbones import Recipe
    from fakefinder.models.head import in_features, pooled
    from fakefinder.training.core import FineTuneModel, _new_head, _unfreeze
    from fakefinder.training.finetune import Loop, fit, make_optimizer, param_groups

    config = TrainSettings(fakes="self-blended", trainable_blocks="all", weights="none", input_size=64, epochs=1,
                           patience=0, lr=0.01, warmup=0.0, schedule="constant", grad_clip=None, blend_map=2.0)

    def model_() -> FineTuneModel:
        backbone = Recipe.of(config).build()
        _unfreeze(backbone, "all")
        channels, side, _ = backbone.feature_shape()
        model = FineTuneModel(backbone, _new_head(in_features(channels, side, config.pool), config, "cpu"),
                              config.pool, "fp32", config.bn, config.blend_map)
        for p in model.blend_map.parameters():  # not zero as a run starts it: the base's gradient shows then
            torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(5))
        return model

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 64, 64, generator=gen), torch.tensor([0.0, 1.0, 1.0, 0.0])
    mask = torch.zeros(4, 64, 64)
    mask[1, 10:50, 20:40] = 0.75  # a pseudo-fake blended at 0.75
    mask[2] = 1.0  # a fake whose blend is unknown
    known = torch.tensor([1.0, 1.0, 0.0, 1.0])
    model = model_()
    loop = Loop(model=model, batches=lambda epoch: [(x, y, mask, known)], steps_per_epoch=1, images_per_epoch=4,
                val_logits=None, val_y=None, train_y=y.numpy(), groups=param_groups(model, None, config))
    history = fit(loop, config)

    by_hand = model_()
    by_hand.train()
    torch.manual_seed(config.seed * 100_003 + 1)  # the epoch's stochastic depth, as `fit` seeds it
    maps = by_hand.backbone.features(x)
    classified = torch.nn.functional.binary_cross_entropy_with_logits(by_hand.head(pooled(maps, config.pool)), y)
    z = by_hand.blend_map(maps)[:, 0]  # (4, 2, 2): a cell is 32 x 32 pixels
    share = mask.reshape(4, 2, 32, 2, 32).mean(dim=(2, 4))
    cross = torch.nn.functional.softplus(z) - z * share
    loss = classified + 2.0 * (cross.mean(dim=(1, 2)) * known).sum() / 4
    params = [p for p in by_hand.parameters() if p.requires_grad]
    for p, g in zip(params, torch.autograd.grad(loss, params)):
        p.grad = g
    make_optimizer(param_groups(by_hand, None, config), config).step()
    moved = 0
    for p, q, start in zip(model.parameters(), by_hand.parameters(), model_().parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        moved += not torch.equal(p, start)
    assert moved > 10  # the base moved too
    assert history.epochs[0]["train_loss"] == pytest.approx(float(classified.detach()), abs=1e-6)
