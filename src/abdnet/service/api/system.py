"""``GET /healthz`` (open to all), ``GET /info`` and ``GET /metrics`` (Prometheus)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Response

from abdnet.service.api.deps import Service, can_read

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz")
async def healthz(svc: Service) -> dict[str, Any]:
    size = await asyncio.to_thread(svc.gallery.size)
    return {"status": "ok", "gallery_size": size, "model": svc.model.short}


@router.get("/info", dependencies=[Depends(can_read)])
async def info(svc: Service) -> dict[str, Any]:
    size = await asyncio.to_thread(svc.gallery.size)
    s = svc.settings
    return {
        "gallery_size": size,
        "model": svc.model.to_dict(),
        **svc.thresholds(),
        "tar": None if svc.threshold is None else svc.threshold.tar,
        "writes": svc.policy.writes,
        "max_k": s.max_k,
        "default_k": s.default_k,
        "max_upload_bytes": s.max_upload_bytes,
    }


@router.get("/metrics", dependencies=[Depends(can_read)])
async def metrics(svc: Service) -> Response:
    body = await asyncio.to_thread(svc.metrics.render)
    return Response(body, media_type=svc.metrics.content_type)
