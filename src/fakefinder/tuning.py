"""`tune`: a grid (or a random/TPE search) of training flags at feature-cache speed, resumable and shareable.

The engine is Optuna; its study lives in a storage (a SQLite file by default, any SQLAlchemy URL for workers on
several machines). Grid configurations are enqueued as waiting trials, which workers pop atomically, so no
configuration runs twice; trials of a killed worker go stale on their heartbeat and are retried. Selection uses
the validation part only; the best configuration is then trained once more and evaluated on the test part.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._text import format_table
from .errors import UsageError, one_line
from .manifest import features_dir
from .metrics import format_metric as fmt
from .training import TrainConfig

Search = Literal["grid", "random", "tpe"]
GRID_ATTR = "fakefinder.grid_config"  # set on enqueued grid trials; retried copies keep it
HEARTBEAT_S, GRACE_S = 2, 6  # a trial whose worker stopped beating for GRACE_S seconds is stale
# Selection metrics: name -> (final MLflow metric, direction).
METRICS = {f"{level}_{name}": (f"val_{level}_{name}", direction)
           for level in ("video", "frame")
           for name, direction in (("log_loss", "minimize"), ("auc", "maximize"), ("ap", "maximize"),
                                   ("accuracy", "maximize"), ("eer", "minimize"))}
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_NOT_TUNABLE = {"device"}


@dataclass(frozen=True)
class TuneSpec:
    """A grid file: flags with lists of values, fixed options, and an optional sampled fraction."""

    flags: dict[str, list]
    fixed: dict[str, Any]
    sample: float | None = None

    def configurations(self, seed: int) -> list[dict]:
        """Every grid point in file order, or a seeded random `sample` fraction of them (like tfruns)."""
        names = list(self.flags)
        grid = [dict(zip(names, values)) for values in itertools.product(*(self.flags[n] for n in names))]
        if self.sample is None or self.sample >= 1:
            return grid
        keep = np.random.default_rng(seed).choice(len(grid), size=max(1, math.ceil(self.sample * len(grid))),
                                                  replace=False)
        return [grid[i] for i in sorted(keep)]


def _coerce(key: str, value: Any) -> Any:
    """A YAML value as the type of the TrainConfig field (YAML reads 1e-5 as a string)."""
    kind = str(_FIELDS[key].type)
    try:
        if value is None:
            return None
        if "float" in kind:
            return float(value)
        if "int" in kind and "str" not in kind:
            return int(value)
        return str(value)
    except (TypeError, ValueError):
        raise UsageError(f"grid key {key!r}: bad value {value!r}") from None


def load_grid(path: str | Path) -> TuneSpec:
    """Read and check a grid file. Raises UsageError naming the offending key."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read grid ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:160]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with 'flags' (and optionally 'fixed', 'sample')")
    unknown_top = set(data) - {"flags", "fixed", "sample"}
    if unknown_top:
        raise UsageError(f"{path}: unknown key {sorted(unknown_top)[0]!r} (use flags, fixed, sample)")
    flags, fixed = data.get("flags") or {}, data.get("fixed") or {}
    if not isinstance(flags, dict) or not flags:
        raise UsageError(f"{path}: 'flags' must map at least one option to a list of values")
    if not isinstance(fixed, dict):
        raise UsageError(f"{path}: 'fixed' must be a mapping")
    for key, values in list(flags.items()) + [(k, [v]) for k, v in fixed.items()]:
        if key not in _FIELDS or key in _NOT_TUNABLE:
            raise UsageError(f"{path}: unknown flag {key!r}")
        if not isinstance(values, list) or not values:
            raise UsageError(f"{path}: flag {key!r} needs a non-empty list of values")
    both = set(flags) & set(fixed)
    if both:
        raise UsageError(f"{path}: {sorted(both)[0]!r} is both a flag and fixed")
    sample = data.get("sample")
    if sample is not None and not (isinstance(sample, (int, float)) and 0 < sample <= 1):
        raise UsageError(f"{path}: 'sample' must be a fraction in (0, 1]")
    spec = TuneSpec({k: [_coerce(k, v) for v in vs] for k, vs in flags.items()},
                    {k: _coerce(k, v) for k, v in fixed.items()}, sample)
    for config in spec.configurations(seed=0)[:1]:
        TrainConfig(**spec.fixed, **config).validate()
    return spec


def resolve_storage(storage: str | None) -> str:
    return storage or f"sqlite:///{Path.cwd() / 'optuna.db'}"


@dataclass(frozen=True)
class TrialRow:
    number: int
    run_id: str
    flags: dict
    value: float
    val: dict  # final validation metrics, e.g. {"video_auc": ..., "video_log_loss": ...}
    epochs: int


