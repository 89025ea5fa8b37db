"""The one error type of the HTTP API: a status, a one-line message and optional headers.

Every error leaves the service as ``{"error": "..."}`` (``abdnet.service.api.handlers``).
"""

__all__ = ["ApiError"]


class ApiError(Exception):
    """A request the API refuses: ``status`` (4xx/5xx), the message, optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers
