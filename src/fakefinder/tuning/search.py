"""`tune`: a grid (or a random/TPE search) of training flags at feature-cache speed, shared by any number of
`tune` commands and workers on any machines that reach one database.

The grid is checked whole before anything runs. Each configuration is a unit of `claims`: exactly one worker
runs it, a worker that dies is replaced once its heartbeat stops, and a rerun resumes. Optuna keeps the study
(every finished trial is recorded there) and, for random and TPE searches, samples each trial's point: every
worker process loads the study once, with one sampler for all its trials, seeded from the study's seed and the
number of the first trial it claims, so workers sharing a study draw different points and a single process with
the same seed draws the same sequence again. MLflow keeps every trial's run. Selection uses the validation part
only; the best configuration is then trained once more and evaluated on the test part, once per study: a rerun of
a finished study reports that result and trains nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import pickle
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import options
from .._files import sqlite_url
from .._text import format_table, shown
from ..config import TrainSettings, TuneSettings
from ..data.manifest import features_dir
from ..errors import OptionError, UsageError, one_line
from ..hardware import Compute
from ..metrics import Evaluation, direction, selection_key
from ..progress import ProgressCallback, emit
from ..scale.claims import Claims, engine_options
from ..scale.executors import Launcher, launch_processes
from ..tracking.trackers import Recording, Role, Tag, Tracker

FINAL = Role.BEST_ON_TEST.value
PARENT = "mlflow-parent"
RECORD = "optuna"  # the claim that adds a finished configuration to Optuna's study
KEY_ATTR = "fakefinder.key"  # the user attribute of an Optuna trial naming its configuration's claim


@dataclass(frozen=True)
class Grid:
    """A grid file: flags with lists of values, fixed settings, and an optional sampled fraction."""

    flags: dict[str, list]
    fixed: dict[str, Any]
    sample: float | None = None
    base: TrainSettings = dataclasses.field(default_factory=TrainSettings)  # what the flags change (a preset)

    def points(self, seed: int) -> list[dict]:
        """Every grid point in file order, or a seeded random `sample` fraction of them (like tfruns)."""
        names = list(self.flags)
        grid = [dict(zip(names, values)) for values in itertools.product(*(self.flags[n] for n in names))]
        if self.sample is None or self.sample >= 1:
            return grid
        keep = np.random.default_rng(seed).choice(len(grid), size=max(1, math.ceil(self.sample * len(grid))),
                                                  replace=False)
        return [grid[i] for i in sorted(keep)]

    def config(self, point: dict, seed: int) -> TrainSettings:
        """A point's training settings: the point's values win over `fixed`, which wins over tune's seed, which
        wins over the base settings."""
        return self.base.replace(**{"seed": seed, **self.fixed, **point})


def point_key(point: dict) -> str:
    return json.dumps(sorted(point.items()))


def point_text(point: dict) -> str:
    return " ".join(f"{k}={shown(v, significant=6)}" for k, v in point.items())


class GridError(UsageError):
    """A grid file with bad keys or values: one line per problem, each naming the grid key."""

    def __init__(self, path: str | Path, problems: list[tuple[str, str]]) -> None:
        self.lines = [f"{name} {why}" for name, why in problems]
        super().__init__(f"{path}: {len(self.lines)} problem{'s' * (len(self.lines) > 1)}\n  "
                         + "\n  ".join(self.lines))


def load_grid(path: str | Path, *, seed: int = 0, base: TrainSettings | None = None) -> Grid:
    """Read a grid file and check every point it can produce from `base` (default: the default settings), before
    anything runs. Raises UsageError (GridError, one line per bad value, for keys and values)."""
    try:
        return _load_grid(path, seed, base or TrainSettings())
    except OptionError as exc:
        raise GridError(path, exc.problems) from None


def _load_grid(path: str | Path, seed: int, base: TrainSettings) -> Grid:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read grid ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid YAML ({one_line(exc, limit=160, typed=False)})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with 'flags' (and optionally 'fixed', 'sample')")
    unknown_top = set(data) - {"flags", "fixed", "sample"}
    if unknown_top:
        raise UsageError(f"{path}: unknown key {sorted(map(str, unknown_top))[0]!r} (use flags, fixed, sample)")
    flags, fixed = data.get("flags") or {}, data.get("fixed") or {}
    if not isinstance(flags, dict) or not flags:
        raise UsageError(f"{path}: 'flags' must map at least one option to a list of values")
    if not isinstance(fixed, dict):
        raise UsageError(f"{path}: 'fixed' must be a mapping")
    declared = options.declared(TrainSettings)
    problems: list[tuple[str, str]] = []
    for key, values in list(flags.items()) + [(k, [v]) for k, v in fixed.items()]:
        if key not in declared:
            problems.append((str(key), "is not a training option"))
        elif not isinstance(values, list) or not values:
            problems.append((str(key), "needs a non-empty list of values"))
    both = set(flags) & set(fixed)
    problems += [(str(k), "is both a flag and fixed") for k in sorted(both)]
    sample = data.get("sample")
    if sample is not None and not (isinstance(sample, (int, float)) and not isinstance(sample, bool)
                                   and 0 < sample <= 1):
        problems.append(("sample", "must be a fraction in (0, 1]"))
    if problems:
        raise OptionError.many(problems)
    coerced: dict[str, list] = {}
    for key, values in list(flags.items()) + [(k, [v]) for k, v in fixed.items()]:
        coerced[key] = []
        for value in values:
            try:
                coerced[key].append(declared[key].coerce(value))
            except OptionError as exc:  # left out of the points below, reported with their problems
                spelled = shown(value, significant=6, quote_text=True)
                problems += [(f"{key} = {spelled}:", why) for _, why in exc.problems]
    grid = Grid({k: coerced[k] for k in flags}, {k: coerced[k][0] for k in fixed if coerced[k]}, sample, base)
    problems += _point_problems(grid, seed) if all(coerced.values()) else []
    if problems:
        raise OptionError.many(problems)
    return grid


def _point_problems(grid: Grid, seed: int) -> list[tuple[str, str]]:
    """Build every point's settings: one line per bad value (`lr = -1: must be > 0`), and one per combination
    that cannot work, with how many points have it."""
    declared = options.declared(TrainSettings)
    seen: Counter = Counter()
    first: dict[tuple[str, str], dict] = {}
    for point in grid.points(seed):
        try:
            grid.config(point, seed)
        except OptionError as exc:
            for name, why in exc.problems:
                value = point.get(name, grid.fixed.get(name))
                if name in declared and declared[name].problem(value):
                    problem = (f"{name} = {shown(value, significant=6, quote_text=True)}:", why)
                else:
                    problem = (name, why)
                seen[problem] += 1
                first.setdefault(problem, point)
    return [(name, f"{why} (in {n} grid point{'s' * (n > 1)}, e.g. {point_text(first[(name, why)])})")
            for (name, why), n in seen.items()]


def resolve_storage(storage: str | None) -> str:
    """Where a study lives: the given SQLAlchemy URL, else ./optuna.db."""
    return storage or sqlite_url("optuna.db")


@dataclass(frozen=True)
class TrialRow:
    """A finished trial: what its worker stores with its claim, and a row of the study's table."""

    number: int
    key: str
    run_id: str
    flags: dict
    value: float  # the selection metric on validation
    val: dict  # final validation metrics, e.g. {"video_auc": ..., "video_log_loss": ...}
    epochs: int

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "key"}  # the claim's key holds the key

    @classmethod
    def from_claim(cls, key: str, result: dict) -> TrialRow:
        return cls(int(result["number"]), key, str(result["run_id"]), dict(result["flags"]), float(result["value"]),
                   dict(result["val"]), int(result["epochs"]))


