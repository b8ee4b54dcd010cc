"""Liveness, readiness and collection statistics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from service.auth import ReadKey
from service.deps import EncoderDep, OptionalCaptionerDep, OptionalMatcherDep, SettingsDep, StoreDep
from service.schemas import (
    CaptionModelOut,
    HealthResponse,
    IndexStatusOut,
    LimitsResponse,
    ModelOut,
    ReadyResponse,
    StatsResponse,
)

router = APIRouter(tags=["system"])


def _model_out(encoder: EncoderDep) -> ModelOut:
    return ModelOut.model_validate(encoder.info)


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """The process is alive and answering."""
    return HealthResponse()


@router.get("/ready", response_model=ReadyResponse)
async def ready(encoder: EncoderDep, store: StoreDep) -> ReadyResponse:
    """The model and the store are loaded; says which model is serving."""
    return ReadyResponse(model=_model_out(encoder), count=await asyncio.to_thread(store.count))


@router.get("/v1/limits", response_model=LimitsResponse, dependencies=[ReadKey])
async def limits(settings: SettingsDep) -> LimitsResponse:
    """The request limits this server enforces: the search page sends added files in batches of `max_files`."""
    return LimitsResponse.model_validate(settings.limits)


@router.get("/v1/stats", response_model=StatsResponse, dependencies=[ReadKey])
async def stats(
    encoder: EncoderDep, store: StoreDep, captioner: OptionalCaptionerDep, matcher: OptionalMatcherDep
) -> StatsResponse:
    """Collection size, the index (its search settings and last measured recall), and the models
    serving (BLIP ones null when off)."""
    return StatsResponse(
        count=await asyncio.to_thread(store.count),
        dim=store.dim,
        index_type=store.index_type,
        index=IndexStatusOut.model_validate(await asyncio.to_thread(store.index_status)),
        model=_model_out(encoder),
        captioner=CaptionModelOut.model_validate(captioner.info) if captioner is not None else None,
        itm=CaptionModelOut.model_validate(matcher.info) if matcher is not None else None,
    )
