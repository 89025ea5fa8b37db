"""HTTP middleware: request metrics and the security headers of every response."""

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response

__all__ = ["observe"]


async def observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Count and time the request by its route template; add ``nosniff`` and ``no-referrer``."""
    t0 = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response
    finally:
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        request.app.state.service.metrics.observe_request(
            template, request.method, status, time.perf_counter() - t0
        )