@dataclass(frozen=True)
class TuneResult:
    study: str
    storage: str
    metric: str
    rows: tuple[TrialRow, ...]  # completed trials, best first
    failed: tuple[tuple[str, str], ...]  # (flags, reason) of configurations that failed
    test: Evaluation  # the best configuration on the test part
    test_run_id: str
    test_model_path: str
    reused: bool  # the study was finished already: nothing was trained

    def table(self, top: int = 10) -> str:
        if not self.rows:
            return "no completed trials"
        names = list(self.rows[0].flags)
        head = ["rank", "trial", *names, f"val {self.metric}", "val video_auc", "val frame_auc", "epochs done"]
        body = [[str(i), str(r.number), *(shown(r.flags[n], significant=6) for n in names), shown(r.value, 4),
                 shown(r.val.get("video_auc"), 4), shown(r.val.get("frame_auc"), 4), str(r.epochs)]
                for i, r in enumerate(self.rows[:top], 1)]
        return format_table(head, body)

    def test_line(self) -> str:
        v = self.test.video
        again = " (from the earlier run of this study)" if self.reused else ""
        return (f"best configuration (trial {self.rows[0].number}) on the TEST part, never used for selection: "
                f"video AUC {shown(v.auc, 4)}, log loss {shown(v.log_loss, 4)}, accuracy {shown(v.accuracy, 4)} "
                f"(n={v.n}); run {self.test_run_id}{again}")


