"""The page: plain HTML, CSS and JavaScript shipped in the package (nothing fetched from the internet)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter()
_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
async def index():
    return HTMLResponse(_asset("index.html"))


@router.get("/static/{name}")
async def static(name: str):
    if name not in _TYPES:  # a fixed list: no name from a request reaches the file system
        return Response(status_code=404)
    return Response(_asset(name), media_type=_TYPES[name])
