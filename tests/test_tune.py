from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fakefinder import UsageError
from fakefinder.runs import compare_runs, list_runs, show_run, write_csv
from fakefinder.tuning import load_grid, tune

GRID = """
flags:
  n_neurons: [16, 64, 128]
  lr: [1e-3, 3e-2]
fixed:
  epochs: 4
  patience: 2
"""


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "grid.yml"
    path.write_text(GRID)
    return path


def completed(storage: str, study: str) -> list:
    s = optuna.load_study(study_name=study, storage=storage)
    return [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]


def trial_states(storage: str, study: str) -> Counter:
    return Counter(t.state.name for t in optuna.load_study(study_name=study, storage=storage).trials)


def test_every_configuration_becomes_a_run_with_its_flags(learnable, tracking, grid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = tune(learnable.out, grid, study="six", storage=storage, tracking_uri=tracking)
    assert len(result.rows) == 6 and [r.value for r in result.rows] == sorted(r.value for r in result.rows)
    runs = list_runs(tracking_uri=tracking, study="six")
    trial_runs = [r for r in runs if r.tags.get("fakefinder.role") != "best-on-test"]
    assert sorted((r.params["n_neurons"], float(r.params["lr"])) for r in trial_runs) == sorted(
        (str(n), lr) for n in (16, 64, 128) for lr in (1e-3, 3e-2))
    assert all(r.tags.get("mlflow.parentRunId") for r in runs) and all(r.params["epochs"] == "4" for r in runs)
    best_test = [r for r in runs if r.tags.get("fakefinder.role") == "best-on-test"]
    assert len(best_test) == 1 and "test_video_auc" in best_test[0].metrics
    assert all("test_video_auc" not in r.metrics for r in trial_runs)  # trials never look at the test part
    assert "rank" in result.table() and "TEST part" in result.test_line()
    # Rerunning resumes: nothing is trained again but the final test evaluation.
    again = tune(learnable.out, grid, study="six", storage=storage, tracking_uri=tracking)
    assert [r.run_id for r in again.rows] == [r.run_id for r in result.rows]


def test_runs_order_filter_latest_csv_show_and_compare(learnable, tracking, grid, tmp_path):
    tune(learnable.out, grid, study="order", storage=f"sqlite:///{tmp_path / 'o.db'}", tracking_uri=tracking)
    best = list_runs(tracking_uri=tracking, study="order", order="val_log_loss")
    losses = [r.metrics["val_video_log_loss"] for r in best]
    assert losses == sorted(losses) and len(best) == 7
    by_auc = [r.metrics["val_video_auc"] for r in list_runs(tracking_uri=tracking, study="order", order="val_auc")]
    assert by_auc == sorted(by_auc, reverse=True)
    newest = list_runs(tracking_uri=tracking, study="order")
    assert [r.start_time for r in newest] == sorted((r.start_time for r in newest), reverse=True)
    assert len(list_runs(tracking_uri=tracking, study="order", latest=2)) == 2
    cut = sorted(losses)[3]
    kept = list_runs(tracking_uri=tracking, study="order", where=f"val_log_loss <= {cut}")
    assert {r.run_id for r in kept} == {r.run_id for r in best if r.metrics["val_video_log_loss"] <= cut}
    assert write_csv(best, tmp_path / "runs.csv").read_text().count("\n") == 8
    text = show_run(best[0].run_id[:12], tracking_uri=tracking)
    assert best[0].run_id in text and "per epoch:" in text and "model summary:" in text
    diff = compare_runs(best[0].run_id, best[-1].run_id, tracking_uri=tracking, png=tmp_path / "c.png")
    assert any(line.startswith("*") and ("n_neurons" in line or " lr " in line) for line in diff.splitlines())
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UsageError, match="--where"):
        list_runs(tracking_uri=tracking, where="val_auc is big")