def _optuna_study(url: str, name: str, metric: str, search: str, seed: int):
    """Create or load the Optuna study; several commands may do so at once on a fresh database."""
    import optuna
    import sqlalchemy

    sampler = (optuna.samplers.TPESampler if search == "tpe" else optuna.samplers.RandomSampler)(seed=seed)
    for attempt in range(10):
        try:
            return optuna.create_study(study_name=name, storage=_storage(url), load_if_exists=True, sampler=sampler,
                                       direction=direction(selection_key(metric)))
        except (optuna.exceptions.DuplicatedStudyError, sqlalchemy.exc.DatabaseError):
            # another command created it, or the schema (as scale.claims.Claims makes its table: any database error
            # of the race, PostgreSQL's "already exists" among them), a moment ago
            time.sleep(0.2 * (attempt + 1))
    return optuna.load_study(study_name=name, storage=_storage(url), sampler=sampler)


def _storage(url: str):
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url))


@dataclass(frozen=True)
class _StudyJob:
    """Everything a worker needs, wherever it runs: picklable, no live objects."""

    data: str
    grid: Grid
    settings: TuneSettings
    study: str
    storage: str
    recording: Recording  # its tracker must pickle to reach worker processes
    parent_run_id: str
    compute: Compute  # without its launcher, which stays with `tune`
    round_id: str

    def keys(self) -> list[str]:
        """The claim key of each trial: its point for a grid search; a number for a sampled one, whose point the
        sampler chooses when the trial starts."""
        if self.settings.search == "grid":
            return [point_key(p) for p in self.grid.points(self.settings.seed)]
        return [f"trial-{i}" for i in range(self.settings.trials or 0)]

    def grid_point(self, key: str) -> dict:
        return dict(json.loads(key))

    def distributions(self) -> dict:
        """Optuna's view of the grid: each flag's values, for the sampler to draw from and a trial to be added to."""
        import optuna

        return {k: optuna.distributions.CategoricalDistribution(v) for k, v in self.grid.flags.items()}

    def describe(self, key: str) -> str:
        return point_text(self.grid_point(key)) if self.settings.search == "grid" else key


def _worker_seed(seed: int, first: int) -> int:
    """The sampler seed of a worker process whose first trial is number `first`. Claims give each trial to one
    worker, so workers running at once differ; a single process from the start is seeded alike every time."""
    return int(np.random.SeedSequence([seed, first]).generate_state(1)[0])


