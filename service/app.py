"""The app factory: build the towers, batchers and store in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from index.errors import StoreError
from index.store import SqliteFaissStore
from models.clip import ClipTowers, load_clip, set_torch_threads
from models.encoder import Encoder
from models.errors import ModelError
from service.deps import Runtime
from service.errors import ERROR_RESPONSES, install_error_handlers
from service.limits import install_limits
from service.logs import install_request_ids
from service.metrics import Metrics, install_metrics
from service.routes import classify, embed, images, openai_compat, search, system, web
from service.settings import Settings

log = logging.getLogger(__name__)


async def _open(settings: Settings, towers: ClipTowers | None) -> tuple[ClipTowers, SqliteFaissStore]:
    """Load the model (unless given) and open the store, off the event loop."""
    set_torch_threads(settings.model.torch_threads)
    if towers is None:
        m = settings.model
        # Loading reads hundreds of MB and may download.
        towers = await asyncio.to_thread(
            load_clip, m.name, m.pretrained, m.device, fallback_to_demo=m.fallback_to_demo, precision=m.precision
        )
    store = await asyncio.to_thread(
        SqliteFaissStore, settings.store.data_dir, towers.info.dim, towers.info.name, settings.store.index_spec()
    )
    return towers, store


def create_app(settings: Settings, *, towers: ClipTowers | None = None) -> FastAPI:
    """Build the app. `towers` replaces loading the configured model (tests pass a fake)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            api_keys = tuple(settings.auth.keys())
            loaded, store = await _open(settings, towers)
        except (ModelError, StoreError, OSError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            raise
        metrics.model_load_seconds.set(time.perf_counter() - started)
        b = settings.batching
        encoder = Encoder(
            loaded,
            max_batch_size=b.max_batch_size,
            max_wait_s=b.max_batch_wait_ms / 1000,
            max_queue=b.max_queue,
            max_pixels=settings.limits.max_image_pixels,
            text_cache_size=settings.model.text_cache_size,
            observer=metrics,
        )
        encoder.start()
        app.state.runtime = Runtime(settings=settings, encoder=encoder, store=store, api_keys=api_keys)
        log.info("serving %s with %d items from %s", loaded.info.name, store.count(), settings.store.data_dir)
        try:
            yield
        finally:
            await encoder.stop()
            store.close()

    app = FastAPI(
        title="clipsearch",
        version="0.1.0",
        description="Zero-shot image–text retrieval with CLIP and FAISS.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )

    def refresh_gauges() -> None:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        if runtime is not None:
            metrics.index_items.set(runtime.store.count())
            for batcher in (runtime.encoder.images, runtime.encoder.texts):
                metrics.queue_depth.labels(batcher.name).set(batcher.queue_depth)

    install_error_handlers(app)
    install_limits(app, settings)
    install_metrics(app, metrics, refresh_gauges)
    install_request_ids(app)  # outermost: every log line of the request carries its id
    for module in (system, images, search, classify, embed, openai_compat, web):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    return app
