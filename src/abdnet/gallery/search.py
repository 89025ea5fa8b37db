"""How a batch of filtered queries becomes few Milvus searches.

Queries with the same filter are searched in one Milvus call (each Milvus Lite call scans
the collection once, whatever the number of queries). Queries whose filters differ only in
the camera they leave out (``SearchFilter.exclude_camera``, as re-identification across
cameras asks) share one call too: it returns the ``2k + 16`` nearest entries, each query's
own camera is dropped from them, and a query left with fewer than ``k`` (its camera crowded
the list) is searched again with its camera in the filter. The results are those of
filtering in Milvus.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from abdnet.gallery.collection import MAX_RESULTS
from abdnet.gallery.records import Hit, SearchFilter

__all__ = ["SearchCall", "search_filtered"]

# One Milvus search: (queries (Q, D), limit, filter expression) -> hits per query, nearest first.
SearchCall = Callable[[np.ndarray, int, str], list[list[Hit]]]


def search_filtered(
    q: np.ndarray, k: int, filters: Sequence[SearchFilter], search: SearchCall
) -> list[list[Hit]]:
    """The ``k`` nearest hits of each query ``q[i]`` under ``filters[i]``, through ``search``."""
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(filters):
        shared = dataclasses.replace(f, exclude_camera=None).expression()
        groups.setdefault(shared, []).append(i)
    out: list[list[Hit]] = [[] for _ in range(len(q))]
    for expr, rows in groups.items():
        if len({filters[i].exclude_camera for i in rows}) == 1:  # one filter: in Milvus
            for i, hits in zip(rows, search(q[rows], k, filters[rows[0]].expression())):
                out[i] = hits
            continue
        limit = min(MAX_RESULTS, 2 * k + 16)
        for i, hits in zip(rows, search(q[rows], limit, expr)):
            cam = filters[i].exclude_camera
            kept = [h for h in hits if cam is None or h.entry.camera != cam]
            if len(kept) < k and len(hits) == limit:
                (kept,) = search(q[i : i + 1], k, filters[i].expression())
            out[i] = kept[:k]
    return out
