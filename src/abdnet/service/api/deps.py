"""FastAPI dependencies: the shared ``ServiceState`` and the access checks (API keys).

Declared on a route (``dependencies=[Depends(can_read)]``), an access check runs before the
route reads its parameters or body: a request without the right key is answered 401/403.
"""

from typing import Annotated

from fastapi import Depends, Request

from abdnet.service.state import ServiceState

__all__ = ["Service", "can_read", "can_write", "service"]


def service(request: Request) -> ServiceState:
    """The app's ``ServiceState`` (set by ``create_app``)."""
    return request.app.state.service


Service = Annotated[ServiceState, Depends(service)]


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def can_read(request: Request, svc: Service) -> None:
    """Raise ``AuthError`` unless the client may read (search, browse, crops, metrics)."""
    svc.policy.check_read(_client(request), request.headers.get("authorization"))


def can_write(request: Request, svc: Service) -> None:
    """Raise ``AuthError`` unless the client may write (enrol, delete)."""
    svc.policy.check_write(_client(request), request.headers.get("authorization"))
