"""The app factory: build the towers, batchers and store in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from index.batch import search_each
from index.errors import StoreError
from index.types import VectorStore
from models.batcher import BatchLimits, MicroBatcher
from models.blip import load_captioner, load_itm
from models.captioner import Captioner, CaptionTower, Matcher, MatchTower
from models.clip import DEMO_MODEL, DEMO_NOTICE, ClipTowers, load_clip, set_torch_threads
from models.encoder import Encoder
from models.errors import ModelError
from service.deps import Runtime, Searcher
from service.errors import ERROR_RESPONSES, install_error_handlers
from service.limits import install_limits
from service.logs import configure_logging, install_request_ids
from service.metrics import Metrics, install_metrics
from service.routes import caption, classify, embed, images, openai_compat, search, system, web
from service.served_by import install_model_header
from service.settings import Settings
from service.stores import describe, open_store

log = logging.getLogger(__name__)


# Searches are cheap next to a forward pass: a batch of them may be large.
MAX_SEARCH_BATCH = 1024
# The recall self-check logs a warning below this.
LOW_RECALL = 0.9
# Collect the young generation after this many net allocations (CPython's default: 700).
YOUNG_GC_THRESHOLD = 10_000


@contextlib.contextmanager
def long_lived_heap() -> Iterator[None]:
    """While serving: the objects alive now (the loaded model, torch, the libraries) are left out of
    cyclic garbage collection, and the young generation is collected less often; both restored after.

    Why: those objects never become garbage, yet every full collection walked
    them all, and a search request's objects, alive across several young
    collections while queued, filled the old generation fast enough to start
    one every few seconds under load: on 2 cores, text search at 32
    connections had a p99 of 400-700 ms against a p50 of 30 ms. A young
    collection every 700 allocations ran every request or two. With both
    changes the p99 fell to ~40-60 ms and the event loop's CPU per request by
    a third (docs/benchmarks.md, section 6). Objects created later are
    collected as usual. The collection before freezing takes ~0.4 s with a
    model loaded, once per start (Settings.freeze_heap turns all of this off).
    """
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()  # the app's objects become collectable again (tests build many apps in one process)


async def check_recall_every(store: VectorStore, interval_s: float) -> None:
    """Measure the ANN index's recall on recent queries every `interval_s` seconds, until cancelled.

    A number in /v1/stats and /metrics that says when approximate search starts
    missing what exact search finds (text queries among images, say).
    """
    while True:
        await asyncio.sleep(interval_s)
        try:
            check = await asyncio.to_thread(store.check_recall)
        except StoreError as exc:  # e.g. the store closed under it at shutdown
            log.warning("the recall self-check failed: %s", exc)
            continue
        if check is not None and check.recall < LOW_RECALL:
            log.warning(
                "the %s index found %.2f of the true top %d on %d recent queries; raise its search breadth "
                "(CLIPSEARCH_STORE__HNSW_EF_SEARCH / IVF_NPROBE / FAR_QUERY_EFFORT) or search with exact",
                store.index_type,
                check.recall,
                check.k,
                check.queries,
            )


def load_towers(settings: Settings) -> ClipTowers:
    """The configured CLIP model (for the service and the local indexer alike)."""
    m = settings.model
    return load_clip(
        m.name, m.pretrained, m.device, fallback_to_demo=m.fallback_to_demo, precision=m.precision, pipeline=m.pipeline
    )


async def _open(settings: Settings, towers: ClipTowers | None) -> tuple[ClipTowers, VectorStore]:
    """Load the model (unless given) and open the store, off the event loop."""
    set_torch_threads(settings.model.torch_threads)
    if towers is None:
        # Loading reads hundreds of MB and may download.
        towers = await asyncio.to_thread(load_towers, settings)
    store = await asyncio.to_thread(open_store, settings.store, towers.info.dim, towers.info.name)
    return towers, store


async def _open_blip(
    settings: Settings, caption_tower: CaptionTower | None, match_tower: MatchTower | None
) -> tuple[CaptionTower | None, MatchTower | None]:
    """The configured BLIP towers (None where off), loaded in threads."""
    b = settings.blip
    if caption_tower is None and b.captioner is not None:
        caption_tower = await asyncio.to_thread(load_captioner, b.captioner, b.device)
    if match_tower is None and b.itm is not None:
        match_tower = await asyncio.to_thread(load_itm, b.itm, b.device)
    return caption_tower, match_tower


def create_app_from_environment() -> FastAPI:
    """The app for one of `clipsearch serve --workers N`'s processes: settings from the environment,
    where the command put its options."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def create_app(
    settings: Settings,
    *,
    towers: ClipTowers | None = None,
    caption_tower: CaptionTower | None = None,
    match_tower: MatchTower | None = None,
) -> FastAPI:
    """Build the app. `towers`, `caption_tower` and `match_tower` replace loading
    the configured models (tests pass fakes); a given BLIP tower is served even
    when the settings name none."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            api_keys = tuple(settings.auth.keys())
            loaded, store = await _open(settings, towers)
            try:
                blip_caption, blip_match = await _open_blip(settings, caption_tower, match_tower)
            except BaseException:
                store.close()
                raise
        except (ModelError, StoreError, OSError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            raise
        metrics.model_load_seconds.set(time.perf_counter() - started)
        b = settings.batching
        limits = BatchLimits(b.max_batch_size, b.max_batch_wait_ms / 1000, b.max_queue)
        encoder = Encoder(
            loaded,
            limits,
            max_pixels=settings.limits.max_image_pixels,
            text_cache_size=settings.model.text_cache_size,
            observer=metrics,
        )
        pixels = settings.limits.max_image_pixels
        captioner = (
            Captioner(blip_caption, limits, max_pixels=pixels, observer=metrics) if blip_caption is not None else None
        )
        matcher = Matcher(blip_match, limits, max_pixels=pixels, observer=metrics) if blip_match is not None else None
        # Searches of concurrent requests share one thread hop and one FAISS call. No
        # wait for company: a forward pass resolves its callers together, so their
        # searches arrive in the same turn of the event loop.
        searcher: Searcher = MicroBatcher(
            lambda queries: search_each(store, queries),
            max_batch_size=MAX_SEARCH_BATCH,
            max_wait_s=0,
            max_queue=b.max_queue,
            name="search",
            observer=metrics,
        )
        for part in (encoder, captioner, matcher, searcher):
            if part is not None:
                part.start()
        interval = settings.store.recall_check_interval_s
        checker = asyncio.create_task(check_recall_every(store, interval)) if interval > 0 else None
        app.state.runtime = Runtime(
            settings=settings,
            encoder=encoder,
            store=store,
            searcher=searcher,
            api_keys=api_keys,
            captioner=captioner,
            matcher=matcher,
        )
        demo = f" ({DEMO_NOTICE})" if loaded.info.name == DEMO_MODEL and loaded.info.fallback_reason is None else ""
        log.info("serving %s%s with %d items from %s", loaded.info.name, demo, store.count(), describe(settings.store))
        try:
            with long_lived_heap() if settings.freeze_heap else contextlib.nullcontext():
                yield
        finally:
            if checker is not None:
                checker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checker
            await asyncio.gather(*(part.stop() for part in (encoder, captioner, matcher) if part is not None))
            await searcher.stop()  # after the encoders: their last callers may still search
            store.close()

    app = FastAPI(
        title="clipsearch",
        version="0.1.0",
        description="Zero-shot image–text retrieval with CLIP and FAISS.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # /docs is served from local files by service/routes/web.py; ReDoc would need a CDN, so it is off.
        docs_url=None,
        redoc_url=None,
        # The multipart parser's own caps sit above ours, so our checks (and messages) are the ones users meet.
        form_limits={
            "max_fields": settings.limits.max_form_fields,
            "max_files": 2 * settings.limits.max_files + 16,
            "max_part_size": settings.limits.max_form_part_bytes,
        },
    )

    def refresh_gauges() -> None:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        if runtime is not None:
            try:
                metrics.index_items.set(runtime.store.count())
            except StoreError:  # a remote store that does not answer: the other figures still count
                metrics.index_items.set(math.nan)
            status = runtime.store.index_status()
            exact = status.type == "flat"
            metrics.ann_recall.set(1.0 if exact else status.recall.recall if status.recall else math.nan)
            depths = {b.name: b.queue_depth for b in (runtime.encoder.images, runtime.encoder.texts, runtime.searcher)}
            if runtime.captioner is not None:
                depths["caption"] = runtime.captioner.batcher.queue_depth
            if runtime.matcher is not None:
                depths["itm"] = runtime.matcher.batcher.queue_depth
            for name, depth in depths.items():
                metrics.queue_depth.labels(name).set(depth)

    install_error_handlers(app)
    install_limits(app, settings)
    install_metrics(app, metrics, refresh_gauges)
    install_model_header(app)
    install_request_ids(app)  # outermost: every log line of the request carries its id
    # Search first: routes are matched in order, and searches are the most frequent
    # requests (matching them after the others was a tenth of their event-loop time).
    for module in (search, system, images, classify, caption, embed, openai_compat, web):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    app.mount(web.DOCS_ASSETS, StaticFiles(directory=web.SWAGGER_UI_DIR), name="docs-assets")
    return app
