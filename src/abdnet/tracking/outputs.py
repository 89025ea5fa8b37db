"""What ``abdnet track`` writes: ``NAME.txt`` per camera (MOTChallenge results, one id per
person in every camera), ``identities.json`` and a contact sheet PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from abdnet.files import atomic_write
from abdnet.tracking.mot import write_mot
from abdnet.tracking.pipeline import CameraTracks, Identities, result_rows

__all__ = [
    "IDENTITIES_FILE",
    "CONTACT_SHEET",
    "write_results",
    "identities_document",
    "contact_sheet",
]

IDENTITIES_FILE = "identities.json"
CONTACT_SHEET = "contact_sheet.png"
FORMAT = "abdnet-identities"


def _when(cam: CameraTracks, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": round(float(seconds), 3)}
    if cam.camera.start is not None:
        out["time"] = (cam.camera.start + timedelta(seconds=float(seconds))).isoformat()
    return out


def identities_document(
    cameras: Sequence[CameraTracks],
    identities: Identities,
    *,
    model: str = "",
    gallery: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``identities.json``: per identity its cameras and the number of its
    crops embedded (0: nothing to search it by, so ``--gallery`` holds none of it), and per
    camera the first / last frame and time and the tracklets (tracker id, frames); with ``gallery``,
    what ``--gallery`` enrolled (its URI, label prefix, camera numbers, counts)."""
    people: dict[int, dict[str, Any]] = {}
    for cam in cameras:
        for t in cam.tracklets:
            pid = identities.labels.get(t.key)
            if pid is None:
                continue
            person = people.setdefault(pid, {"id": pid, "crops_embedded": 0, "cameras": {}})
            c = person["cameras"].setdefault(
                cam.camera.name,
                {"first_frame": int(t.frames[0]), "last_frame": int(t.frames[-1]), "tracklets": []},
            )
            embedded = len(t.crops) if t.embedding is not None else 0
            person["crops_embedded"] += embedded
            c["first_frame"] = min(c["first_frame"], int(t.frames[0]))
            c["last_frame"] = max(c["last_frame"], int(t.frames[-1]))
            c["tracklets"].append(
                {
                    "track": t.track,
                    "first_frame": int(t.frames[0]),
                    "last_frame": int(t.frames[-1]),
                    "boxes": len(t),
                    "crops_embedded": embedded,
                }
            )
    for cam in cameras:
        rate = cam.frame_rate
        for person in people.values():
            c = person["cameras"].get(cam.camera.name)
            if c is None:
                continue
            c["first"] = _when(cam, (c["first_frame"] - 1) / rate)
            c["last"] = _when(cam, (c["last_frame"] - 1) / rate)
            c["tracklets"].sort(key=lambda x: x["first_frame"])
    return {
        "format": FORMAT,
        "version": 1,
        "model": model,
        "link_threshold": identities.threshold,
        "stitch_thresholds": identities.stitch_thresholds,
        "cameras": {
            cam.camera.name: {
                "source": str(cam.camera.path),
                "frames": cam.frames,
                "frame_rate": cam.frame_rate,
                "detections": cam.detections,
                "boxes_clipped": cam.clipped.clipped,
                "boxes_dropped": cam.clipped.dropped,
                "detections_past_end": cam.past_end,
                "tracklets": len(cam.tracklets),
                **({"detector": cam.detector} if cam.detector else {}),
                **({"start": cam.camera.start.isoformat()} if cam.camera.start else {}),
            }
            for cam in cameras
        },
        "identities": [people[p] for p in sorted(people)],
        **({"gallery": gallery} if gallery is not None else {}),
    }


def contact_sheet(
    cameras: Sequence[CameraTracks],
    identities: Identities,
    path: str | Path,
    *,
    per_camera: int = 3,
    cell: tuple[int, int] = (48, 96),
    max_rows: int = 200,
) -> Path:
    """A PNG with one row per identity and one column block per camera, each holding up to
    ``per_camera`` of the identity's chosen crops in that camera."""
    names = [c.camera.name for c in cameras]
    crops: dict[int, dict[str, list[np.ndarray]]] = {}
    for cam in cameras:
        for t in cam.tracklets:
            pid = identities.labels.get(t.key)
            if pid is None:
                continue
            row = crops.setdefault(pid, {}).setdefault(cam.camera.name, [])
            row.extend(c.image for c in t.crops if c.image is not None and c.image.size)
    cw, ch = cell
    label_w, head_h, pad = 44, 16, 4
    pids = sorted(crops)[:max_rows]
    block = per_camera * (cw + pad) + pad
    sheet = Image.new(
        "RGB",
        (label_w + block * max(len(names), 1), head_h + (ch + pad) * max(len(pids), 1)),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(names):
        draw.text((label_w + j * block + pad, 2), name, fill="black")
        draw.line([(label_w + j * block, 0), (label_w + j * block, sheet.height)], fill="grey")
    for i, pid in enumerate(pids):
        y = head_h + i * (ch + pad)
        draw.text((4, y + ch // 2 - 6), f"#{pid}", fill="black")
        for j, name in enumerate(names):
            images = crops[pid].get(name, [])
            step = max(1, len(images) // per_camera)
            for k, img in enumerate(images[::step][:per_camera]):
                tile = Image.fromarray(img).resize((cw, ch), Image.BILINEAR)
                sheet.paste(tile, (label_w + j * block + pad + k * (cw + pad), y))
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write(path, buf.getvalue())


def write_results(
    folder: str | Path,
    cameras: Sequence[CameraTracks],
    identities: Identities,
    *,
    model: str = "",
    gallery: dict[str, Any] | None = None,
) -> list[Path]:
    """Write every output into ``folder`` (the caller makes it atomic); ``gallery`` is
    recorded in ``identities.json``."""
    folder = Path(folder)
    paths = []
    for cam in cameras:
        paths.append(write_mot(folder / f"{cam.camera.name}.txt", result_rows(cam, identities)))
    doc = identities_document(cameras, identities, model=model, gallery=gallery)
    paths.append(atomic_write(folder / IDENTITIES_FILE, json.dumps(doc, indent=1) + "\n"))
    paths.append(contact_sheet(cameras, identities, folder / CONTACT_SHEET))
    return paths
