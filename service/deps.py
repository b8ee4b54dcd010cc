"""Objects built in the app's lifespan, handed to routes through Depends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from index.types import VectorStore
from models.captioner import Captioner, Matcher
from models.encoder import Encoder
from service.errors import ApiError
from service.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    encoder: Encoder
    store: VectorStore
    api_keys: tuple[str, ...] = ()
    captioner: Captioner | None = None  # None: captioning is off
    matcher: Matcher | None = None  # None: reranking is off


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    return get_runtime(request).settings


def get_encoder(request: Request) -> Encoder:
    return get_runtime(request).encoder


def get_store(request: Request) -> VectorStore:
    return get_runtime(request).store


SettingsDep = Annotated[Settings, Depends(get_settings)]
EncoderDep = Annotated[Encoder, Depends(get_encoder)]
StoreDep = Annotated[VectorStore, Depends(get_store)]


def get_optional_captioner(request: Request) -> Captioner | None:
    return get_runtime(request).captioner


def get_optional_matcher(request: Request) -> Matcher | None:
    return get_runtime(request).matcher


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


def get_captioner(request: Request) -> Captioner:
    return require_captioner(get_optional_captioner(request))


OptionalCaptionerDep = Annotated[Captioner | None, Depends(get_optional_captioner)]
OptionalMatcherDep = Annotated[Matcher | None, Depends(get_optional_matcher)]
CaptionerDep = Annotated[Captioner, Depends(get_captioner)]
