"""The FastAPI application: routers, the token check, and JSON errors."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from . import api, pages
from .jobs import JobError, JobQueue

TOKEN_COOKIE = "fakefinder_token"


def create_app(queue: JobQueue, *, token: str | None = None) -> FastAPI:
    """The web app over `queue`. With `token`, every request must carry it (a Bearer header, the cookie the page
    sets, or ?token= on the first visit)."""
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