def test_two_workers_on_one_sqlite_storage_complete_the_grid_once(learnable, tracking, grid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tune(learnable.out, grid, study="pair", storage=storage, tracking_uri=tracking, workers=2)
    done = completed(storage, "pair")
    assert len(done) == 6 and len({tuple(sorted(t.params.items())) for t in done}) == 6


def test_resume_after_sigkill_runs_every_configuration_once(learnable, tracking, grid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, "-m", "fakefinder", "tune", str(learnable.out), "--grid", str(grid), "--study", "killed",
           "--storage", storage, "--tracking-uri", tracking]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("trial ")
        if seen == 2:
            break
    time.sleep(0.15)  # inside the third trial
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = completed(storage, "killed")
    assert 2 <= len(before) < 6
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done = completed(storage, "killed")
    counts = Counter(tuple(sorted(t.params.items())) for t in done)
    assert len(counts) == 6 and set(counts.values()) == {1}
    assert {t.number for t in before} <= {t.number for t in done}  # nothing finished before was redone


def test_killing_tune_stops_its_workers_and_a_rerun_finishes_the_grid(learnable, tracking, tmp_path):
    grid = tmp_path / "twelve.yml"  # more configurations than can finish around the kill, so orphans would show
    grid.write_text(GRID.replace("[1e-3, 3e-2]", "[1e-3, 3e-3, 1e-2, 3e-2]"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, "-m", "fakefinder", "tune", str(learnable.out), "--grid", str(grid), "--study", "orphans",
           "--storage", storage, "--tracking-uri", tracking, "--workers", "2"]
    log = tmp_path / "tune.log"
    with open(log, "w") as out:  # a file, not a pipe: orphaned workers may write on after the kill
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 120
        while log.read_text().count("\ntrial ") < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        at_kill = trial_states(storage, "orphans")["COMPLETE"]  # at least what had finished when it died
        deadline = time.monotonic() + 60  # the workers finish the trials they are in, and then?
        while trial_states(storage, "orphans")["RUNNING"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    states = trial_states(storage, "orphans")
    # Each worker finished at most the trial it was in; without the stop they would run all twelve.
    assert 2 <= at_kill <= states["COMPLETE"] <= at_kill + 2 < 12 and not states["RUNNING"], (at_kill, states)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    counts = Counter(tuple(sorted(t.params.items())) for t in completed(storage, "orphans"))
    assert len(counts) == 12 and set(counts.values()) == {1}


def test_selection_never_sees_the_test_part(learnable, tracking, grid, tmp_path):
    """Flip every test label: the same trial wins with the same validation numbers, only test metrics move."""
    original = tune(learnable.out, grid, study="truth", storage=f"sqlite:///{tmp_path / 'a.db'}",
                    tracking_uri=tracking)
    flipped_dir = tmp_path / "flipped"
    shutil.copytree(learnable.out, flipped_dir, ignore=shutil.ignore_patterns("models"))
    from fakefinder.experiment import load_data, split_data
    from fakefinder.training import TrainConfig

    data = load_data(flipped_dir)
    parts = split_data(data, TrainConfig(), None).parts
    table = pq.read_table(flipped_dir / "manifest.parquet")
    labels = [1 - y if p == "test" else y for y, p in zip(table["label"].to_pylist(), parts)]
    test_rows = {i for i, p in enumerate(parts) if p == "test"}
    assert test_rows and split_data(data, TrainConfig(), None).digest() == split_data(
        load_data(learnable.out), TrainConfig(), None).digest()
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels, pa.int8())),
                   flipped_dir / "manifest.parquet")
    flipped = tune(flipped_dir, grid, study="flipped", storage=f"sqlite:///{tmp_path / 'b.db'}",
                   tracking_uri=tracking)
    assert flipped.rows[0].flags == original.rows[0].flags
    assert [r.value for r in flipped.rows] == [r.value for r in original.rows]
    assert original.test.test.video.auc >= 0.9 and flipped.test.test.video.auc <= 0.1


@pytest.mark.parametrize("text,needle", [("flags: [unclosed", "not valid YAML"),
                                         ("flags:\n  n_neurnos: [1, 2]\n", "unknown flag 'n_neurnos'"),
                                         ("flags:\n  lr: []\n", "flag 'lr' needs a non-empty list"),
                                         ("flags:\n  lr: [fast]\n", "grid key 'lr': bad value 'fast'"),
                                         ("fixed:\n  epochs: 3\n", "'flags' must map")])
def test_bad_grid_files_exit_2_naming_the_key(text, needle, learnable, tmp_path):
    (tmp_path / "g.yml").write_text(text)
    with pytest.raises(UsageError, match=needle):
        load_grid(tmp_path / "g.yml")
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "tune", str(learnable.out), "--grid",
                           str(tmp_path / "g.yml")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("search", ["random", "tpe"])
def test_random_and_tpe_searches_run_the_asked_number_of_trials(search, learnable, tracking, grid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = tune(learnable.out, grid, search=search, trials=3, study=search, storage=storage, tracking_uri=tracking)
    assert len(result.rows) == len(completed(storage, search)) == 3
    assert all(set(r.flags) == {"n_neurons", "lr"} for r in result.rows)
    with pytest.raises(UsageError, match="needs --trials"):
        tune(learnable.out, grid, search=search, study="x", storage=storage, tracking_uri=tracking)
