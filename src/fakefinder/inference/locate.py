"""Where the model a user names lies: a model file as given, or the one an MLflow run logged."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


def resolve_model_file(model: str | Path, *, tracking_uri: str | None = None) -> Path:
    """A model file path as given, or the model file logged by MLflow run `model` (id or unique prefix)."""
    path = Path(model)
    if path.is_file():
        return path
    if path.suffix or "/" in str(model) or "\\" in str(model):
        raise UsageError(f"{model}: model file not found")
    from ..tracking.runs import get_run, run_artifact

    run = get_run(str(model), tracking_uri=tracking_uri)
    folder = run_artifact(run.run_id, "model", tracking_uri=tracking_uri)
    files = sorted(folder.glob("*.safetensors")) if folder else []
    if not files:
        raise UsageError(f"run {run.run_id} has no model file")
    return files[0]
