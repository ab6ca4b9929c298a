"""How the command line behaves around the work: progress people can follow, signals, pipes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakefinder", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


@pytest.mark.slow
def test_fine_tuning_reports_each_epoch_with_speed_and_eta_when_output_is_a_file(prepared, tmp_path):
    proc = cli("train", prepared.out, "--trainable-blocks", "2", "--epochs", "2", "--batch-size", "4",
               "--input-size", "64", "--loader-processes", "0", "--tracking-uri", "none", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    fine = [line for line in lines if line.startswith("fine-tune: ")]
    assert fine and all("images_per_s=" in line and "eta_s=" in line for line in fine), lines
    epochs = [line for line in lines if line.startswith("fine-tune epochs: ")]
    assert [line.split()[2] for line in epochs] == ["1/2", "2/2"]


@pytest.mark.slow
def test_sigterm_ends_training_like_ctrl_c_run_killed_and_no_temporaries(prepared, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "fakefinder", "train", str(prepared.out), "--trainable-blocks",
                             "all", "--epochs", "50", "--batch-size", "4", "--loader-processes", "0",
                             "--input-size", "64",
                             "--tracking-uri", store,
                             "--out", str(tmp_path / "models"), "--cache", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if line.startswith("fine-tune epochs: 1/") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    runs = mlflow.MlflowClient(tracking_uri=store).search_runs(["1"])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no half-written shard, checkpoint or model
    assert list((tmp_path / "models" / ".checkpoints").glob("*.pt"))  # what --resume continues from


@pytest.mark.slow
def test_output_piped_into_a_reader_that_quits_ends_quietly(learnable, baseline):
    """`fakefinder predict ... | head -c 0`: the reader is gone before the first write; no traceback."""
    video = sorted((learnable.out.parent / "swap").glob("*.mp4"))[0]
    proc = subprocess.run(f"{sys.executable} -m fakefinder predict {baseline.model_path} {video} --json - --quiet "
                          "| head -c 0", shell=True, capture_output=True, text=True)
    assert proc.stdout == "" and "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_help_lists_every_command_and_loads_no_heavy_library():
    proc = cli("--help")
    assert proc.returncode == 0
    commands = ("demo", "synth", "prepare", "train", "tune", "runs", "report", "evaluate", "predict", "study",
                "serve")
    for command in commands:
        assert command in proc.stdout
    code = ("import sys; from fakefinder._cli import build_parser\n"
            f"for c in {commands!r}: build_parser(c)\n"
            "print(sorted(m for m in ('numpy', 'torch', 'mlflow', 'cv2', 'av', 'ray', 'optuna', 'fastapi') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded  # every command's flags are built without them: `--help` is instant


def test_the_command_runs_openmp_threads_passive_unless_the_user_chose_a_policy(monkeypatch):
    """Spinning OpenMP threads take the cores the loader's processes need (bench/trainspeed.py); OpenMP reads the
    policy when PyTorch loads, so it is set before anything else, `--version` included."""
    from fakefinder._cli import main

    for chosen, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        monkeypatch.setenv("OMP_WAIT_POLICY", chosen or "unset below")  # restored after the test either way
        if chosen is None:
            monkeypatch.delenv("OMP_WAIT_POLICY")
        with pytest.raises(SystemExit):
            main(["--version"])
        assert os.environ["OMP_WAIT_POLICY"] == expected


def test_redirected_progress_keeps_to_a_few_lines_for_fast_loops():
    """30 quick epochs of 3 batches: the first and last epoch lines and one finishing batch line, not 90 lines."""
    import io

    from fakefinder._cli._progress import Renderer
    from fakefinder.progress import Progress

    out = io.StringIO()
    with Renderer(stream=out) as render:
        for epoch in range(1, 31):
            for step in range(1, 4):
                render(Progress("head", step, 3, "batch", {"epoch": epoch}))
            render(Progress("head epochs", epoch, 30, "epoch"))
        render(Progress("head epochs", 30, 30, "epoch", message="trained"))
    lines = out.getvalue().splitlines()
    assert lines == ["head: 1/3 batch epoch=1", "head: 3/3 batch epoch=1", "head epochs: 1/30 epoch",
                     "head epochs: 30/30 epoch", "trained"], lines


def test_predict_threshold_is_checked_against_the_model_cards_declaration():
    proc = cli("predict", "model.safetensors", "clip.mp4", "--threshold", "2")
    assert proc.returncode == 2 and "--threshold: must be in [0, 1], got 2.0" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_synth_and_predict_show_progress_and_ctrl_c_promises_no_resume_it_cannot_keep(baseline, tmp_path):
    """synth says how far it is; predict shows progress within a long video, and Ctrl-C there says
    'interrupted' without 'rerun to resume' (predict keeps nothing to resume from)."""
    from media import coffee, write_video

    made = cli("synth", tmp_path / "s", "--videos", "2", "--seconds", "1")
    assert made.returncode == 0 and "synth: 2/2 video" in made.stderr, made.stderr
    hour = write_video(tmp_path / "hour.mp4", coffee(), seconds=3600, fps=1, size=(64, 64))
    # Ctrl-C as a terminal sends it: a suite started in the background (`cmd &` in a script) ignores SIGINT, and
    # a child inherits that, so it is restored here (Python then installs its KeyboardInterrupt handler)
    proc = subprocess.Popen([sys.executable, "-m", "fakefinder", "predict", str(baseline.model_path), str(hour)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stderr.readline()  # blocks until predict reports a frame of the video
    assert first.startswith("frames: 1 frame faces=0"), first
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130 and rest.strip().splitlines()[-1] == "interrupted", rest


def test_a_setting_error_names_a_flag_only_where_the_command_has_it(monkeypatch, capsys):
    """A model met by a command without --base-weights (say) is not told to use it."""
    from fakefinder._cli import _module, main
    from fakefinder.errors import OptionError

    def refuse(args):
        raise OptionError("base_weights", "must name the file with sha256 0123456789ab...: it is not there")

    for command, argv, shown in (("predict", ["model.safetensors", "clip.mp4"], "--base-weights must name"),
                                 ("report", ["run-id"], "error: base weights must name")):
        monkeypatch.setattr(_module(command), "run", refuse)
        try:
            code = main([command, *argv])
        except SystemExit as exc:  # the arguments did not parse: the test's own mistake
            raise AssertionError(capsys.readouterr().err) from exc
        err = capsys.readouterr().err
        assert code == 2 and shown in err and err.count("\n") == 1, err
        assert command != "report" or "--base-weights" not in err
