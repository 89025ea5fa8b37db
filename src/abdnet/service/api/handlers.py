"""Exception handlers: every error leaves the service as ``{"error": "..."}``."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from abdnet.gallery import GalleryError
from abdnet.service.auth import AuthError
from abdnet.service.errors import ApiError

__all__ = ["add_error_handlers"]

log = logging.getLogger(__name__)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)


async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    msgs = []
    for err in exc.errors():
        where, *name = [str(x) for x in err.get("loc", ())] or ["request"]
        msgs.append(f"{where} parameter {'.'.join(name)!r}: {err.get('msg')}")
    return JSONResponse({"error": "; ".join(msgs) or "invalid request"}, status_code=400)


async def _gallery_error(request: Request, exc: GalleryError) -> JSONResponse:
    log.error("%s", exc)
    return JSONResponse({"error": str(exc)}, status_code=503)


def add_error_handlers(app: FastAPI) -> None:
    """Answer API, auth, HTTP, validation and gallery errors as JSON."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(AuthError, _auth_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(GalleryError, _gallery_error)