def _run_one(job: _StudyJob, study, claims: Claims, key: str, number: int,
             progress: ProgressCallback | None) -> None:
    """Train one configuration (claimed by us) on train/val and record it in the claims and in `study`, this
    worker's Optuna study, whose sampler chooses the point of a random or TPE trial."""
    import optuna

    from ..training.experiment import train

    trial = None
    if job.settings.search == "grid":
        point = job.grid_point(key)
    else:
        trial = study.ask(job.distributions())
        point = dict(trial.params)
    start = time.perf_counter()
    try:
        with claims.holding(key):
            recording = dataclasses.replace(job.recording, name=f"{job.study}-{number}",
                                            parent_run_id=job.parent_run_id,
                                            tags={Tag.STUDY: job.study, Tag.TRIAL: str(number), Tag.ROLE: Role.TRIAL})
            result = train(job.data, job.grid.config(point, job.settings.seed), tracking=recording,
                           compute=job.compute, evaluate_test=False)
    except Exception as exc:
        claims.fail(key, one_line(exc))
        if trial is not None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        emit(progress, "tune", 0, message=f"trial {number}: {point_text(point)} -> failed: {one_line(exc)}")
        return
    except BaseException:  # Ctrl-C, SIGTERM: not a verdict on the configuration; let the next run take it now
        claims.release(key)
        if trial is not None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    val = {f"{level}_{k}": v for level in ("frame", "video") for k, v in result.val.to_dict()[level].items()}
    value = val.get(job.settings.metric)
    if value is None or not math.isfinite(value):
        claims.fail(key, f"validation {job.settings.metric} is undefined (one class in the validation part?)")
        if trial is not None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    row = TrialRow(number, key, result.run_id, point, value, val, result.history.completed)
    if claims.finish(key, row.to_json()):
        _record(job, claims, study, row, trial)
    elif trial is not None:  # another worker took the configuration over while we seemed dead: its run counts
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    emit(progress, "tune", 0, message=f"trial {number}: {point_text(point)} -> val {job.settings.metric} "
                                      f"{shown(value, 4)} ({result.history.completed} epochs, "
                                      f"{time.perf_counter() - start:.1f} s)")


def _record(job: _StudyJob, claims: Claims, study, row: TrialRow, trial=None) -> None:
    """Add a finished configuration (its claim done) to Optuna's study exactly once. Recording is a unit of its
    own, so a command that finds it missing (the worker died between finishing and recording) and a slow worker
    never both add it; whoever runs it first looks for the trial, so a rerun after a death inside it adds none."""
    import optuna

    def add() -> dict:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if any(t.user_attrs.get(KEY_ATTR) == row.key for t in complete):
            return {}
        attrs = {"run_id": row.run_id, "val": row.val, "epochs": row.epochs, KEY_ATTR: row.key}
        if trial is not None:  # the point its sampler drew: TPE learns from it
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            study.tell(trial, row.value)
        else:
            study.add_trial(optuna.trial.create_trial(params=row.flags, distributions=job.distributions(),
                                                      value=row.value, user_attrs=attrs))
        return {}

    _once(claims, f"{RECORD}:{row.key}", add)


def work(job: _StudyJob, parent: int | None = None, progress: ProgressCallback | None = None,
         finished: set[str] | None = None) -> None:
    """One worker: claim and run configurations until none is left to run, waiting out others' running ones.

    A worker that `tune` started (`parent` = its pid) stops between trials once that process is gone, so
    killing `tune` stops the whole search; the next `tune` resumes it.
    """
    claims = Claims(job.storage, job.study, round_id=job.round_id)
    keys = job.keys()
    study = None  # loaded at the first claim, and kept: one sampler draws all of this worker's points
    try:
        while parent is None or os.getppid() == parent:
            states = claims.all()
            ran = False
            for number, key in enumerate(keys):
                state = states.get(key)
                if state is not None and state.state == "done":
                    continue
                if claims.claim(key):
                    if study is None:
                        study = _optuna_study(job.storage, job.study, job.settings.metric, job.settings.search,
                                              _worker_seed(job.settings.seed, number))
                    _run_one(job, study, claims, key, number, progress)
                    if finished is not None:
                        finished.add(key)
                    ran = True
                    break
            if ran:
                continue
            states = claims.all()
            if all(key in states and states[key].state in ("done", "failed") for key in keys):
                return
            time.sleep(1.0)  # others' trials: they finish, or go stale and come back to us
    finally:
        claims.dispose()


def _once(claims: Claims, key: str, fn, *, poll: float = 1.0) -> dict:
    """`fn()`'s result, computed by exactly one of the processes that ask (others wait for it)."""
    while True:
        state = claims.all().get(key)
        if state is not None and state.state == "done":
            return state.result
        if claims.claim(key):
            try:
                with claims.holding(key):
                    result = fn()
            except BaseException as exc:
                claims.fail(key, one_line(exc))
                raise
            claims.finish(key, result)
            return result
        if state is not None and state.state == "failed" and not claims.alive(key):
            raise UsageError(f"study step {key!r} failed: {state.reason}")
        time.sleep(poll)


