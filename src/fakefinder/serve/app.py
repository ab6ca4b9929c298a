"""The FastAPI application: routers, the Host, Origin and token checks, and JSON errors."""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from . import api, pages
from .jobs import JobError, JobQueue

TOKEN_COOKIE = "fakefinder_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """An address only this machine reaches (127.0.0.0/8, ::1, localhost): no token is needed there."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_names(bind: str) -> frozenset[str] | None:
    """The names a request may give in its Host header: the bound address, and this machine's loopback names when
    it is one. None for a wildcard bind (0.0.0.0, ::), which any name reaches: the token guards it."""
    bind = bind.strip("[]").lower()
    if bind in ("", "0.0.0.0", "::"):
        return None
    return LOOPBACK_NAMES | {bind} if is_loopback(bind) else frozenset({bind})


def create_app(queue: JobQueue, *, token: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The web app over `queue`, bound to `host`. A request naming another host is refused (a page whose name was
    made to point here, DNS rebinding), and so is one from a page of another origin. With `token`, every request
    must carry it (a Bearer header, the cookie the page sets, or ?token= on the first visit)."""
    app = FastAPI(title="fakefinder", docs_url=None, redoc_url=None)  # the docs pages would fetch scripts online
    app.state.queue = queue
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.exception_handler(JobError)
    async def job_error(request: Request, exc: JobError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        where = ", ".join(".".join(map(str, e.get("loc", ()))) for e in exc.errors()) or "the request"
        return JSONResponse({"error": f"bad value in {where}"}, status_code=422)

    names = _host_names(host)

    @app.middleware("http")
    async def check_origin(request: Request, call_next):
        given = request.headers.get("host", "")
        if names is not None and (urlsplit(f"//{given}").hostname or "") not in names:
            return JSONResponse({"error": f"this server does not answer to the host name {given!r}"},
                                status_code=421)
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != given.lower():
            return JSONResponse({"error": f"requests from pages of {origin!r} are refused"}, status_code=403)
        return await call_next(request)

    if token:
        @app.middleware("http")
        async def check_token(request: Request, call_next):
            given = (request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                     or request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token") or "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"error": "a valid token is needed (--token of fakefinder serve)"}, status_code=401)
            response = await call_next(request)
            if request.query_params.get("token"):
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response

    return app
