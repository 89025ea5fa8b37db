"""``POST /verify``: are two uploaded images the same person (distance, score, match)?"""

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request

from abdnet.service.api.deps import Service, can_read
from abdnet.service.api.forms import form_of, images_of

__all__ = ["router"]

router = APIRouter()


@router.post("/verify", dependencies=[Depends(can_read)])
async def verify(request: Request, svc: Service) -> dict[str, Any]:
    form = await form_of(request, 2)
    (a,) = await images_of(svc, form, "image_a", many=False)
    (b,) = await images_of(svc, form, "image_b", many=False)
    fa, fb = await svc.embed([a, b])
    # the two vectors compared as the gallery's search compares them, in the model's space
    space = svc.model.space
    dot = float(np.dot(fa.astype(np.float64), fb.astype(np.float64)))
    distance = float(space.distance_from_search(dot, "inner_product"))
    score = float(space.score_from_search(dot, "inner_product"))
    return {"distance": distance, "score": score, "match": svc.match(distance), **svc.thresholds()}