@dataclass(frozen=True)
class TuneResult:
    study: str
    storage: str
    metric: str
    rows: tuple[TrialRow, ...]  # completed trials, best first
    test: Any  # TrainResult of the best configuration, evaluated on the test part

    def table(self, top: int = 10) -> str:
        if not self.rows:
            return "no completed trials"
        names = list(self.rows[0].flags)
        head = ["rank", "trial", *names, f"val {self.metric}", "val video_auc", "val frame_auc", "epochs done"]
        body = [[str(i), str(r.number), *(f"{r.flags[n]:g}" if isinstance(r.flags[n], float) else str(r.flags[n])
                                         for n in names), f"{r.value:.4f}", fmt(r.val.get("video_auc"), 4),
                 fmt(r.val.get("frame_auc"), 4), str(r.epochs)] for i, r in enumerate(self.rows[:top], 1)]
        return format_table(head, body)

    def test_line(self) -> str:
        v = self.test.test.video
        return (f"best configuration (trial {self.rows[0].number}) on the TEST part, never used for selection: "
                f"video AUC {fmt(v.auc, 4)}, log loss {fmt(v.log_loss, 4)}, accuracy {fmt(v.accuracy, 4)} "
                f"(n={v.n}); run {self.test.run_id}")


def _storage(url: str):
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat, retries
    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                                      engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                                      else None)


def _sampler(search: Search, seed: int):
    import optuna

    return {"grid": optuna.samplers.RandomSampler, "random": optuna.samplers.RandomSampler,
            "tpe": optuna.samplers.TPESampler}[search](seed=seed)


@dataclass(frozen=True)
class _Job:
    """Everything a worker process needs: picklable, no live objects."""

    data: str
    spec: TuneSpec
    study: str
    storage: str
    metric: str
    search: str
    trials: int
    seed: int
    tracking_uri: str
    experiment: str
    parent_run_id: str
    cache_dir: str | None


def _objective(job: _Job):
    import optuna

    from .experiment import train

    def objective(trial: optuna.Trial) -> float:
        if job.search == "grid" and GRID_ATTR not in trial.user_attrs:
            raise optuna.TrialPruned("no grid configuration left")  # lost a race for the last one: run nothing
        flags = {name: trial.suggest_categorical(name, values) for name, values in job.spec.flags.items()}
        config = TrainConfig(**{**job.spec.fixed, **flags, "seed": job.spec.fixed.get("seed", job.seed)})
        flag_text = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in flags.items())
        start = time.perf_counter()
        try:
            result = train(job.data, config=config, tracking_uri=job.tracking_uri, experiment=job.experiment,
                           run_name=f"{job.study}-{trial.number}", parent_run_id=job.parent_run_id,
                           evaluate_test=False, progress=False, cache_dir=job.cache_dir,
                           tags={"fakefinder.study": job.study, "fakefinder.trial": str(trial.number)})
        except Exception as exc:
            print(f"trial {trial.number}: {flag_text} -> failed: {one_line(exc)}", flush=True)
            raise
        val = {f"{level}_{k}": v for level in ("frame", "video") for k, v in result.val.to_dict()[level].items()}
        trial.set_user_attr("run_id", result.run_id)
        trial.set_user_attr("val", val)
        trial.set_user_attr("epochs", result.history.completed)
        value = val[job.metric]
        print(f"trial {trial.number}: {flag_text} -> val {job.metric} {fmt(value, 4)} "
              f"({result.history.completed} epochs, {time.perf_counter() - start:.1f} s)", flush=True)
        return float("nan") if value is None else value

    return objective


def _work(job: _Job, parent: int | None = None) -> None:
    """One worker: run trials until the grid (or the trial budget) is used up, waiting out others' trials.

    A worker that `tune` started (`parent` = its pid) stops between trials once that process is gone, so
    killing `tune` stops the whole search; the next `tune` resumes it.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial prints its own line, failures included
    study = optuna.load_study(study_name=job.study, storage=_storage(job.storage),
                              sampler=_sampler(job.search, job.seed))
    objective = _objective(job)
    while parent is None or os.getppid() == parent:
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed, then re-enqueued
        trials = study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if job.search == "grid":
            if not waiting:
                if not running:
                    return
                time.sleep(1)  # another worker's trial: it finishes, or goes stale and comes back
                continue
        elif sum(t.state in (TrialState.COMPLETE, TrialState.RUNNING) for t in trials) >= job.trials:
            if not running:
                return
            time.sleep(1)
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,))


def _config_key(config: dict) -> str:
    return json.dumps(sorted(config.items()))


def _enqueue_grid(study, spec: TuneSpec, seed: int) -> int:
    """Enqueue every planned configuration that is not done, running or waiting already; returns the plan size."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    have = {t.user_attrs.get(GRID_ATTR) for t in study.get_trials(deepcopy=False, states=live)}
    planned = spec.configurations(seed)
    for config in planned:
        if _config_key(config) not in have:
            study.enqueue_trial(config, user_attrs={GRID_ATTR: _config_key(config)})
    return len(planned)


