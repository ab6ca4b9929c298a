"""`runs`: list, show and compare tracked runs (our `ls_runs`, `view_run`, `compare_runs`), on any MLflow store."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .._files import safe_run_id
from .._text import format_table, shown
from ..errors import OptionError, UsageError, one_line
from ..metrics import EPOCH_METRICS, direction
from .trackers import DEFAULT_EXPERIMENT, Role, Tag, mlflow_client

# Short names a user types -> tracked metric keys (the registry in `metrics` says which way is better).
ALIASES = {"val_auc": "val_video_auc", "val_log_loss": "val_video_log_loss", "val_acc": "val_video_accuracy",
           "test_auc": "test_video_auc", "test_log_loss": "test_video_log_loss"}
SHOWN_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_video_auc", "val_video_log_loss")


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    name: str
    status: str
    start_time: float  # ms since the epoch
    end_time: float | None
    params: dict
    metrics: dict
    tags: dict

    @property
    def duration(self) -> float | None:
        return (self.end_time - self.start_time) / 1000 if self.end_time else None


def _metric(name: str) -> str:
    return ALIASES.get(name, name)


def _filter(where: str | None) -> str:
    """'val_auc > 0.9 and epochs_completed < 20' -> MLflow's filter syntax on metrics."""
    if not where:
        return ""
    parts = re.split(r"\s+and\s+", where.strip(), flags=re.I)
    out = []
    for part in parts:
        m = re.fullmatch(r"([A-Za-z_][\w.]*)\s*(<=|>=|!=|=|<|>)\s*(\S+)", part.strip())
        if not m:
            raise OptionError("where", f"cannot read {part!r} (expected e.g. \"val_auc > 0.9\")")
        name, op, value = m.groups()
        key = name if name.startswith(("params.", "tags.", "metrics.", "attributes.")) else f"metrics.{_metric(name)}"
        out.append(f"{key} {op} {value}")
    return " and ".join(out)


def list_runs(*, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, study: str | None = None,
              order: str | None = None, where: str | None = None, latest: int | None = None) -> list[RunInfo]:
    """Training runs (not study parents), newest first, or best first by `order` (a metric name)."""
    client = mlflow_client(tracking_uri)
    clauses = [c for c in (_filter(where), f"tags.`{Tag.STUDY}` = '{study}'" if study else "") if c]
    if order:
        key = _metric(order)
        order_by = [f"metrics.`{key}` {'ASC' if direction(key) == 'minimize' else 'DESC'}"]
    else:
        order_by = ["attributes.start_time DESC"]
    found_experiment = client.get_experiment_by_name(experiment)
    if found_experiment is None:
        return []
    try:
        found = client.search_runs([found_experiment.experiment_id], filter_string=" and ".join(clauses),
                                   order_by=order_by, max_results=latest or 50000)
    except Exception as exc:  # noqa: BLE001 - MLflow reports a bad filter with its own exception types
        raise UsageError(f"cannot list runs: {one_line(exc, limit=200, typed=False)}") from None
    runs = [_info(r) for r in found if r.data.tags.get(Tag.ROLE) != Role.STUDY]
    if order:  # MLflow puts runs without the metric anywhere; put them last
        runs.sort(key=lambda r: _metric(order) not in r.metrics)
    return runs


def runs_table(runs: list[RunInfo]) -> str:
    """Run id, the flags that differ between these runs, final metrics, epochs done/asked, duration, start."""
    import datetime as dt

    keys = sorted({k for r in runs for k in r.params})
    varying = [k for k in keys if len({r.params.get(k) for r in runs}) > 1 and k not in ("data", "split_file")]
    head = ["run", *varying, *SHOWN_METRICS, "epochs", "seconds", "started"]
    rows = []
    for r in runs:
        epochs = f"{shown(r.metrics.get('epochs_completed'))}/{r.params.get('epochs', '-')}".replace(".0/", "/")
        started = dt.datetime.fromtimestamp(r.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S")
        rows.append([r.run_id[:12], *(r.params.get(k, "-") for k in varying),
                     *(shown(r.metrics.get(m)) for m in SHOWN_METRICS), epochs, shown(r.duration), started])
    return format_table(head, rows)


def write_csv(runs: list[RunInfo], path: str | Path) -> Path:
    import csv

    params = sorted({k for r in runs for k in r.params})
    metrics = sorted({k for r in runs for k in r.metrics})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "name", "status", "start_time", "duration_s", *(f"param.{k}" for k in params),
                    *(f"metric.{k}" for k in metrics)])
        for r in runs:
            w.writerow([r.run_id, r.name, r.status, r.start_time, r.duration, *(r.params.get(k, "") for k in params),
                        *(r.metrics.get(k, "") for k in metrics)])
    return Path(path)


