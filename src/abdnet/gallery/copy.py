"""Moving a gallery: :func:`copy_gallery` copies every row (embeddings bit for bit, ids and
enrolment times kept) and every crop from one gallery to another (Milvus Lite file to server,
server to server, one crop store to another), then verifies the copy.

Resumable: rows are written in batches after their crops; a copy killed half-way and run
again skips the rows already in the destination (ids are content hashes, so nothing is
duplicated) and copies the rest. The destination must hold the same model's embeddings
(:class:`abdnet.gallery.ModelMismatchError` otherwise, before anything is written).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from abdnet.gallery.gallery import Gallery, GalleryError

__all__ = ["CopyReport", "copy_gallery", "verify_copy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyReport:
    copied: int  # rows written now
    skipped: int  # rows already in the destination (an earlier, interrupted copy)
    crops: int  # crops written now
    verified: int  # rows verified in the destination


def copy_gallery(
    src: Gallery,
    dst: Gallery,
    *,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> CopyReport:
    """Copy ``src`` into ``dst`` (opened with ``src.model``), then :func:`verify_copy`."""
    src.model.check_same(dst.model, f"gallery {dst.uri}")
    if src.crops is not None and dst.crops is None:
        raise GalleryError(f"gallery {dst.uri}: no crop store to copy the crops of {src.uri} into")
    copied = skipped = crops = 0
    for rows in src.rows(batch_size=batch_size):
        have = {e.id for e in dst.get([r["id"] for r in rows])}
        todo = [r for r in rows if r["id"] not in have]
        skipped += len(rows) - len(todo)
        if todo and src.crops is not None and dst.crops is not None:
            blobs = []
            for r in todo:
                data = src.crops.read(r["sha256"], r["extension"])
                if data is None:
                    log.warning("gallery %s: entry %s has no stored crop", src.uri, r["id"])
                    continue
                blobs.append((r["sha256"], r["extension"], data))
            crops += len(dst.crops.put_many(blobs))
        if todo:
            dst.add_rows(todo)
            copied += len(todo)
        if progress is not None:
            progress(len(rows))
    verified = verify_copy(src, dst, batch_size=batch_size)
    return CopyReport(copied=copied, skipped=skipped, crops=crops, verified=verified)


def verify_copy(src: Gallery, dst: Gallery, *, batch_size: int = 512) -> int:
    """Check that every row of ``src`` is in ``dst`` with a bit-equal embedding and the same
    fields, and that its crop reads back with the right sha256; returns the rows checked.
    Raises :class:`GalleryError` naming the first difference."""
    n = 0
    where = f"copy {src.uri} -> {dst.uri}"
    for rows in src.rows(batch_size=batch_size):
        theirs = {r["id"]: r for r in dst.get_rows([r["id"] for r in rows])}
        for r in rows:
            other = theirs.get(r["id"])
            if other is None:
                raise GalleryError(f"{where}: entry {r['id']} is missing")
            a = np.asarray(r["embedding"], np.float32)
            b = np.asarray(other["embedding"], np.float32)
            if a.tobytes() != b.tobytes():
                raise GalleryError(f"{where}: entry {r['id']}: embeddings differ")
            for key, value in r.items():
                if key != "embedding" and other.get(key) != value:
                    raise GalleryError(f"{where}: entry {r['id']}: field {key} differs")
            if src.crops is not None and dst.crops is not None:
                if dst.crops.read(r["sha256"], r["extension"]) is None:  # sha256-checked
                    raise GalleryError(f"{where}: entry {r['id']}: crop missing")
            n += 1
    if dst.count() != src.count():
        raise GalleryError(f"{where}: {dst.count()} rows in the copy, {src.count()} in the source")
    return n