def _warm_cache(data: str, grid: Grid, seed: int, compute: Compute, progress: ProgressCallback | None) -> None:
    """Extract features once, before workers start, for every frozen base and pooling the grid uses."""
    from ..data.dataset import load_dataset
    from ..hardware import resolve_device, resolve_precision
    from ..models.backbones import Recipe
    from ..models.features import FeatureCache

    dev = resolve_device(compute.device)
    seen, files = set(), None
    for point in grid.points(seed):
        config = grid.config(point, seed)
        precision = resolve_precision(config.precision, dev)
        key = (Recipe.of(config), config.pool, precision)
        if key in seen or not config.frozen:
            continue
        seen.add(key)
        files = files if files is not None else list(load_dataset(data).crop_files)
        FeatureCache(compute.cache_dir or features_dir(data), key[0].build(), config.pool,
                     precision=precision).features(files, device=dev, progress=progress)


def _report_claims(job: _StudyJob, claims: Claims, keys: list[str], seen: set[str],
                   progress: ProgressCallback | None) -> None:
    """Progress lines for configurations that other processes finished since the last look."""
    states = claims.all()
    for number, key in enumerate(keys):
        state = states.get(key)
        if state is None or key in seen or state.state not in ("done", "failed"):
            continue
        seen.add(key)
        if state.state == "done":
            row = TrialRow.from_claim(key, state.result)
            text = f"val {row.value:.4f} ({row.epochs} epochs)"
        else:
            text = f"failed: {state.reason}"
        emit(progress, "tune", len(seen), len(keys), "trial",
             message=f"trial {number}: {job.describe(key)} -> {text}")


