"""Where and when a person was seen: search hits grouped by identity, with every sighting of
each identity per camera as time spans.

A gallery entry's label names the identity it belongs to (``abdnet track --gallery`` labels
each crop ``RUN/ID``). :func:`group_sightings` groups the hits of one query by label (an
unlabelled hit stays alone), nearest identity first, and gives each identity its cameras and,
per camera, its spans: the first and last capture time (and frame) and the number of
sightings, from *all* the identity's entries the search filter lets through, not only the
hits. A camera's sightings form one span unless ``gap`` (seconds) splits them where two
consecutive capture times lie further apart. Sightings without a capture time (footage
without a start time: frame numbers only) form one span of frames per camera.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from abdnet.gallery.records import GalleryEntry, Hit, format_time

__all__ = ["CameraSightings", "Sightings", "Span", "camera_spans", "group_sightings"]


@dataclass(frozen=True)
class Span:
    """Consecutive sightings in one camera."""

    first: datetime | None  # capture time of the first sighting; None: frames only
    last: datetime | None
    first_frame: int | None  # None when a sighting of the span has no frame
    last_frame: int | None
    sightings: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": format_time(self.first),
            "last": format_time(self.last),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "sightings": self.sightings,
        }


@dataclass(frozen=True)
class CameraSightings:
    camera: int | None  # from 1; None: entries of no known camera
    spans: list[Span]  # in time order; the span of untimed sightings last
    sightings: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "sightings": self.sightings,
            "spans": [s.to_dict() for s in self.spans],
        }


@dataclass(frozen=True)
class Sightings:
    """One identity among a query's hits."""

    label: str | None  # None: an unlabelled entry, an identity of its own
    hits: list[Hit]  # its hits among the query's, nearest first
    cameras: list[CameraSightings]  # by camera number (unknown camera last)
    sightings: int  # its entries under the search filter
    complete: bool  # False: it has more entries than one read returns (spans cover some)

    @property
    def distance(self) -> float:
        return self.hits[0].distance

    @property
    def score(self) -> float:
        return self.hits[0].score


def _span(entries: list[GalleryEntry], timed: bool) -> Span:
    frames = [e.frame for e in entries]
    known = all(f is not None for f in frames)
    return Span(
        first=entries[0].timestamp if timed else None,
        last=entries[-1].timestamp if timed else None,
        first_frame=min(frames) if known else None,  # type: ignore[type-var]
        last_frame=max(frames) if known else None,  # type: ignore[type-var]
        sightings=len(entries),
    )


def camera_spans(entries: Sequence[GalleryEntry], *, gap: float | None = None) -> list[Span]:
    """The spans of one camera's ``entries``: the timed ones in time order, split where two
    consecutive times are more than ``gap`` seconds apart (None: never), then one span of
    the untimed ones (frames only), if any."""
    if gap is not None and gap <= 0:
        raise ValueError(f"gap must be > 0 seconds, got {gap}")
    timed = sorted(
        (e for e in entries if e.timestamp is not None),
        key=lambda e: (e.timestamp, -1 if e.frame is None else e.frame),
    )
    untimed = sorted(
        (e for e in entries if e.timestamp is None),
        key=lambda e: -1 if e.frame is None else e.frame,
    )
    spans: list[Span] = []
    run: list[GalleryEntry] = []
    for e in timed:
        if run and gap is not None:
            assert e.timestamp is not None and run[-1].timestamp is not None
            if (e.timestamp - run[-1].timestamp).total_seconds() > gap:
                spans.append(_span(run, True))
                run = []
        run.append(e)
    if run:
        spans.append(_span(run, True))
    if untimed:
        spans.append(_span(untimed, False))
    return spans


def group_sightings(
    hits: Sequence[Hit],
    entries: Sequence[GalleryEntry],
    *,
    gap: float | None = None,
    complete: bool = True,
) -> list[Sightings]:
    """Group ``hits`` (one query's, nearest first) by label, nearest identity first; each
    identity's cameras and spans come from ``entries`` (every entry carrying one of the
    hits' labels, as far as read: ``complete``), an unlabelled hit's from itself alone."""
    by_label: dict[str, list[Hit]] = {}
    groups: list[tuple[str | None, list[Hit], list[GalleryEntry]]] = []
    for h in hits:
        label = h.entry.label
        if label is None:
            groups.append((None, [h], [h.entry]))
            continue
        if label not in by_label:
            by_label[label] = []
            groups.append((label, by_label[label], []))
        by_label[label].append(h)
    of_label: dict[str, dict[str, GalleryEntry]] = {}
    for e in entries:
        if e.label is not None and e.label in by_label:
            of_label.setdefault(e.label, {})[e.id] = e
    out = []
    for label, group_hits, own in groups:
        if label is None:
            found, whole = own, True
        else:
            seen = of_label.get(label, {})
            for h in group_hits:  # a hit is a sighting even when the read missed it
                seen.setdefault(h.entry.id, h.entry)
            found, whole = list(seen.values()), complete
        per_camera: dict[int | None, list[GalleryEntry]] = {}
        for e in found:
            per_camera.setdefault(e.camera, []).append(e)
        cams = sorted(per_camera, key=lambda c: (c is None, c or 0))
        out.append(
            Sightings(
                label=label,
                hits=list(group_hits),
                cameras=[
                    CameraSightings(c, camera_spans(per_camera[c], gap=gap), len(per_camera[c]))
                    for c in cams
                ],
                sightings=len(found),
                complete=whole,
            )
        )
    out.sort(key=lambda s: s.distance)  # stable: ties keep the hits' order
    return out
