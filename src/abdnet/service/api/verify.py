"""``POST /verify``: are two uploaded images the same person (distance, score, match)?"""

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request

from abdnet.gallery import distance_from_score
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
    score = float(np.clip(np.dot(fa.astype(np.float64), fb.astype(np.float64)), -1, 1))
    distance = float(distance_from_score(score))
    return {"distance": distance, "score": score, "match": svc.match(distance), **svc.thresholds()}