def tune(data: str | Path, grid: str | Path, settings: TuneSettings | None = None, *,
         base: TrainSettings | None = None, study: str | None = None, storage: str | None = None,
         tracking: Recording | Tracker | str | None = None, compute: Compute | None = None,
         progress: ProgressCallback | None = None) -> TuneResult:
    """Search training flags on the validation part; evaluate the best configuration once on the test part.

    The grid's flags and fixed settings change `base` (default: the default settings; a preset, say). Any number
    of `tune` commands (on any machines) may run on one study at once; rerunning resumes. `compute.launcher`
    starts the `settings.concurrent_trials` worker loops (default: local processes; `ray_executor.ray_launcher`
    for a Ray cluster). Raises UsageError for a bad grid, bad settings or unusable data.
    """
    from ..data.dataset import load_dataset
    from ..training.experiment import train

    settings = settings or TuneSettings()
    compute = compute or Compute()
    spec = load_grid(grid, seed=settings.seed, base=base)
    load_dataset(data)  # fail fast on unusable data
    name = study or f"{Path(data).resolve().name}-{Path(grid).stem}"
    url = resolve_storage(storage)
    recording = Recording.of(tracking or "none")
    _optuna_study(url, name, settings.metric, settings.search, settings.seed)
    claims = Claims(url, name)

    def parent_run() -> dict:
        with recording.resolve().start_run(name=f"study {name}", tags={Tag.STUDY: name, Tag.ROLE: Role.STUDY}
                                           ) as run:
            run.log_params({"grid": str(Path(grid).resolve()), **{f"tune.{k}": v for k, v in
                                                                  settings.to_params().items()},
                            "flags": str(spec.flags), "fixed": str(spec.fixed), "sample": str(spec.sample)})
            return {"run_id": run.run_id}

    parent = _once(claims, PARENT, parent_run)["run_id"]
    job = _StudyJob(str(data), spec, settings, name, url, recording, parent,
                    dataclasses.replace(compute, launcher=None), uuid.uuid4().hex)
    keys = job.keys()
    emit(progress, "tune", 0, len(keys), "trial",
         message=f"study {name} ({settings.search}, {len(keys)} configurations, selecting on val {settings.metric}) "
                 f"in {url}")
    states = claims.all()
    if not all(k in states and states[k].state == "done" for k in keys):
        _warm_cache(str(data), spec, settings.seed, compute, progress)
        problems = _run_workers(job, settings.concurrent_trials, claims, keys, progress, compute.launcher)
        states = claims.all()
        left = [k for k in keys if k not in states or states[k].state not in ("done", "failed")]
        if left:  # the workers stopped without finishing: never rank or test a partial study
            raise UsageError(f"study {name}: {len(left)} of {len(keys)} configurations unfinished because its "
                             f"workers stopped ({problems[0] if problems else 'no reason given'}); rerun to resume")
    states = claims.all()
    unrecorded = [k for k in keys if k in states and states[k].state == "done"
                  and getattr(states.get(f"{RECORD}:{k}"), "state", None) != "done"]
    if unrecorded:  # a worker died between finishing a configuration and recording it (or a study from before)
        recorder = _optuna_study(url, name, settings.metric, settings.search, settings.seed)
        for key in unrecorded:
            _record(job, claims, recorder, TrialRow.from_claim(key, states[key].result))
    rows, failed = _rows(job, states)
    if not rows:
        raise UsageError(f"study {name}: no trial completed" + (f" ({failed[0][1]})" if failed else ""))
    best = rows[0]

    def final() -> dict:
        final_run = dataclasses.replace(recording, name=f"{name}-best-on-test", parent_run_id=parent,
                                        tags={Tag.STUDY: name, Tag.ROLE: Role.BEST_ON_TEST,
                                              Tag.TRIAL: str(best.number)})
        result = train(data, spec.config(best.flags, settings.seed), tracking=final_run,
                       compute=dataclasses.replace(compute, launcher=None))
        if result.test is None:
            raise UsageError(f"study {name}: the best configuration has no test part to be scored on (a grid "
                             f"with test: 0, or test videos without a face); its run is {result.run_id}")
        return {"run_id": result.run_id, "test": result.test.to_dict(), "model_path": str(result.model_path)}

    existing = claims.all().get(f"{FINAL}:{best.key}")
    outcome = _once(claims, f"{FINAL}:{best.key}", final)
    claims.dispose()
    return TuneResult(name, url, settings.metric, tuple(rows), tuple(failed), Evaluation.from_dict(outcome["test"]),
                      outcome["run_id"], outcome["model_path"], existing is not None and existing.state == "done")


def _run_workers(job: _StudyJob, workers: int, claims: Claims, keys: list[str], progress,
                 launcher: Launcher | None) -> list[str]:
    """Workers until the study is done: this process alone, or `workers` worker loops that `launcher` starts
    (local processes by default, Ray tasks); other commands on the same study may be working on it too. Returns
    how the workers that failed ended."""
    seen = {k for k, c in claims.all().items() if c.state in ("done", "failed")}  # reported by earlier commands
    if launcher is None and workers <= 1:
        work(job, progress=progress, finished=seen)  # reports its own trials
        return []
    try:
        pickle.dumps(job)
    except Exception as exc:  # noqa: BLE001 - whatever the tracker object holds (a connection, a lock, ...)
        raise OptionError("tracking", f"cannot reach worker processes ({one_line(exc)}): give a URI, or run one "
                                      "trial at a time") from None
    started = (launcher or launch_processes)(work, job, workers)
    try:
        while not started.done():
            _report_claims(job, claims, keys, seen, progress)
            time.sleep(0.5)
        _report_claims(job, claims, keys, seen, progress)
    finally:
        started.close()
    return started.errors()


def _rows(job: _StudyJob, states: dict) -> tuple[list[TrialRow], list[tuple[str, str]]]:
    """The finished trials, best first, and (configuration, reason) of the failed ones."""
    sign = 1 if direction(selection_key(job.settings.metric)) == "minimize" else -1
    rows, failed = [], []
    for key in job.keys():
        state = states.get(key)
        if state is None:
            continue
        if state.state == "done":
            rows.append(TrialRow.from_claim(key, state.result))
        elif state.state == "failed":
            failed.append((job.describe(key), state.reason))
    rows.sort(key=lambda r: (sign * r.value, r.number))
    return rows, failed
