"""The HTTP API and the web page over a gallery (FastAPI; run by uvicorn, see ``serve``).

Routes (JSON in and out; every error is ``{"error": "..."}`` with a 4xx/5xx status):

- ``POST /gallery`` (write): multipart ``image`` (one or more files), ``camera``,
  ``timestamp`` (ISO 8601), ``label`` -> ``201 {"ids": [...], "created": [...]}``
- ``GET /gallery?offset=&limit=&camera=&label=`` -> ``{"total", "offset", "limit", "items"}``
- ``GET /gallery/{id}`` -> the entry; ``GET /gallery/{id}/image`` -> the crop
- ``DELETE /gallery/{id}`` (write) -> 204, the crop is deleted too
- ``POST /search?k=&camera=&exclude_same_camera=&after=&before=&label=`` (multipart
  ``image``) -> ``{"threshold", "far", "camera", "results": [...]}``, nearest first
- ``POST /verify`` (multipart ``image_a``, ``image_b``) -> ``{"distance", "score", "match"}``
- ``GET /healthz``, ``GET /info``, ``GET /metrics`` (Prometheus), ``GET /`` (the page)

Images of concurrent requests are embedded together (``DynamicBatcher``), and the gallery
searches of concurrent queries go to Milvus together.

FastAPI and Starlette are imported inside ``create_app`` (the optional ``serve`` extra).
Annotations here are evaluated when the route functions are defined, so that FastAPI sees
the classes imported there.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from abdnet.gallery import (
    DEFAULT_MAX_PIXELS,
    LABEL_MAX,
    MAX_RESULTS,
    MIME_TYPES,
    CropImage,
    Enrolment,
    Gallery,
    GalleryError,
    Hit,
    ImageTooLarge,
    ModelInfo,
    SearchFilter,
    Threshold,
    UnsupportedImageType,
    decode_crop,
    distance_from_score,
    name_metadata,
    parse_time,
)
from abdnet.retrieval import ImageReadError
from abdnet.service.auth import AccessPolicy, AuthError
from abdnet.service.batcher import DynamicBatcher
from abdnet.service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from starlette.datastructures import FormData

__all__ = ["ApiError", "ServiceSettings", "create_app"]

log = logging.getLogger(__name__)

# Content types a browser or HTTP client may declare for an image part; the bytes are
# checked anyway. curl sends application/octet-stream for unknown file extensions.
_IMAGE_PART_TYPES = ("image/", "application/octet-stream")
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


@dataclass(frozen=True)
class ServiceSettings:
    max_upload_bytes: int = 16 * 2**20  # whole request body (413 beyond)
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # per image (413 beyond)
    max_files: int = 64  # images per enrolment request
    max_batch: int = 32  # images embedded together
    max_wait_ms: float = 5.0  # how long a batch waits for more requests
    default_k: int = 10
    max_k: int = 1000
    fps: float = 25.0  # frame rate for times parsed from Market/Duke-style upload names


class _BodyLimit:
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


class _Service:
    """What the routes share: the model, the gallery, the batchers, the policy."""

    def __init__(
        self,
        extractor: Any,
        gallery: Gallery,
        model: ModelInfo,
        policy: AccessPolicy,
        threshold: Threshold | None,
        settings: ServiceSettings,
    ) -> None:
        self.extractor = extractor
        self.gallery = gallery
        self.model = model
        self.policy = policy
        self.threshold = threshold
        self.settings = settings
        self.metrics = ServiceMetrics(gallery_size=lambda: float(gallery.size()))
        self.embedder: DynamicBatcher | None = None
        self.searcher: DynamicBatcher | None = None

    def start(self) -> None:
        s = self.settings
        self.embedder = DynamicBatcher(
            self._embed_batch,
            max_batch=s.max_batch,
            max_wait_ms=s.max_wait_ms,
            name="abdnet-embed",
            on_batch=self.metrics.batch_observer("embed"),
        )
        self.searcher = DynamicBatcher(
            self._search_batch,
            max_batch=s.max_batch,
            # queries arrive in bursts (one per image of an embedding batch): a short wait
            # lets a burst share one Milvus call
            max_wait_ms=2.0,
            name="abdnet-search",
            on_batch=self.metrics.batch_observer("search"),
        )

    def stop(self) -> None:
        for b in (self.embedder, self.searcher):
            if b is not None:
                b.close()

    def _embed_batch(self, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        feats = self.extractor(torch.stack(tensors)).numpy()  # (B, D), L2-normalized
        return list(feats)

    def _search_batch(self, items: list[tuple[np.ndarray, int, SearchFilter]]) -> list[list[Hit]]:
        k = max(item[1] for item in items)
        hits = self.gallery.search(
            np.stack([item[0] for item in items]), k, [item[2] for item in items]
        )
        return [h[: item[1]] for h, item in zip(hits, items)]

    async def embed(self, crops: list[CropImage]) -> list[np.ndarray]:
        assert self.embedder is not None
        transform = self.extractor.transform
        tensors = await asyncio.to_thread(lambda: [transform(c.image) for c in crops])
        return list(await asyncio.gather(*(self.embedder.run(t) for t in tensors)))

    def match(self, distance: float) -> bool | None:
        return None if self.threshold is None else self.threshold.matches(distance)

    def hit_json(self, h: Hit) -> dict[str, Any]:
        e = h.entry.to_dict()
        return {
            "id": e["id"],
            "distance": h.distance,
            "score": h.score,
            "match": self.match(h.distance),
            "camera": e["camera"],
            "timestamp": e["timestamp"],
            "label": e["label"],
            "image": f"/gallery/{e['id']}/image",
        }


def _int_field(form: "FormData", name: str) -> int | None:
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    if not isinstance(raw, str) or not raw.strip().isdigit():
        raise ApiError(400, f"form field {name!r}: expected a non-negative integer, got {raw!r}")
    return int(raw)


def _time_field(form: "FormData", name: str) -> datetime | None:
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    if not isinstance(raw, str):
        raise ApiError(400, f"form field {name!r}: expected text")
    try:
        return parse_time(raw, f"form field {name!r}")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _label(value: str | None, where: str) -> str | None:
    if value is None or value == "":
        return None
    if len(value.encode()) > LABEL_MAX:
        raise ApiError(400, f"{where}: longer than {LABEL_MAX} bytes")
    return value


def _query_time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_time(value, f"query parameter {name!r}")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def create_app(
    *,
    extractor: Any,
    gallery: Gallery,
    model: ModelInfo,
    policy: AccessPolicy,
    threshold: Threshold | None = None,
    settings: ServiceSettings | None = None,
) -> Any:
    """The FastAPI app serving ``gallery`` with embeddings from ``extractor`` (a
    FeatureExtractor that L2-normalizes). ``model`` must be the gallery's (and the
    threshold's) model."""
    # heavy, optional: the `serve` extra
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.datastructures import FormData, UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.staticfiles import StaticFiles

    settings = settings or ServiceSettings()
    gallery.model.check_same(model, f"gallery {gallery.uri}")
    if threshold is not None:
        threshold.model.check_same(model, "the threshold file")
    svc = _Service(extractor, gallery, model, policy, threshold, settings)

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

    # -- errors ---------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = []
        for err in exc.errors():
            where, *name = [str(x) for x in err.get("loc", ())] or ["request"]
            msgs.append(f"{where} parameter {'.'.join(name)!r}: {err.get('msg')}")
        return JSONResponse({"error": "; ".join(msgs) or "invalid request"}, status_code=400)

    @app.exception_handler(GalleryError)
    async def _gallery_error(request: Request, exc: GalleryError) -> JSONResponse:
        log.error("%s", exc)
        return JSONResponse({"error": str(exc)}, status_code=503)

    # -- middleware: metrics and headers ----------------------------------------------------

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable) -> Response:
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
            svc.metrics.observe_request(template, request.method, status, time.perf_counter() - t0)

    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes)

    # -- helpers ----------------------------------------------------------------------------

    def can_read(request: Request) -> None:
        svc.policy.check_read(
            request.client.host if request.client else None, request.headers.get("authorization")
        )

    def can_write(request: Request) -> None:
        svc.policy.check_write(
            request.client.host if request.client else None, request.headers.get("authorization")
        )

    async def form_of(request: Request, max_files: int) -> FormData:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ApiError(415, f"expected multipart/form-data, got {ctype or 'no content type'}")
        try:
            return await request.form(max_files=max_files, max_fields=32)
        except ApiError:
            raise
        except Exception as exc:  # malformed multipart: starlette raises its own types
            raise ApiError(400, f"malformed multipart body: {exc}") from None

    async def images_of(form: FormData, field: str, *, many: bool) -> list[CropImage]:
        values = form.getlist(field)
        if not values:
            raise ApiError(400, f"multipart field {field!r} (an image file) is missing")
        if not many and len(values) > 1:
            raise ApiError(400, f"multipart field {field!r}: one image expected, got {len(values)}")
        crops = []
        for n, up in enumerate(values):
            if not isinstance(up, UploadFile):
                raise ApiError(400, f"multipart field {field!r}: expected a file, got text")
            name = up.filename or f"{field}[{n}]"
            ctype = (up.content_type or "").lower()
            if ctype and not ctype.startswith(_IMAGE_PART_TYPES):
                svc.metrics.images.labels("unsupported").inc()
                raise ApiError(415, f"{name}: content type {ctype} is not an image")
            data = await up.read()
            try:
                crop = await asyncio.to_thread(
                    decode_crop, data, name, max_pixels=settings.max_image_pixels
                )
            except UnsupportedImageType as exc:
                svc.metrics.images.labels("unsupported").inc()
                raise ApiError(415, str(exc)) from None
            except ImageTooLarge as exc:
                svc.metrics.images.labels("too_large").inc()
                raise ApiError(413, str(exc)) from None
            except ImageReadError as exc:
                svc.metrics.images.labels("unreadable").inc()
                raise ApiError(400, str(exc)) from None
            svc.metrics.images.labels("ok").inc()
            crops.append(crop)
        return crops

    async def entry_or_404(entry_id: str):
        entries = await asyncio.to_thread(svc.gallery.get, [entry_id])
        if not entries:
            raise ApiError(404, f"no gallery entry {entry_id!r}")
        return entries[0]

    def thresholds() -> dict[str, float | None]:
        t = svc.threshold
        return {
            "threshold": None if t is None else t.threshold,
            "far": None if t is None else t.far,
        }

    # -- routes -----------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        size = await asyncio.to_thread(svc.gallery.size)
        return {"status": "ok", "gallery_size": size, "model": svc.model.short}

    @app.get("/info")
    async def info(request: Request) -> dict[str, Any]:
        can_read(request)
        size = await asyncio.to_thread(svc.gallery.size)
        return {
            "gallery_size": size,
            "model": svc.model.to_dict(),
            **thresholds(),
            "tar": None if svc.threshold is None else svc.threshold.tar,
            "writes": svc.policy.writes,
            "max_k": settings.max_k,
            "default_k": settings.default_k,
            "max_upload_bytes": settings.max_upload_bytes,
        }

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        can_read(request)
        body = await asyncio.to_thread(svc.metrics.render)
        return Response(body, media_type=svc.metrics.content_type)

    @app.post("/gallery", status_code=201)
    async def enrol(request: Request) -> dict[str, Any]:
        can_write(request)
        form = await form_of(request, settings.max_files)
        camera = _int_field(form, "camera")
        when = _time_field(form, "timestamp")
        label = _label(form.get("label") if isinstance(form.get("label"), str) else None, "label")
        crops = await images_of(form, "image", many=True)
        enrolments = []
        for c in crops:
            cam, t, _ = name_metadata(c.name, settings.fps)
            enrolments.append(
                Enrolment(
                    crop=c,
                    camera=camera if camera is not None else cam,
                    timestamp=when if when is not None else t,
                    label=label,
                )
            )
        feats = await svc.embed(crops)
        added = await asyncio.to_thread(svc.gallery.add, enrolments, np.stack(feats))
        return {"ids": [a.id for a in added], "created": [a.created for a in added]}

    @app.get("/gallery")
    async def browse(
        request: Request,
        offset: int = Query(0, ge=0),
        limit: int = Query(50, ge=0, le=1000),
        camera: int | None = Query(None, ge=0),
        label: str | None = None,
    ) -> dict[str, Any]:
        can_read(request)
        if offset + limit > MAX_RESULTS:
            raise ApiError(400, f"offset + limit must be <= {MAX_RESULTS}")
        page = await asyncio.to_thread(
            lambda: svc.gallery.page(
                offset=offset, limit=limit, camera=camera, label=_label(label, "label")
            )
        )
        items = []
        for e in page.items:
            d = e.to_dict()
            d["image"] = f"/gallery/{e.id}/image"
            items.append(d)
        return {"total": page.total, "offset": offset, "limit": limit, "items": items}

    @app.get("/gallery/{entry_id}")
    async def entry(request: Request, entry_id: str) -> dict[str, Any]:
        can_read(request)
        e = await entry_or_404(entry_id)
        d = e.to_dict()
        d["image"] = f"/gallery/{e.id}/image"
        return d

    @app.get("/gallery/{entry_id}/image")
    async def entry_image(request: Request, entry_id: str) -> Response:
        can_read(request)
        e = await entry_or_404(entry_id)
        path = svc.gallery.crop_path(e)
        if path is None:
            raise ApiError(404, f"gallery entry {entry_id!r} has no stored crop")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:  # deleted meanwhile
            raise ApiError(404, f"gallery entry {entry_id!r} has no stored crop") from None
        return Response(
            data,
            media_type=MIME_TYPES.get(e.extension, "application/octet-stream"),
            headers={"Cache-Control": "private, no-cache", "ETag": f'"{e.sha256}"'},
        )

    @app.delete("/gallery/{entry_id}", status_code=204)
    async def delete(request: Request, entry_id: str) -> Response:
        can_write(request)
        removed = await asyncio.to_thread(svc.gallery.delete, [entry_id])
        if not removed:
            raise ApiError(404, f"no gallery entry {entry_id!r}")
        return Response(status_code=204)

    @app.post("/search")
    async def search(
        request: Request,
        k: int | None = Query(None, ge=1),
        camera: int | None = Query(None, ge=0),
        exclude_same_camera: bool = True,
        after: str | None = None,
        before: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        can_read(request)
        k = settings.default_k if k is None else k
        if k > settings.max_k:
            raise ApiError(400, f"query parameter 'k': at most {settings.max_k}, got {k}")
        t_after, t_before = _query_time(after, "after"), _query_time(before, "before")
        if t_after is not None and t_before is not None and t_after > t_before:
            raise ApiError(400, "query parameters 'after' and 'before': after is later than before")
        form = await form_of(request, 1)
        (crop,) = await images_of(form, "image", many=False)
        if camera is None:
            camera = name_metadata(crop.name, settings.fps)[0]
        filt = SearchFilter(
            exclude_camera=camera if exclude_same_camera else None,
            after=t_after,
            before=t_before,
            label=_label(label, "query parameter 'label'"),
        )
        (feat,) = await svc.embed([crop])
        assert svc.searcher is not None
        hits = await svc.searcher.run((feat, k, filt))
        return {
            **thresholds(),
            "camera": camera,
            "results": [svc.hit_json(h) for h in hits],
        }

    @app.post("/verify")
    async def verify(request: Request) -> dict[str, Any]:
        can_read(request)
        form = await form_of(request, 2)
        (a,) = await images_of(form, "image_a", many=False)
        (b,) = await images_of(form, "image_b", many=False)
        fa, fb = await svc.embed([a, b])
        score = float(np.clip(np.dot(fa.astype(np.float64), fb.astype(np.float64)), -1, 1))
        distance = float(distance_from_score(score))
        return {"distance": distance, "score": score, "match": svc.match(distance), **thresholds()}

    # -- the page -----------------------------------------------------------------------------

    static = resources.files("abdnet.service") / "static"

    @app.get("/", include_in_schema=False)
    async def index_page() -> Response:
        html = (static / "index.html").read_bytes()
        return Response(
            html,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