def _info(r) -> RunInfo:
    return RunInfo(r.info.run_id, r.info.run_name or "", r.info.status, r.info.start_time, r.info.end_time,
                   dict(r.data.params), dict(r.data.metrics), dict(r.data.tags))


def get_run(run_id: str, *, tracking_uri: str | None = None) -> RunInfo:
    """A run by id or unique prefix. Raises UsageError when there is none (or several)."""
    client = mlflow_client(tracking_uri)
    if len(run_id) < 32:  # a prefix, as the tables print them
        ids = [e.experiment_id for e in client.search_experiments()]
        matches = [r.info.run_id for r in client.search_runs(ids, max_results=50000)
                   if r.info.run_id.startswith(run_id)] if run_id else []
        if len(matches) > 1:
            raise UsageError(f"run id prefix {run_id!r} is ambiguous ({len(matches)} runs)")
        run_id = matches[0] if matches else run_id
    try:
        return _info(client.get_run(run_id))
    except Exception:  # noqa: BLE001
        raise UsageError(f"no run {run_id!r} in {client.tracking_uri}") from None


def run_artifact(run_id: str, path: str, *, tracking_uri: str | None = None) -> Path | None:
    """A run's artifact (file or folder), downloaded once into ~/.cache/fakefinder (finished runs never change);
    None when the run has no such artifact."""
    import os
    import tempfile

    folder = Path.home() / ".cache" / "fakefinder" / "runs" / safe_run_id(run_id)
    target = folder / path
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        try:
            got = Path(mlflow_client(tracking_uri).download_artifacts(run_id, path, tmp))
        except Exception:  # noqa: BLE001 - MLflow raises its own types for a missing artifact or run
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(got, target)  # whole or not at all: a killed download is never taken for the artifact
        except OSError:
            if not target.exists():  # else another process put the same artifact there first
                raise
    return target


def history(run_id: str, *, tracking_uri: str | None = None) -> list[dict]:
    """Per-epoch metrics of a run, as `fit` logged them."""
    client = mlflow_client(tracking_uri)
    epochs: dict[int, dict] = {}
    for key in EPOCH_METRICS:
        for m in client.get_metric_history(run_id, key):
            epochs.setdefault(m.step, {})[key] = m.value
    return [epochs[s] for s in sorted(epochs)]


def show_run(run_id: str, *, tracking_uri: str | None = None) -> str:
    """Everything recorded for a run, as text."""
    run = get_run(run_id, tracking_uri=tracking_uri)
    run_id = run.run_id
    client = mlflow_client(tracking_uri)
    lines = [f"run {run.run_id} ({run.name}), {run.status}, {shown(run.duration)} s"]
    lines += ["", "flags:"] + [f"  {k} = {v}" for k, v in sorted(run.params.items())]
    lines += ["", "metrics (final):"] + [f"  {k} = {shown(v)}" for k, v in sorted(run.metrics.items())]
    lines += ["", "tags:"] + [f"  {k} = {v}" for k, v in sorted(run.tags.items()) if not k.startswith("mlflow.")]
    lines += ["", "per epoch:", format_table(["epoch", *EPOCH_METRICS],
                                               [[str(i), *(shown(e.get(k)) for k in EPOCH_METRICS)]
                                                for i, e in enumerate(history(run_id, tracking_uri=tracking_uri), 1)])]
    artifacts = [a.path for a in client.list_artifacts(run_id)] + \
        [a.path for a in client.list_artifacts(run_id, "model")]
    lines += ["", "artifacts:"] + [f"  {a}" for a in artifacts]
    summary = run_artifact(run_id, "model_summary.txt", tracking_uri=tracking_uri)
    if summary is not None:
        lines += ["", "model summary:", summary.read_text().rstrip()]
    return "\n".join(lines)


def compare_runs(a: str, b: str, *, tracking_uri: str | None = None, png: str | Path | None = None) -> str:
    """Flags and final metrics side by side, differences marked with '*'; learning curves overlaid in `png`."""
    from .plots import learning_curves

    ra, rb = get_run(a, tracking_uri=tracking_uri), get_run(b, tracking_uri=tracking_uri)
    rows = []
    for section, da, db in (("flag", ra.params, rb.params), ("metric", ra.metrics, rb.metrics)):
        for k in sorted(set(da) | set(db)):
            va, vb = da.get(k), db.get(k)
            rows.append(["*" if va != vb else "", section, k, shown(va), shown(vb)])
    text = format_table(["", "", "name", ra.run_id[:12], rb.run_id[:12]], rows)
    if png:
        learning_curves({ra.run_id[:8]: history(ra.run_id, tracking_uri=tracking_uri),
                         rb.run_id[:8]: history(rb.run_id, tracking_uri=tracking_uri)}, png, title="learning curves")
        text += f"\n\nlearning curves: {png}"
    return text
