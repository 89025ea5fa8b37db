"""Prometheus metrics of one app (its own registry, so two apps in a process do not mix).

prometheus_client is imported when the metrics are created (the optional ``serve`` extra).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ServiceMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    def __init__(self, gallery_size: Callable[[], float]) -> None:
        # heavy, optional: the `serve` extra
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        self.content_type = CONTENT_TYPE_LATEST
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "abdnet_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "abdnet_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "abdnet_batch_size",
            "items per dynamic batch (embed: images through the model; search: queries)",
            ["stage"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "abdnet_batch_seconds",
            "time to process one dynamic batch",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "abdnet_images", "images received, by outcome", ["outcome"], registry=self.registry
        )
        size = Gauge("abdnet_gallery_size", "entries in the gallery", registry=self.registry)
        size.set_function(gallery_size)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch_observer(self, stage: str) -> Callable[[int, float], None]:
        size, secs = self.batch_size.labels(stage), self.batch_seconds.labels(stage)

        def observe(n: int, seconds: float) -> None:
            size.observe(n)
            secs.observe(seconds)

        return observe

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
