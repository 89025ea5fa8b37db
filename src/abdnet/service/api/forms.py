"""Multipart forms and query values: parsed and checked, or refused with an ``ApiError``."""

import asyncio
from datetime import datetime

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from abdnet.gallery import (
    LABEL_MAX,
    CropImage,
    ImageTooLarge,
    ImageTooSmall,
    UnsupportedImageType,
    decode_crop,
    parse_time,
)
from abdnet.retrieval import ImageReadError
from abdnet.service.errors import ApiError
from abdnet.service.state import ServiceState

__all__ = ["form_of", "images_of", "int_field", "label_value", "query_time", "time_field"]

# Content types a browser or HTTP client may declare for an image part; the bytes are
# checked anyway. curl sends application/octet-stream for unknown file extensions.
_IMAGE_PART_TYPES = ("image/", "application/octet-stream")


async def form_of(request: Request, max_files: int) -> FormData:
    """The request's multipart form, with at most ``max_files`` files (415/400 otherwise)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, f"expected multipart/form-data, got {ctype or 'no content type'}")
    try:
        return await request.form(max_files=max_files, max_fields=32)
    except ApiError:
        raise
    except Exception as exc:  # malformed multipart: starlette raises its own types
        raise ApiError(400, f"malformed multipart body: {exc}") from None


async def images_of(
    svc: ServiceState, form: FormData, field: str, *, many: bool
) -> list[CropImage]:
    """The decoded images of form field ``field``, counted in the service's image metrics."""
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
                decode_crop,
                data,
                name,
                max_pixels=svc.settings.max_image_pixels,
                min_side=svc.settings.min_crop_side,
            )
        except UnsupportedImageType as exc:
            svc.metrics.images.labels("unsupported").inc()
            raise ApiError(415, str(exc)) from None
        except ImageTooLarge as exc:
            svc.metrics.images.labels("too_large").inc()
            raise ApiError(413, str(exc)) from None
        except ImageTooSmall as exc:
            svc.metrics.images.labels("too_small").inc()
            raise ApiError(422, str(exc)) from None
        except ImageReadError as exc:
            svc.metrics.images.labels("unreadable").inc()
            raise ApiError(400, str(exc)) from None
        svc.metrics.images.labels("ok").inc()
        crops.append(crop)
    return crops


def int_field(form: FormData, name: str, *, minimum: int = 0) -> int | None:
    """Form field ``name`` as an integer >= ``minimum``; ``None`` when absent or blank."""
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    if not isinstance(raw, str) or not raw.strip().isdigit() or int(raw) < minimum:
        raise ApiError(400, f"form field {name!r}: expected an integer >= {minimum}, got {raw!r}")
    return int(raw)


def time_field(form: FormData, name: str) -> datetime | None:
    """Form field ``name`` as an ISO 8601 time; ``None`` when absent or blank."""
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    if not isinstance(raw, str):
        raise ApiError(400, f"form field {name!r}: expected text")
    try:
        return parse_time(raw, f"form field {name!r}")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def label_value(value: str | None, where: str) -> str | None:
    """A label of at most ``LABEL_MAX`` bytes; ``None`` when absent or empty."""
    if value is None or value == "":
        return None
    if len(value.encode()) > LABEL_MAX:
        raise ApiError(400, f"{where}: longer than {LABEL_MAX} bytes")
    return value


def query_time(value: str | None, name: str) -> datetime | None:
    """Query parameter ``name`` as an ISO 8601 time; ``None`` when absent or empty."""
    if value is None or value == "":
        return None
    try:
        return parse_time(value, f"query parameter {name!r}")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
