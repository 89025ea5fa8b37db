"""The gallery as a resource: enrol (``POST``), browse, one entry, its crop, delete."""

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from abdnet.gallery import (
    FIRST_CAMERA,
    MAX_RESULTS,
    MIME_TYPES,
    Enrolment,
    GalleryEntry,
    name_metadata,
)
from abdnet.service.api.deps import Service, can_read, can_write
from abdnet.service.api.forms import form_of, images_of, int_field, label_value, time_field
from abdnet.service.errors import ApiError
from abdnet.service.state import ServiceState

__all__ = ["router"]

router = APIRouter()


async def _entry_or_404(svc: ServiceState, entry_id: str) -> GalleryEntry:
    entries = await asyncio.to_thread(svc.gallery.get, [entry_id])
    if not entries:
        raise ApiError(404, f"no gallery entry {entry_id!r}")
    return entries[0]


@router.post("/gallery", status_code=201, dependencies=[Depends(can_write)])
async def enrol(request: Request, response: Response, svc: Service) -> dict[str, Any]:
    """Multipart ``image`` (one or more), ``camera`` (from 1), ``timestamp``, ``label`` ->
    ``{"ids", "created", "entries"}``: 201 Created when a crop was added, 200 when every crop
    was already enrolled (then nothing changed and ``entries`` are the existing ones)."""
    form = await form_of(request, svc.settings.max_files)
    camera = int_field(form, "camera", minimum=FIRST_CAMERA)
    when = time_field(form, "timestamp")
    raw_label = form.get("label")
    label = label_value(raw_label if isinstance(raw_label, str) else None, "label")
    crops = await images_of(svc, form, "image", many=True)
    enrolments = []
    for c in crops:
        named = name_metadata(c.name)
        enrolments.append(
            Enrolment(
                crop=c,
                camera=camera if camera is not None else named.camera,
                timestamp=when,
                frame=named.frame,
                label=label,
            )
        )
    feats = await svc.embed(crops)
    added = await asyncio.to_thread(svc.gallery.add, enrolments, np.stack(feats))
    ids = [a.id for a in added]
    found = {e.id: e for e in await asyncio.to_thread(svc.gallery.get, sorted(set(ids)))}
    if not any(a.created for a in added):
        response.status_code = 200  # nothing created
    return {
        "ids": ids,
        "created": [a.created for a in added],
        "entries": [ServiceState.entry_json(found[i]) for i in ids if i in found],
    }


@router.get("/gallery", dependencies=[Depends(can_read)])
async def browse(
    svc: Service,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=0, le=1000),
    camera: int | None = Query(None, ge=FIRST_CAMERA),
    label: str | None = None,
) -> dict[str, Any]:
    if offset + limit > MAX_RESULTS:
        raise ApiError(400, f"offset + limit must be <= {MAX_RESULTS}")
    page = await asyncio.to_thread(
        lambda: svc.gallery.page(
            offset=offset, limit=limit, camera=camera, label=label_value(label, "label")
        )
    )
    items = [ServiceState.entry_json(e) for e in page.items]
    return {"total": page.total, "offset": offset, "limit": limit, "items": items}


@router.get("/gallery/{entry_id}", dependencies=[Depends(can_read)])
async def entry(svc: Service, entry_id: str) -> dict[str, Any]:
    return ServiceState.entry_json(await _entry_or_404(svc, entry_id))


@router.get("/gallery/{entry_id}/image", dependencies=[Depends(can_read)])
async def entry_image(svc: Service, entry_id: str) -> Response:
    e = await _entry_or_404(svc, entry_id)
    data = await asyncio.to_thread(svc.gallery.crop_bytes, e)  # sha256-checked
    if data is None:  # no crop store, or deleted meanwhile
        raise ApiError(404, f"gallery entry {entry_id!r} has no stored crop")
    return Response(
        data,
        media_type=MIME_TYPES.get(e.extension, "application/octet-stream"),
        headers={"Cache-Control": "private, no-cache", "ETag": f'"{e.sha256}"'},
    )


@router.delete("/gallery/{entry_id}", status_code=204, dependencies=[Depends(can_write)])
async def delete(svc: Service, entry_id: str) -> Response:
    """Delete the entry and its stored crop."""
    removed = await asyncio.to_thread(svc.gallery.delete, [entry_id])
    if not removed:
        raise ApiError(404, f"no gallery entry {entry_id!r}")
    return Response(status_code=204)
