"""``POST /search``: the gallery entries nearest to one uploaded image, nearest first."""

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from abdnet.gallery import FIRST_CAMERA, SearchFilter, name_metadata
from abdnet.service.api.deps import Service, can_read
from abdnet.service.api.forms import form_of, images_of, label_value, query_time
from abdnet.service.errors import ApiError

__all__ = ["router"]

router = APIRouter()


def search_k(svc: Service, k: int | None = Query(None, ge=1)) -> int:
    """Query parameter ``k``: the settings' default when absent, at most their ``max_k``."""
    s = svc.settings
    k = s.default_k if k is None else k
    if k > s.max_k:
        raise ApiError(400, f"query parameter 'k': at most {s.max_k}, got {k}")
    return k


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
    hits = await svc.search(feat, k, filt)
    return {**svc.thresholds(), "camera": camera, "results": [svc.hit_json(h) for h in hits]}
