"""``GET /``: the web page (``service/static/``, package data) and its strict CSP."""

from importlib import resources

from fastapi import APIRouter, Response

__all__ = ["STATIC", "router"]

STATIC = resources.files("abdnet.service") / "static"

_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index_page() -> Response:
    html = (STATIC / "index.html").read_bytes()
    return Response(
        html,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"},
    )
