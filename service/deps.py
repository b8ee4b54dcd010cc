"""Objects built in the app's lifespan, handed to routes through Depends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from index.batch import SearchQuery
from index.errors import StoreError
from index.types import Hit, VectorStore
from models.batcher import MicroBatcher
from models.captioner import Captioner, Matcher
from models.encoder import Encoder
from service.errors import ApiError
from service.settings import Settings

Searcher = MicroBatcher[SearchQuery, list[Hit] | StoreError]


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    encoder: Encoder
    store: VectorStore
    searcher: Searcher  # the store's searches, batched across requests (index.batch.search_each)
    api_keys: tuple[str, ...] = ()
    captioner: Captioner | None = None  # None: captioning is off
    matcher: Matcher | None = None  # None: reranking is off


# The dependencies are `async def` although they never await: FastAPI runs a
# plain `def` dependency in its thread pool, and those thread hops (six per
# search) cost more than the whole search at a few hundred requests/s.


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


async def get_settings(request: Request) -> Settings:
    return runtime_of(request).settings


async def get_encoder(request: Request) -> Encoder:
    return runtime_of(request).encoder


async def get_store(request: Request) -> VectorStore:
    return runtime_of(request).store


async def get_searcher(request: Request) -> Searcher:
    return runtime_of(request).searcher


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EncoderDep = Annotated[Encoder, Depends(get_encoder)]
StoreDep = Annotated[VectorStore, Depends(get_store)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]


async def get_optional_captioner(request: Request) -> Captioner | None:
    return runtime_of(request).captioner


async def get_optional_matcher(request: Request) -> Matcher | None:
    return runtime_of(request).matcher


def require_captioner(captioner: Captioner | None) -> Captioner:
    """The captioner, or a 503 that says how to turn captioning on."""
    if captioner is None:
        raise ApiError(
            503,
            "captioner_disabled",
            "captioning is off: start the server with --captioner MODEL (a hub id such as "
            "Salesforce/blip-image-captioning-base, a local directory, or demo), "
            "or set CLIPSEARCH_BLIP__CAPTIONER",
        )
    return captioner


def require_matcher(matcher: Matcher | None) -> Matcher:
    """The ITM matcher, or a 503 that says how to turn reranking on."""
    if matcher is None:
        raise ApiError(
            503,
            "rerank_disabled",
            "reranking is off: start the server with --itm MODEL (a hub id such as "
            "Salesforce/blip-itm-base-coco, a local directory, or demo), or set CLIPSEARCH_BLIP__ITM",
        )
    return matcher


async def get_captioner(request: Request) -> Captioner:
    return require_captioner(runtime_of(request).captioner)


OptionalCaptionerDep = Annotated[Captioner | None, Depends(get_optional_captioner)]
OptionalMatcherDep = Annotated[Matcher | None, Depends(get_optional_matcher)]
CaptionerDep = Annotated[Captioner, Depends(get_captioner)]
