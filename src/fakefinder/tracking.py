"""MLflow run tracking, resolved in one place: `--tracking-uri`, else MLFLOW_TRACKING_URI, else a SQLite file
in the working directory (so `mlflow ui` works with no server)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DEFAULT_EXPERIMENT = "fakefinder"


def resolve_tracking_uri(uri: str | None = None) -> str:
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def configure(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
    """Point MLflow at the store and experiment; returns the mlflow module."""
    import logging

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(resolve_tracking_uri(uri))
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None
        if mlflow.get_tracking_uri().startswith("sqlite:///"):
            # Next to the database rather than wherever the process happens to run.
            location = (Path(mlflow.get_tracking_uri()[len("sqlite:///"):]).parent / "mlruns").resolve().as_uri()
        mlflow.create_experiment(experiment, artifact_location=location and f"{location}/{experiment}")
    mlflow.set_experiment(experiment)
    return mlflow


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
