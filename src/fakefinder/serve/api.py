"""The JSON API that programs and the page use. Same schema as `fakefinder predict --json` for a verdict."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from .jobs import JobError, JobQueue

router = APIRouter(prefix="/api")
ENVELOPE = 1 << 16  # multipart headers and the other fields, allowed beyond the file itself


def _queue(request: Request) -> JobQueue:
    return request.app.state.queue


@router.get("/models")
async def models(request: Request):
    return await asyncio.to_thread(_queue(request).describe_models)


class _TooLarge(Exception):
    pass


def _capped(request: Request, limit: int) -> Request:
    """`request` whose body stops being read once `limit` bytes have come, whatever the transfer encoding (a
    chunked upload declares no length): the form parser then fails with _TooLarge instead of spooling it all."""
    receive, seen = request.receive, 0

    async def capped_receive():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
        return message

    return Request(request.scope, capped_receive)


async def _wait(job, timeout: float) -> None:
    """Until `job` ends or `timeout` passes, holding no thread: waiting clients never starve other requests."""
    deadline = asyncio.get_running_loop().time() + timeout
    while job.state in ("queued", "running") and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


@router.post("/predict")
async def predict(request: Request, model: str | None = None, wait: float = 0.0):
    """A multipart `file` (or, under --allow-dir, a `path` on the server) and an optional `model`. Answers the
    verdict (200) when it is ready within `wait` seconds, else 202 with a Location to poll."""
    queue = _queue(request)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > queue.upload_limit + ENVELOPE:
        raise queue.too_large()
    try:
        form = await _capped(request, queue.upload_limit + ENVELOPE).form(max_files=1, max_fields=8)
    except _TooLarge:
        raise queue.too_large() from None
    except Exception as exc:  # noqa: BLE001 - a malformed body is the client's error
        why = getattr(exc, "detail", None) or type(exc).__name__  # Starlette says which part was too large
        raise JobError(f"not a multipart form with a file ({why})") from None
    upload, server_path = form.get("file"), form.get("path")
    model = form.get("model") or model
    if model is not None and not isinstance(model, str):
        raise JobError("model must be text")
    if upload is None and server_path is None:
        raise JobError("send the video or image as a multipart field named 'file'")
    if isinstance(upload, str) or (server_path is not None and not isinstance(server_path, str)):
        raise JobError("'file' must be a file and 'path' text")
    name = getattr(upload, "filename", None) or (server_path or "upload")
    job = queue.new_job(name, model)
    try:
        if upload is not None:
            written = await asyncio.to_thread(_save, upload.file, queue.input_path(job), queue.upload_limit)
            await upload.close()
            if written is None:
                raise queue.too_large()
            await asyncio.to_thread(queue.submit_file, job)
        else:
            await asyncio.to_thread(queue.submit_path, job, server_path)
    except BaseException:  # refused, or the disk is full: the job must not hold a queue slot for ever
        queue.discard(job)
        raise
    if wait > 0:
        await _wait(job, min(wait, 600.0))
    return _answer(queue, job)


def _save(source, target, limit: int) -> int | None:
    """Copy an upload into its job folder; None (and nothing kept) when it exceeds `limit`."""
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > limit:
                break
            out.write(chunk)
    return None if written > limit else written


def _answer(queue: JobQueue, job):
    if job.state in ("queued", "running"):
        return JSONResponse(job.status(), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})
    if job.state == "failed":  # the upload passed the checks but cannot be read as a video or image
        return JSONResponse({"error": job.error or "the verdict failed"}, status_code=422)
    return JSONResponse(queue.result(job))


@router.get("/jobs/{job_id}")
async def job_result(request: Request, job_id: str):
    """202 with progress while the verdict runs, then the verdict (the schema of `predict --json`)."""
    queue = _queue(request)
    return _answer(queue, queue.get(job_id))


@router.get("/jobs/{job_id}/status")
async def job_status(request: Request, job_id: str):
    return _queue(request).get(job_id).status()


@router.get("/jobs/{job_id}/view")
async def job_view(request: Request, job_id: str):
    """What the page draws beside the verdict: thumbnail sizes, heatmaps, what the threshold means."""
    queue = _queue(request)
    return queue.view(queue.get(job_id))


@router.get("/jobs/{job_id}/frames/{index}.jpg")
async def frame(request: Request, job_id: str, index: int):
    return _file(_queue(request).get(job_id).folder / "frames" / f"{index}.jpg", "image/jpeg")


@router.get("/jobs/{job_id}/heatmaps/{rank}.png")
async def heatmap(request: Request, job_id: str, rank: int):
    return _file(_queue(request).get(job_id).folder / f"heatmap-{rank}.png", "image/png")


@router.get("/jobs/{job_id}/result.json")
async def download_json(request: Request, job_id: str):
    job = _queue(request).get(job_id)
    return _file(job.folder / "result.json", "application/json",
                 download=f"{job.name.rsplit('.', 1)[0]}-verdict.json")


@router.get("/jobs/{job_id}/report.html")
async def download_report(request: Request, job_id: str):
    from .verdict_report import verdict_report

    queue = _queue(request)
    job = queue.get(job_id)
    result = queue.result(job)
    if result is None:
        raise JobError("the verdict is not ready", 409)
    html = await asyncio.to_thread(verdict_report, result, queue.view(job), job.folder)
    return HTMLResponse(html, headers=_attachment(f"{job.name.rsplit('.', 1)[0]}-verdict.html"))


def _attachment(name: str) -> dict:
    """Content-Disposition for any upload's name: an ASCII fallback and the UTF-8 name (RFC 6266/5987)."""
    from urllib.parse import quote

    fallback = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return {"Content-Disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"}


def _file(path, media_type: str, download: str | None = None):
    if not path.is_file():
        raise JobError("not found", 404)
    return FileResponse(path, media_type=media_type, headers=_attachment(download) if download else None)