def _warm_cache(data: str, spec: TuneSpec, cache_dir: str | None) -> None:
    """Extract features once, before workers start, for every base/pooling the grid uses."""
    from .backbones import create_backbone
    from .experiment import load_data
    from .features import FeatureCache

    keys = {"backbone", "weights", "input_size", "normalization", "pool", "precision", "seed", "trainable_blocks"}
    seen = set()
    crops = None
    for flags in spec.configurations(seed=0):
        config = TrainConfig(**{**spec.fixed, **flags})
        key = tuple((k, getattr(config, k)) for k in sorted(keys))
        if key in seen or config.trainable_blocks:
            continue
        seen.add(key)
        crops = crops if crops is not None else list(load_data(data).crops)
        backbone = create_backbone(config.backbone, weights=config.weights, input_size=config.input_size,
                                   normalization=config.normalization, seed=config.seed)
        FeatureCache(cache_dir or features_dir(data), backbone, config.pool,
                     precision=config.precision).features(crops, progress=True)


def tune(data: str | Path, grid: str | Path, *, search: Search = "grid", trials: int | None = None,
         study: str | None = None, storage: str | None = None, workers: int = 1, metric: str = "video_log_loss",
         tracking_uri: str | None = None, experiment: str = "fakefinder", seed: int = 0,
         cache_dir: str | Path | None = None) -> TuneResult:
    """Search training flags on the validation part; evaluate the best configuration once on the test part.

    Rerunning the same command resumes the study. Raises UsageError for a bad grid, metric or search.
    """
    import optuna

    from .experiment import load_data, train
    from .tracking import configure, resolve_tracking_uri

    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")
    if search not in ("grid", "random", "tpe"):
        raise UsageError(f"unknown search {search!r} (grid, random or tpe)")
    if search != "grid" and not trials:
        raise UsageError(f"--search {search} needs --trials N")
    spec = load_grid(grid)
    load_data(data)  # fail fast on unusable data
    name = study or f"{Path(data).resolve().name}-{Path(grid).stem}"
    url = resolve_storage(storage)
    tracking_uri = resolve_tracking_uri(tracking_uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study(study_name=name, storage=_storage(url), load_if_exists=True,
                                    direction=METRICS[metric][1], sampler=_sampler(search, seed))
    mlflow = configure(tracking_uri, experiment)
    parent = the_study.user_attrs.get("mlflow_parent_run_id")
    if parent is None:
        tags = {"fakefinder.study": name, "fakefinder.role": "study"}
        with mlflow.start_run(run_name=f"study {name}", tags=tags) as run:
            mlflow.log_params({"grid": str(Path(grid).resolve()), "search": search, "metric": metric,
                               "flags": str(spec.flags), "fixed": str(spec.fixed), "sample": str(spec.sample)})
            parent = run.info.run_id
        the_study.set_user_attr("mlflow_parent_run_id", parent)
    planned = _enqueue_grid(the_study, spec, seed) if search == "grid" else trials
    print(f"study {name} ({search}, {planned} configurations, selecting on val {metric}) in {url}", flush=True)
    _warm_cache(str(data), spec, str(cache_dir) if cache_dir else None)
    job = _Job(str(data), spec, name, url, metric, search, int(trials or 0), seed, tracking_uri, experiment, parent,
               str(cache_dir) if cache_dir else None)
    if workers <= 1:
        _work(job)
    else:
        ctx = get_context("spawn")
        procs = [ctx.Process(target=_work, args=(job, os.getpid())) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    rows = completed_rows(the_study, metric)
    if not rows:
        raise UsageError(f"study {name}: no trial completed (see the errors above)")
    best = rows[0]
    config = TrainConfig(**{**spec.fixed, **best.flags, "seed": spec.fixed.get("seed", seed)})
    test = train(data, config=config, tracking_uri=tracking_uri, experiment=experiment, progress=False,
                 run_name=f"{name}-best-on-test", parent_run_id=parent, cache_dir=cache_dir,
                 tags={"fakefinder.study": name, "fakefinder.role": "best-on-test",
                       "fakefinder.trial": str(best.number)})
    return TuneResult(name, url, metric, tuple(rows), test)


def completed_rows(study, metric: str) -> list[TrialRow]:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value == t.value]
    sign = 1 if METRICS[metric][1] == "minimize" else -1
    done.sort(key=lambda t: (sign * t.value, t.number))
    return [TrialRow(t.number, t.user_attrs.get("run_id", ""), dict(t.params), float(t.value),
                     t.user_attrs.get("val", {}), int(t.user_attrs.get("epochs", 0))) for t in done]
