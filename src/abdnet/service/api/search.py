"""``POST /search``: the gallery entries nearest to one uploaded image, nearest first;
``POST /search/sightings``: the identities among them, with where and when each was seen."""

import asyncio
from typing import Any, NamedTuple

from fastapi import APIRouter, Depends, Query, Request

from abdnet.gallery import FIRST_CAMERA, Hit, SearchFilter, name_metadata
from abdnet.service.api.deps import Service, can_read
from abdnet.service.api.forms import form_of, images_of, label_value, query_time
from abdnet.service.errors import ApiError
from abdnet.service.state import ServiceState

__all__ = ["router"]

router = APIRouter()


def search_k(svc: Service, k: int | None = Query(None, ge=1)) -> int:
    """Query parameter ``k``: the settings' default when absent, at most their ``max_k``."""
    s = svc.settings
    k = s.default_k if k is None else k
    if k > s.max_k:
        raise ApiError(400, f"query parameter 'k': at most {s.max_k}, got {k}")
    return k


class _Searched(NamedTuple):
    camera: int | None  # the query's camera (given, or from its Market-style name)
    filter: SearchFilter
    hits: list[Hit]  # nearest first


async def _query(
    request: Request,
    svc: ServiceState,
    k: int,
    camera: int | None,
    exclude_same_camera: bool,
    after: str | None,
    before: str | None,
    label: str | None,
) -> _Searched:
    """The query camera, the filter and the ``k`` nearest hits of the uploaded ``image``."""
    t_after, t_before = query_time(after, "after"), query_time(before, "before")
    if t_after is not None and t_before is not None and t_after > t_before:
        raise ApiError(400, "query parameters 'after' and 'before': after is later than before")
    form = await form_of(request, 1)
    (crop,) = await images_of(svc, form, "image", many=False)
    if camera is None:
        camera = name_metadata(crop.name).camera
    filt = SearchFilter(
        exclude_camera=camera if exclude_same_camera else None,
        after=t_after,
        before=t_before,
        label=label_value(label, "query parameter 'label'"),
    )
    (feat,) = await svc.embed([crop])
    return _Searched(camera, filt, await svc.search(feat, k, filt))


@router.post("/search", dependencies=[Depends(can_read)])
async def search(
    request: Request,
    svc: Service,
    k: int = Depends(search_k),
    camera: int | None = Query(None, ge=FIRST_CAMERA),
    exclude_same_camera: bool = True,
    after: str | None = None,
    before: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    q = await _query(request, svc, k, camera, exclude_same_camera, after, before, label)
    return {**svc.thresholds(), "camera": q.camera, "results": [svc.hit_json(h) for h in q.hits]}


@router.post("/search/sightings", dependencies=[Depends(can_read)])
async def sightings(
    request: Request,
    svc: Service,
    k: int = Depends(search_k),
    camera: int | None = Query(None, ge=FIRST_CAMERA),
    exclude_same_camera: bool = False,
    after: str | None = None,
    before: str | None = None,
    label: str | None = None,
    gap: float | None = Query(None, gt=0),
) -> dict[str, Any]:
    """Where and when was this person seen: the ``k`` nearest entries grouped by identity
    (label), nearest first, each with its cameras and per camera its time spans over all its
    entries the filter lets through (``gap`` seconds: split a camera's sightings where they
    lie further apart). Unlike ``/search``, the query's camera is kept by default."""
    q = await _query(request, svc, k, camera, exclude_same_camera, after, before, label)
    groups = await asyncio.to_thread(svc.gallery.sightings, q.hits, filter=q.filter, gap=gap)
    return {
        **svc.thresholds(),
        "camera": q.camera,
        "identities": [svc.sightings_json(g) for g in groups],
    }
