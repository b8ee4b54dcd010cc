"""Prometheus metrics: one registry per app, scraped at GET /metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's metrics; also the batchers' BatchObserver."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "clipsearch_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "clipsearch_request_seconds", "HTTP request latency", ["method", "route"], buckets=_SECONDS, registry=r
        )
        self.batch_size = Histogram(
            "clipsearch_batch_size", "items per forward pass", ["tower"], buckets=_SIZES, registry=r
        )
        self.batch_wait = Histogram(
            "clipsearch_batch_wait_seconds", "time an item waited in the queue", ["tower"], buckets=_SECONDS, registry=r
        )
        self.inference_seconds = Histogram(
            "clipsearch_inference_seconds", "forward pass time per batch", ["tower"], buckets=_SECONDS, registry=r
        )
        self.queue_depth = Gauge("clipsearch_queue_depth", "items waiting per tower", ["tower"], registry=r)
        self.index_items = Gauge("clipsearch_index_items", "items in the store", registry=r)
        self.model_load_seconds = Gauge("clipsearch_model_load_seconds", "time to load the model and store", registry=r)

    def batch_done(self, tower: str, size: int, waits: Sequence[float], seconds: float) -> None:
        self.batch_size.labels(tower).observe(size)
        self.inference_seconds.labels(tower).observe(seconds)
        for wait in waits:
            self.batch_wait.labels(tower).observe(wait)


def install_metrics(app: FastAPI, metrics: Metrics, refresh: Callable[[], None]) -> None:
    """Count and time every request by route template; serve /metrics (calling `refresh` for gauges)."""

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route's template, not the raw path: ids would make a label per item.
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.request_seconds.labels(request.method, template).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        refresh()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
