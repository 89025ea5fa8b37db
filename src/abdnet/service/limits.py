"""The service's limits (``ServiceSettings``) and the request-body limit (an ASGI middleware).

The body limit is plain ASGI, below FastAPI: a declared ``Content-Length`` above the limit
is answered 413 at once, and a streamed body is counted as it arrives.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from abdnet.gallery import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from abdnet.retrieval import MAX_K
from abdnet.service.errors import ApiError

__all__ = ["BodyLimit", "ServiceSettings"]


@dataclass(frozen=True)
class ServiceSettings:
    max_upload_bytes: int = 16 * 2**20  # whole request body (413 beyond)
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # per image (413 beyond)
    min_crop_side: int = DEFAULT_MIN_SIDE  # least width and height of an image (422 below)
    max_files: int = 64  # images per enrolment request
    max_batch: int = 32  # images embedded together
    max_wait_ms: float = 5.0  # how long a batch waits for more requests
    default_k: int = 10
    max_k: int = MAX_K  # k above it is refused (400), as -k of the command line


class BodyLimit:
    """ASGI middleware: 413 for a request body above ``limit`` bytes, declared or streamed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_json(send, 413, self._message())
                return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body larger than the limit of {self.limit} bytes"


async def _send_json(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
