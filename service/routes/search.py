"""Search by text and by an uploaded image."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from index.batch import SearchQuery
from index.errors import ItemNotFoundError, StoreError
from index.types import Hit, VectorStore
from models.captioner import Matcher
from service.auth import ReadRuntime
from service.deps import Searcher, require_matcher
from service.errors import ApiError
from service.inputs import check_context, check_k, check_text, parse_filter, read_uploads
from service.schemas import (
    EXACT_DESCRIPTION,
    BatchSearchResponse,
    SearchHit,
    SearchResponse,
    TextBatchSearchRequest,
    TextSearchRequest,
    batch_search_response_json,
    json_response,
    search_response_json,
    to_field_filters,
)

# No router-level ReadKey: each route takes ReadRuntime, which checks the key and gives the runtime.
router = APIRouter(prefix="/v1/search", tags=["search"])


async def _search(searcher: Searcher, query: SearchQuery) -> list[Hit]:
    """The query's hits, searched together with other requests' queries (see index.batch)."""
    (found,) = await searcher.submit([query])
    if isinstance(found, StoreError):
        raise found
    return found


@router.post("/text", response_model=SearchResponse)
async def search_text(request: TextSearchRequest, runtime: ReadRuntime) -> Response:
    """Items ranked by cosine similarity to the query text, best first.

    `fields` chooses what the query is compared with: the image, the caption
    (metadata `caption`, embedded as text), or both (each item scores its
    better field). With `rerank`, CLIP's best `top_k` are reordered by BLIP's
    image–text matching probability (`itm_score`); `score` stays CLIP's.
    """
    # One dependency (the key check and the runtime) rather than one per part:
    # FastAPI's dependency solving was a third of the event loop's time per search.
    settings, encoder, matcher = runtime.settings, runtime.encoder, runtime.matcher
    check_text(request.query, "query", settings.limits)
    check_k(request.k, settings.limits)
    rerank = request.rerank
    active = require_matcher(matcher) if rerank is not None else None  # 503 before any work
    if rerank is not None and rerank.top_k > settings.limits.max_rerank:
        raise ApiError(
            422, "validation_error", f"rerank.top_k is {rerank.top_k}; the limit is {settings.limits.max_rerank}"
        )
    filters = to_field_filters(request.filter)
    fields = list(dict.fromkeys(request.fields))
    fetch = request.k if rerank is None else max(request.k, rerank.top_k)
    [truncated] = await check_context(encoder, [request.query], truncate=request.truncate, what="the query")
    vector = (await encoder.embed_texts([request.query]))[0]
    hits = await _search(
        runtime.searcher, SearchQuery(vector, fetch, tuple(filters), request.min_score, tuple(fields), request.exact)
    )
    if rerank is None or active is None:
        return json_response(search_response_json(hits, truncated=truncated))
    reranked = await _rerank(runtime.store, active, request.query, hits, rerank.top_k, request.k)
    return json_response(reranked.model_copy(update={"truncated": truncated}).model_dump_json().encode())


@router.post("/text/batch", response_model=BatchSearchResponse)
async def search_text_batch(request: TextBatchSearchRequest, runtime: ReadRuntime) -> Response:
    """Many text searches in one request: `results[i]` holds what a text search
    for `queries[i]` with the same `k`, `filter`, `min_score`, `fields` and
    `truncate` returns, and `truncated[i]` its `truncated`.

    The queries go into the text tower together and are searched together (one
    index call), so a client with many queries pays one round trip for them all.
    """
    limits = runtime.settings.limits
    if len(request.queries) > limits.max_batch_queries:
        raise ApiError(
            422,
            "validation_error",
            f"queries holds {len(request.queries)} texts; the limit is {limits.max_batch_queries} per request",
        )
    for i, query in enumerate(request.queries):
        check_text(query, f"queries[{i}]", limits)
    check_k(request.k, limits)
    filters = tuple(to_field_filters(request.filter))
    fields = tuple(dict.fromkeys(request.fields))
    truncated = await check_context(runtime.encoder, request.queries, truncate=request.truncate, what="a query")
    vectors = await runtime.encoder.embed_texts(request.queries)
    found = await runtime.searcher.submit(
        [SearchQuery(v, request.k, filters, request.min_score, fields, request.exact) for v in vectors]
    )
    results: list[list[Hit]] = []
    for hits in found:
        if isinstance(hits, StoreError):
            raise hits
        results.append(hits)
    return json_response(batch_search_response_json(results, truncated))


async def _rerank(
    store: VectorStore, matcher: Matcher, query: str, hits: list[Hit], top_k: int, k: int
) -> SearchResponse:
    """The first `top_k` hits reordered by ITM probability, then the rest in CLIP's order; k in all."""
    candidates = hits[:top_k]
    images = await asyncio.to_thread(lambda: [stored_image(store, h.id) for h in candidates])
    order = await matcher.rank(query, images)
    reranked = [SearchHit.of(candidates[i]).model_copy(update={"itm_score": p}) for i, p in order]
    rest = [SearchHit.of(h) for h in hits[top_k:]]
    return SearchResponse.model_construct(results=(reranked + rest)[:k])


def stored_image(store: VectorStore, item_id: str) -> bytes | None:
    """The image to rerank an item by: its original where kept, else its thumbnail, else None."""
    for read in (store.original, store.thumbnail):
        try:
            return read(item_id)
        except ItemNotFoundError:
            continue
    return None


@router.post("/image", response_model=SearchResponse)
async def search_image(
    runtime: ReadRuntime,
    file: Annotated[UploadFile, File(description="the query image")],
    k: Annotated[int, Form()] = 10,
    min_score: Annotated[float | None, Form(ge=-1, le=1)] = None,
    filter: Annotated[str | None, Form(description="JSON filter, as in text search")] = None,
    exact: Annotated[bool, Form(description=EXACT_DESCRIPTION)] = False,
) -> Response:
    """Images ranked by cosine similarity to the uploaded image, best first."""
    limits = runtime.settings.limits
    check_k(k, limits)
    filters = parse_filter(filter)
    uploads = await read_uploads([file], limits)
    vector = await runtime.encoder.embed_images(uploads)
    query = SearchQuery(vector[0], k, tuple(filters), min_score, exact=exact)
    return json_response(search_response_json(await _search(runtime.searcher, query)))
