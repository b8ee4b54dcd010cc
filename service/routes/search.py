"""Search by text and by an uploaded image."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile

from index.types import FieldFilter, VectorStore
from service.auth import ReadKey
from service.deps import EncoderDep, SettingsDep, StoreDep
from service.inputs import check_k, check_text, parse_filter, read_uploads
from service.schemas import SearchResponse, TextSearchRequest, to_field_filters

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[ReadKey])


async def _search(
    store: VectorStore, query: np.ndarray, k: int, filters: list[FieldFilter], min_score: float | None
) -> SearchResponse:
    hits = await asyncio.to_thread(lambda: store.search(query, k, filters=filters, min_score=min_score))
    return SearchResponse.of(hits)


@router.post("/text", response_model=SearchResponse)
async def search_text(
    request: TextSearchRequest, encoder: EncoderDep, store: StoreDep, settings: SettingsDep
) -> SearchResponse:
    """Images ranked by cosine similarity to the query text, best first."""
    check_text(request.query, "query", settings.limits)
    check_k(request.k, settings.limits)
    vector = await encoder.embed_texts([request.query])
    return await _search(store, vector[0], request.k, to_field_filters(request.filter), request.min_score)


@router.post("/image", response_model=SearchResponse)
async def search_image(
    encoder: EncoderDep,
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="the query image")],
    k: Annotated[int, Form()] = 10,
    min_score: Annotated[float | None, Form(ge=-1, le=1)] = None,
    filter: Annotated[str | None, Form(description="JSON filter, as in text search")] = None,
) -> SearchResponse:
    """Images ranked by cosine similarity to the uploaded image, best first."""
    check_k(k, settings.limits)
    filters = parse_filter(filter)
    uploads = await read_uploads([file], settings.limits)
    vector = await encoder.embed_images(uploads)
    return await _search(store, vector[0], k, filters, min_score)
