from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from services import children, exited, wait_until

from fakefinder import TrainSettings, TuneSettings, UsageError, load_dataset
from fakefinder.data.splits import split_dataset
from fakefinder.scale.claims import Claims
from fakefinder.tracking.runs import compare_runs, list_runs, show_run, write_csv
from fakefinder.tuning.search import load_grid, tune

pytestmark = pytest.mark.slow  # every test tunes on `learnable` (or checks a grid against it)

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


def claim_states(storage: str, study: str) -> Counter:
    """How many configurations are running, done or failed, as the workers see them."""
    claims = Claims(storage, study)
    try:
        return Counter(c.state for k, c in claims.all().items() if k.startswith("["))
    finally:
        claims.dispose()


def tune_cmd(data, grid, study, storage, tracking, *extra) -> list[str]:
    return [sys.executable, "-m", "fakefinder", "tune", str(data), "--grid", str(grid), "--study", study,
            "--storage", storage, "--tracking-uri", tracking, *extra]


def test_every_configuration_becomes_a_run_with_its_flags(learnable, tracking, grid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    events = []
    result = tune(learnable.out, grid, study="six", storage=storage, tracking=tracking, progress=events.append)
    assert len(result.rows) == 6 and [r.value for r in result.rows] == sorted(r.value for r in result.rows)
    runs = list_runs(tracking_uri=tracking, study="six")
    trial_runs = [r for r in runs if r.tags.get("fakefinder.role") != "best-on-test"]
    assert sorted((r.params["n_neurons"], float(r.params["lr"])) for r in trial_runs) == sorted(
        (str(n), lr) for n in (16, 64, 128) for lr in (1e-3, 3e-2))
    assert all(r.tags.get("mlflow.parentRunId") for r in runs) and all(r.params["epochs"] == "4" for r in runs)
    best_test = [r for r in runs if r.tags.get("fakefinder.role") == "best-on-test"]
    assert len(best_test) == 1 and "test_video_auc" in best_test[0].metrics
    assert all("test_video_auc" not in r.metrics for r in trial_runs)  # trials never look at the test part
    assert "rank" in result.table() and "TEST part" in result.test_line() and not result.reused
    assert sum(e.message.startswith("trial ") for e in events) == 6  # progress, not prints
    assert len(completed(storage, "six")) == 6  # Optuna records every trial too
    # Rerunning a finished study reports it and trains nothing: no new run at all.
    again = tune(learnable.out, grid, study="six", storage=storage, tracking=tracking)
    assert [r.run_id for r in again.rows] == [r.run_id for r in result.rows]
    assert again.reused and again.test_run_id == result.test_run_id and again.test.to_dict() == result.test.to_dict()
    assert len(list_runs(tracking_uri=tracking, study="six")) == len(runs)


def test_runs_order_filter_latest_csv_show_and_compare(learnable, tracking, grid, tmp_path):
    tune(learnable.out, grid, study="order", storage=f"sqlite:///{tmp_path / 'o.db'}", tracking=tracking)
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
    with pytest.raises(UsageError, match="^where cannot read"):  # the CLI says --where
        list_runs(tracking_uri=tracking, where="val_auc is big")


def test_two_workers_on_one_sqlite_storage_complete_the_grid_once(learnable, tracking, grid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tune(learnable.out, grid, TuneSettings(concurrent_trials=2), study="pair", storage=storage, tracking=tracking)
    done = completed(storage, "pair")
    assert len(done) == 6 and len({tuple(sorted(t.params.items())) for t in done}) == 6


def test_two_tune_commands_on_one_fresh_study_run_each_configuration_once(learnable, tracking, grid, tmp_path):
    """Started together on a storage that does not exist yet: no IntegrityError, every configuration trained
    exactly once, the best trained on the test part once, and both commands report the same result."""
    storage = f"sqlite:///{tmp_path / 'fresh.db'}"
    cmd = tune_cmd(learnable.out, grid, "shared", storage, tracking, "--quiet")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert all("Traceback" not in err for _, err in outs)
    runs = list_runs(tracking_uri=tracking, study="shared")
    roles = Counter(r.tags.get("fakefinder.role") for r in runs)
    assert roles == {"trial": 6, "best-on-test": 1}, roles
    keys = Counter((r.params["n_neurons"], r.params["lr"]) for r in runs if r.tags.get("fakefinder.role") == "trial")
    assert len(keys) == 6 and set(keys.values()) == {1}
    assert outs[0][0].splitlines()[-1] == outs[1][0].splitlines()[-1].replace(" (from the earlier run of this study)",
                                                                              "") or \
        outs[1][0].splitlines()[-1] == outs[0][0].splitlines()[-1].replace(" (from the earlier run of this study)", "")


def test_resume_after_sigkill_runs_every_configuration_once(learnable, tracking, grid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = tune_cmd(learnable.out, grid, "killed", storage, tracking)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 0
    for line in proc.stderr:
        seen += line.startswith("trial ")
        if seen == 2:
            break
    wait_until(lambda: proc.poll() is not None or claim_states(storage, "killed")["running"],
               "the third trial")  # inside it: its claim is the dead one's to take over
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = completed(storage, "killed")
    assert 2 <= len(before) < 6
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # takes the dead one's over
    assert rerun.returncode == 0, rerun.stderr
    done = completed(storage, "killed")
    counts = Counter(tuple(sorted(t.params.items())) for t in done)
    assert len(counts) == 6 and set(counts.values()) == {1}
    assert {t.number for t in before} <= {t.number for t in done}  # nothing finished before was redone


def test_a_configuration_finished_but_not_yet_in_optuna_is_recorded_once(learnable, tmp_path):
    """A worker that dies between finishing a configuration (its claim done) and adding it to Optuna's study:
    the next `tune` adds it from the claim, once, and trains it not again; a rerun adds nothing."""
    (tmp_path / "g.yml").write_text("flags:\n  n_neurons: [16, 64]\nfixed:\n  epochs: 2\n")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = tune(learnable.out, tmp_path / "g.yml", study="elsewhere", storage=storage)
    lost = first.rows[-1]
    claims = Claims(storage, "died")  # the dead worker's work: its configuration finished, nothing more
    assert claims.claim(lost.key) and claims.finish(lost.key, lost.to_json())
    claims.dispose()
    result = tune(learnable.out, tmp_path / "g.yml", study="died", storage=storage)
    done = completed(storage, "died")
    assert sorted(t.user_attrs["fakefinder.key"] for t in done) == sorted(r.key for r in first.rows)
    mine = [t for t in done if t.user_attrs["fakefinder.key"] == lost.key]
    assert [(t.value, t.user_attrs["run_id"]) for t in mine] == [(lost.value, lost.run_id)]  # its run, not a new one
    assert {r.key: r.run_id for r in result.rows}[lost.key] == lost.run_id
    tune(learnable.out, tmp_path / "g.yml", study="died", storage=storage)
    assert len(completed(storage, "died")) == 2


def test_killing_tune_stops_its_workers_and_a_rerun_finishes_the_grid(learnable, tracking, tmp_path):
    grid = tmp_path / "twelve.yml"  # more configurations than can finish around the kill, so orphans would show
    grid.write_text(GRID.replace("[1e-3, 3e-2]", "[1e-3, 3e-3, 1e-2, 3e-2]"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = tune_cmd(learnable.out, grid, "orphans", storage, tracking, "--concurrent-trials", "2")
    log = tmp_path / "tune.log"
    with open(log, "w") as out:  # a file, not a pipe: orphaned workers may write on after the kill
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out, text=True)
        wait_until(lambda: proc.poll() is not None or log.read_text().count("trial ") >= 2, "two trials")
        workers = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        at_kill = claim_states(storage, "orphans")["done"]  # at least what had finished when it died
        # The workers finish the trials they are in, and then? Those that went on would run the whole grid.
        wait_until(lambda: all(exited(w) for w in workers), "the workers' end", timeout=300)
    states = claim_states(storage, "orphans")
    # Each worker finished at most the trial it was in; without the stop they would run all twelve.
    assert 2 <= at_kill <= states["done"] <= at_kill + 2 < 12, (at_kill, states)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    counts = Counter(tuple(sorted(t.params.items())) for t in completed(storage, "orphans"))
    assert len(counts) == 12 and set(counts.values()) == {1}


def _until_stopped(job, parent) -> None:
    """A worker loop that never runs out of work: only a stop ends it."""
    try:
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass


def test_closing_local_worker_loops_stops_those_still_running():
    """What `tune` does when it is interrupted (Ctrl-C, SIGTERM): its workers stop too, not after the grid."""
    from fakefinder.scale.executors import launch_processes

    workers = launch_processes(_until_stopped, None, 2)
    closing = threading.Thread(target=workers.close, daemon=True)
    closing.start()
    closing.join(timeout=120)
    assert not closing.is_alive() and workers.done()


def test_workers_that_die_leave_a_clear_error_not_a_partial_study(learnable, tracking, tmp_path):
    """Every worker of `tune --concurrent-trials 2` killed mid-study: tune says so and ranks or tests nothing."""
    grid = tmp_path / "twelve.yml"
    grid.write_text(GRID.replace("[1e-3, 3e-2]", "[1e-3, 3e-3, 1e-2, 3e-2]"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    log = tmp_path / "tune.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(tune_cmd(learnable.out, grid, "dying", storage, tracking, "--concurrent-trials", "2"),
                                stdout=subprocess.DEVNULL, stderr=out, text=True)
        wait_until(lambda: proc.poll() is not None or log.read_text().count("trial ") >= 1, "a first trial")
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        for pid in children:
            subprocess.run(["kill", "-9", pid])
        assert proc.wait(timeout=120) == 2
    err = log.read_text()
    assert "configurations unfinished because its workers stopped" in err and "exit" in err, err[-2000:]
    assert "Traceback" not in err and "best-on-test" not in err
    assert claim_states(storage, "dying")["done"] < 12


def test_selection_never_sees_the_test_part(learnable, tracking, grid, tmp_path):
    """Flip every test label: the same trial wins with the same validation numbers, only test metrics move."""
    original = tune(learnable.out, grid, study="truth", storage=f"sqlite:///{tmp_path / 'a.db'}", tracking=tracking)
    flipped_dir = tmp_path / "flipped"
    shutil.copytree(learnable.out, flipped_dir, ignore=shutil.ignore_patterns("models"))
    data = load_dataset(flipped_dir)
    parts = split_dataset(data, seed=0).parts
    table = pq.read_table(flipped_dir / "manifest.parquet")
    labels = [1 - y if p == "test" else y for y, p in zip(table["label"].to_pylist(), parts)]
    assert any(p == "test" for p in parts)
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels, pa.int8())),
                   flipped_dir / "manifest.parquet")
    flipped = tune(flipped_dir, grid, study="flipped", storage=f"sqlite:///{tmp_path / 'b.db'}", tracking=tracking)
    assert flipped.rows[0].flags == original.rows[0].flags
    assert [r.value for r in flipped.rows] == [r.value for r in original.rows]
    assert original.test.video.auc >= 0.9 and flipped.test.video.auc <= 0.1


def test_a_grid_over_seed_varies_the_seed_and_patience_zero_is_off(learnable, tmp_path):
    (tmp_path / "g.yml").write_text("flags:\n  seed: [0, 1]\nfixed:\n  epochs: 3\n  patience: 0\n")
    result = tune(learnable.out, tmp_path / "g.yml", study="seeds", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert sorted(r.flags["seed"] for r in result.rows) == [0, 1]
    assert len({r.value for r in result.rows}) == 2  # two seeds, two splits and initialisations: two results
    assert all(r.epochs == 3 for r in result.rows)  # patience 0: early stopping off, as --patience 0


@pytest.mark.parametrize("text,needles", [
    ("flags: [unclosed", ["not valid YAML"]),
    ("flags:\n  n_neurnos: [1, 2]\n", ["n_neurnos is not a training option"]),
    ("flags:\n  lr: []\n", ["lr needs a non-empty list"]),
    ("flags:\n  lr: [fast, 1e-3]\n", ["lr = 'fast': must be a number"]),
    ("fixed:\n  epochs: 3\n", ["'flags' must map"]),
    ("flags:\n  lr: [-1, 1e-3, 0]\n  n_layers: [1, 20]\n  pool: [avg, max]\n",
     ["lr = -1: must be in (0, 10], got -1.0 (in 4 grid points", "lr = 0: must be in (0, 10]",
      "n_layers = 20: must be in [0, 8]", "pool = 'max': must be one of flatten, avg"]),
    ("flags:\n  val: [0.5, 0.1]\n  test: [0.6, 0.1]\n", ["test and val must sum to less than 1 (val 0.5 + test 0.6)"]),
])
def test_bad_grid_files_are_checked_whole_before_anything_runs(text, needles, learnable, tmp_path):
    (tmp_path / "g.yml").write_text(text)
    with pytest.raises(UsageError) as info:
        load_grid(tmp_path / "g.yml")
    for needle in needles:
        assert needle in str(info.value)
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "tune", str(learnable.out), "--grid",
                           str(tmp_path / "g.yml")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == (1 if len(needles) == 1 and "\n" not in str(info.value)
                                                     else 1 + str(info.value).count("\n"))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()  # nothing ran


@pytest.mark.parametrize("search", ["random", "tpe"])
def test_random_and_tpe_searches_run_the_asked_number_of_trials(search, learnable, tracking, grid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = tune(learnable.out, grid, TuneSettings(search=search, trials=3), study=search, storage=storage,
                  tracking=tracking)
    assert len(result.rows) == len(completed(storage, search)) == 3
    assert all(set(r.flags) == {"n_neurons", "lr"} for r in result.rows)
    with pytest.raises(UsageError, match="trials must be given"):
        TuneSettings(search=search)


EIGHT = "flags:\n  n_neurons: [16, 32, 64, 128]\n  lr: [1e-3, 3e-2]\nfixed:\n  epochs: 1\n"


def sampled(storage: str, study: str) -> list[tuple]:
    """The configuration of each completed trial, in the order Optuna numbered them."""
    return [tuple(sorted(t.params.items())) for t in sorted(completed(storage, study), key=lambda t: t.number)]


@pytest.mark.parametrize("search", ["random", "tpe"])
def test_sampled_searches_draw_different_configurations_reproducibly(search, learnable, tmp_path):
    """Six trials over a grid of eight draw at least three configurations (a sampler drawing with replacement
    gives fewer 0.7% of the time; TPE's first ten trials are its random start-up), and the same seed draws the
    same sequence again."""
    (tmp_path / "eight.yml").write_text(EIGHT)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tune(learnable.out, tmp_path / "eight.yml", TuneSettings(search=search, trials=6), study="six", storage=storage)
    six = sampled(storage, "six")
    assert len(six) == 6 and len(set(six)) >= 3, six
    tune(learnable.out, tmp_path / "eight.yml", TuneSettings(search=search, trials=3), study="three", storage=storage)
    assert sampled(storage, "three") == six[:3]


def test_a_random_search_shared_by_two_processes_draws_different_configurations(learnable, tmp_path):
    """Two worker processes on one study: each draws its own configurations, not the other's sequence again."""
    (tmp_path / "eight.yml").write_text(EIGHT)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tune(learnable.out, tmp_path / "eight.yml", TuneSettings(search="random", trials=6, concurrent_trials=2),
         study="pair", storage=storage)
    points = sampled(storage, "pair")
    assert len(points) == 6 and len(set(points)) >= 3, points
    claims = Claims(storage, "pair")
    try:
        owners = Counter(c.owner for k, c in claims.all().items() if k.startswith("trial-") and c.state == "done")
    finally:
        claims.dispose()
    assert sum(owners.values()) == 6 and len(owners) == 2, owners  # both processes drew trials


def test_a_study_without_a_test_part_says_so_in_one_line(learnable, tracking, tmp_path):
    grid = tmp_path / "no-test.yml"
    grid.write_text("flags:\n  n_neurons: [16, 32]\nfixed:\n  epochs: 2\n  test: 0\n")
    with pytest.raises(UsageError, match="no test part to be scored on"):
        tune(learnable.out, grid, study="no-test", storage=f"sqlite:///{tmp_path / 'o.db'}", tracking=tracking)


class MemoryTracker:
    """A tracker of one's own (the plug-in point): runs kept in memory, with their tags and params."""

    uri = "memory"

    def __init__(self) -> None:
        import threading

        self.runs: dict[str, dict] = {}
        self.lock = threading.Lock()  # as a real client might hold: it cannot be pickled into other processes

    def start_run(self, *, name=None, tags=None, parent_run_id=None, resume_run_id=None):
        import contextlib
        import uuid

        tracker = self

        class Run:
            run_id = resume_run_id or uuid.uuid4().hex

            def log_params(self, params):
                tracker.runs[self.run_id]["params"].update(params)

            def log_metrics(self, metrics, step=None):
                tracker.runs[self.run_id]["metrics"].update(metrics)

            def log_history(self, epochs):
                pass

            def log_artifacts(self, folder, subdir=None):
                pass

            def log_file(self, path, subdir=None):
                pass

        @contextlib.contextmanager
        def context():
            run = Run()
            self.runs[run.run_id] = {"name": name, "tags": dict(tags or {}), "params": {}, "metrics": {},
                                     "parent": parent_run_id}
            yield run

        return context()


def test_tune_records_into_any_tracker_object_and_says_when_one_cannot_reach_workers(learnable, tmp_path):
    (tmp_path / "grid.yml").write_text("flags:\n  n_neurons: [16, 32]\nfixed:\n  epochs: 2\n")
    tracker = MemoryTracker()
    result = tune(learnable.out, tmp_path / "grid.yml", study="mine", storage=f"sqlite:///{tmp_path / 'a.db'}",
                  tracking=tracker)
    roles = Counter(run["tags"].get("fakefinder.role") for run in tracker.runs.values())
    assert roles == {"study": 1, "trial": 2, "best-on-test": 1} and result.test_run_id in tracker.runs
    assert {run["params"]["n_neurons"] for run in tracker.runs.values() if "n_neurons" in run["params"]} == {"16",
                                                                                                          "32"}
    with pytest.raises(UsageError, match="^tracking cannot reach worker processes .*: give a URI"):
        tune(learnable.out, tmp_path / "grid.yml", TuneSettings(concurrent_trials=2), study="two",
             storage=f"sqlite:///{tmp_path / 'b.db'}", tracking=MemoryTracker())


def test_a_grid_changes_its_base_settings(tmp_path):
    """`tune --preset` and `study --preset`: the grid's flags and fixed settings change the preset, not the
    defaults; the study's seed still wins over the preset's, and the flags over everything."""
    (tmp_path / "g.yml").write_text("flags:\n  lr: [1.0e-4, 1.0e-3]\nfixed:\n  epochs: 2\n")
    grid = load_grid(tmp_path / "g.yml", seed=5, base=TrainSettings.preset("self-blended"))
    configs = [grid.config(point, 5) for point in grid.points(5)]
    assert [c.lr for c in configs] == [1e-4, 1e-3]
    assert all(c.fakes == "self-blended" and c.trainable_blocks == "all" and c.epochs == 2 and c.seed == 5
               for c in configs)
    plain = load_grid(tmp_path / "g.yml", seed=5)
    assert plain.config(plain.points(5)[0], 5).fakes == "real"
