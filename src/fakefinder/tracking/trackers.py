"""Where runs are recorded, resolved in one place as Optuna resolves storages: `resolve_tracker(x)` takes None
or "none" (nothing recorded), a URI (an MLflow store: sqlite:///..., http://server:5000, a folder) or a Tracker
object. Nothing here touches process-global state: MLflow is used through a client bound to its URI.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from .._files import sqlite_url

DEFAULT_EXPERIMENT = "fakefinder"


class Tag(StrEnum):
    """The tags fakefinder writes on a run: writers and readers name them here, never as strings."""

    STUDY = "fakefinder.study"  # the tuning study a run belongs to
    ROLE = "fakefinder.role"  # a Role
    TRIAL = "fakefinder.trial"  # its trial number in the study
    DATASET = "fakefinder.dataset"  # the training data's name
    DATA = "fakefinder.data"  # its folder
    MANIFEST_DIGEST = "fakefinder.manifest_digest"
    GIT_COMMIT = "fakefinder.git_commit"
    LEAKY_SPLIT = "fakefinder.leaky_split"  # "True" when faces of one video sit on both sides of the split


class Role(StrEnum):
    """What a run is within a tuning study."""

    STUDY = "study"  # the parent run
    TRIAL = "trial"  # one configuration, scored on validation
    BEST_ON_TEST = "best-on-test"  # the selected configuration, trained again and scored once on the test part


class Run(Protocol):
    run_id: str

    def log_params(self, params: dict[str, str]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_history(self, epochs: list[dict]) -> None: ...

    def log_artifacts(self, folder: Path, subdir: str | None = None) -> None: ...

    def log_file(self, path: Path, subdir: str | None = None) -> None: ...


class Tracker(Protocol):
    uri: str

    def start_run(self, *, name: str | None = None, tags: dict[str, str] | None = None,
                  parent_run_id: str | None = None, resume_run_id: str | None = None
                  ) -> contextlib.AbstractContextManager[Run]: ...


class _NullRun:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: dict[str, str]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_history(self, epochs: list[dict]) -> None:
        pass

    def log_artifacts(self, folder: Path, subdir: str | None = None) -> None:
        pass

    def log_file(self, path: Path, subdir: str | None = None) -> None:
        pass


class NullTracker:
    """Records nothing; runs still get an id (it names the model file)."""

    uri = "none"

    @contextlib.contextmanager
    def start_run(self, *, name=None, tags=None, parent_run_id=None, resume_run_id=None) -> Iterator[Run]:
        yield _NullRun(resume_run_id or uuid.uuid4().hex)


class _MlflowRun:
    def __init__(self, client, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        existing = self.client.get_run(self.run_id).data.params
        items = [p for p in items if p.key not in existing]  # a resumed run has them already
        for s in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[s:s + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None and v == v]
        for s in range(0, len(items), 1000):  # MLflow's cap per batch
            self.client.log_batch(self.run_id, metrics=items[s:s + 1000])

    def log_history(self, epochs: list[dict]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, epoch) for epoch, row in enumerate(epochs, 1)
                 for k, v in row.items() if v is not None and v == v]
        for s in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[s:s + 1000])

    def log_artifacts(self, folder: Path, subdir: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path=subdir)

    def log_file(self, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=subdir)


class MlflowTracker:
    """An MLflow tracking store or server, through a client bound to `uri` (no global state)."""

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.uri, self.experiment = uri, experiment
        self.client = _client(uri)

    def experiment_id(self) -> str:
        found = _checked(self.uri, lambda: self.client.get_experiment_by_name(self.experiment))
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # next to the database rather than wherever the process runs
            location = (Path(self.uri[len("sqlite:///"):]).parent / "mlruns" / self.experiment).resolve().as_uri()
        try:
            return self.client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # noqa: BLE001 - another process created it first
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    @contextlib.contextmanager
    def start_run(self, *, name=None, tags=None, parent_run_id=None, resume_run_id=None) -> Iterator[Run]:
        """A run that ends FINISHED, FAILED on an error, or KILLED on Ctrl-C/SIGTERM; never left RUNNING by us."""
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if resume_run_id:
            run_id = resume_run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(self.experiment_id(), run_name=name, tags=tags).info.run_id
        try:
            yield _MlflowRun(self.client, run_id)
        except BaseException as exc:
            self.client.set_terminated(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """What the CLI tracks into: --tracking-uri, else MLFLOW_TRACKING_URI, else ./mlflow.db."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return sqlite_url("mlflow.db")


def resolve_tracker(tracking: Tracker | str | None, experiment: str = DEFAULT_EXPERIMENT) -> Tracker:
    """None or "none": nothing recorded; a URI: that MLflow store; a Tracker: itself."""
    if tracking is None or tracking == "none":
        return NullTracker()
    if isinstance(tracking, str):
        return MlflowTracker(tracking, experiment)
    return tracking


@dataclass(frozen=True)
class Recording:
    """Where a run is recorded and as what: the tracker (None or "none": nothing recorded; a URI: that MLflow
    store; or a Tracker), its experiment, the run's name (default: the dataset's and the backbone's), its parent
    run and extra tags. `train`, `tune` and `study` take it, or a bare tracker (`Recording.of`)."""

    tracker: Tracker | str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    name: str | None = None
    parent_run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, tracking: Recording | Tracker | str | None) -> Recording:
        return tracking if isinstance(tracking, Recording) else cls(tracking)

    def resolve(self) -> Tracker:
        return resolve_tracker(self.tracker, self.experiment)


def _checked(uri: str, fn):
    """`fn()`, with whatever a damaged database, a server that is down or a bad URI raises as one line."""
    from ..errors import UsageError, one_line

    try:
        return fn()
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow and SQLAlchemy raise many types for an unusable store
        raise UsageError(f"tracking store {uri}: unusable ({one_line(exc, limit=160)})") from None


def _client(uri: str):
    import mlflow

    client = _checked(uri, lambda: mlflow.MlflowClient(tracking_uri=uri))
    _checked(uri, lambda: client._tracking_client.store)  # opens (and for a new SQLite file, creates) the store
    return client


def mlflow_client(uri: str | None = None):
    """A client for reading runs (runs, report, evaluate RUN_ID), at the CLI's default URI when None."""
    return _client(resolve_tracking_uri(uri))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
