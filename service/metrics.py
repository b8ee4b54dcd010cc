"""Prometheus metrics: one registry per app, scraped at GET /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        self.ann_recall = Gauge(
            "clipsearch_ann_recall",
            "ANN recall@10 against exhaustive search on recent queries (1: exact index; NaN: not measured yet)",
            registry=r,
        )
        self.model_load_seconds = Gauge("clipsearch_model_load_seconds", "time to load the model and store", registry=r)

    def batch_done(self, tower: str, size: int, waits: Sequence[float], seconds: float) -> None:
        self.batch_size.labels(tower).observe(size)
        self.inference_seconds.labels(tower).observe(seconds)
        waited = self.batch_wait.labels(tower)  # once per batch: labels() takes a lock and builds a key
        for wait in waits:
            waited.observe(wait)


class _RequestMetrics:
    """Pure ASGI: counts and times every request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Each (method, route, status)'s counter and (method, route)'s histogram, looked up once:
        # labels() takes a lock and builds a key on every call (~3 µs each in cProfile).
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The route's template, not the raw path: ids would make a label per item.
            template = getattr(scope.get("route"), "path", "unmatched")
            key = (scope["method"], template, str(status))
            children = self._children.get(key)
            if children is None:
                children = (self.metrics.requests.labels(*key), self.metrics.request_seconds.labels(*key[:2]))
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


def install_metrics(app: FastAPI, metrics: Metrics, refresh: Callable[[], None]) -> None:
    """Count and time every request; serve /metrics (calling `refresh` for gauges)."""
    app.add_middleware(_RequestMetrics, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        # In a thread: the gauges ask the store, which may be a network call (Milvus).
        await asyncio.to_thread(refresh)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
