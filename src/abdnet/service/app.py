"""The app factory: the HTTP API and the web page over a gallery (FastAPI; run by uvicorn).

Routes (JSON in and out; every error is ``{"error": "..."}`` with a 4xx/5xx status):

- ``POST /gallery`` (write): multipart ``image`` (one or more files), ``camera``,
  ``timestamp`` (ISO 8601), ``label`` -> ``201 {"ids": [...], "created": [...]}``
- ``GET /gallery?offset=&limit=&camera=&label=`` -> ``{"total", "offset", "limit", "items"}``
- ``GET /gallery/{id}`` -> the entry; ``GET /gallery/{id}/image`` -> the crop
- ``DELETE /gallery/{id}`` (write) -> 204, the crop is deleted too
- ``POST /search?k=&camera=&exclude_same_camera=&after=&before=&label=`` (multipart
  ``image``) -> ``{"threshold", "far", "camera", "results": [...]}``, nearest first
- ``POST /search/sightings?k=&camera=&exclude_same_camera=&after=&before=&label=&gap=``
  (multipart ``image``) -> ``{"threshold", "far", "camera", "identities": [...]}``: the hits
  grouped by label, each with its cameras and time spans (where and when it was seen)
- ``POST /verify`` (multipart ``image_a``, ``image_b``) -> ``{"distance", "score", "match"}``
- ``GET /healthz``, ``GET /info``, ``GET /metrics`` (Prometheus), ``GET /`` (the page)

The routers are in ``abdnet.service.api`` (one module per resource), what they share in
``abdnet.service.state``. FastAPI and Starlette are imported inside ``create_app`` (the
optional ``serve`` extra).
"""

from contextlib import asynccontextmanager
from typing import Any

from abdnet.engine import Embedder
from abdnet.gallery import Gallery, ModelInfo, Threshold
from abdnet.service.auth import AccessPolicy
from abdnet.service.limits import BodyLimit, ServiceSettings
from abdnet.service.state import ServiceState

__all__ = ["create_app"]


def create_app(
    *,
    extractor: Embedder,
    gallery: Gallery,
    model: ModelInfo,
    policy: AccessPolicy,
    threshold: Threshold | None = None,
    settings: ServiceSettings | None = None,
) -> Any:
    """The FastAPI app serving ``gallery`` with embeddings from ``extractor`` (the
    :class:`~abdnet.engine.Embedder` of ``model``: a FeatureExtractor). ``model`` must be
    the gallery's (and the threshold's) model, and its space the extractor's."""
    # heavy, optional: the `serve` extra
    from fastapi import FastAPI
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.staticfiles import StaticFiles

    from abdnet.service.api import gallery as gallery_routes
    from abdnet.service.api import page, search, system, verify
    from abdnet.service.api.handlers import add_error_handlers
    from abdnet.service.api.middleware import observe

    settings = settings or ServiceSettings()
    model.space.check_same(extractor.space, "the extractor")
    gallery.model.check_same(model, f"gallery {gallery.uri}")
    if threshold is not None:
        threshold.model.check_same(model, "the threshold file")
    svc = ServiceState(extractor, gallery, model, policy, threshold, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.start()
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(
        title="abdnet re-identification service",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # the interactive docs load scripts from a CDN; the page works offline
        redoc_url=None,
    )
    app.state.service = svc
    add_error_handlers(app)
    app.add_middleware(BaseHTTPMiddleware, dispatch=observe)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)  # outermost
    for module in (system, gallery_routes, search, verify, page):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(page.STATIC)), name="static")
    return app
