"""abdnet.service: the HTTP API and web page over a gallery (FastAPI), dynamic batching.

FastAPI is imported when an app is built (``create_app`` imports ``abdnet.service.api``, the
routers); ``abdnet.service.batcher`` and ``abdnet.service.auth`` need nothing beyond the
standard library.
"""

from abdnet.service.app import create_app
from abdnet.service.auth import AccessPolicy, AuthError, load_api_keys
from abdnet.service.batcher import BatcherClosed, DynamicBatcher
from abdnet.service.errors import ApiError
from abdnet.service.limits import ServiceSettings
from abdnet.service.metrics import ServiceMetrics

__all__ = [
    "ApiError",
    "ServiceSettings",
    "create_app",
    "AccessPolicy",
    "AuthError",
    "load_api_keys",
    "BatcherClosed",
    "DynamicBatcher",
    "ServiceMetrics",
]
