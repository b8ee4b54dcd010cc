"""Indexed images: add, list, get, delete, similar, embedding."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from index.types import validate_id
from service.auth import ReadKey, WriteKey
from service.deps import EncoderDep, OptionalCaptionerDep, SettingsDep, StoreDep, require_captioner
from service.errors import ApiError
from service.ingest import ingest_images
from service.inputs import check_k, check_metadata, parse_filter, parse_json_field, read_uploads
from service.schemas import (
    EXACT_DESCRIPTION,
    EmbeddingsResponse,
    ItemOut,
    ItemPage,
    ItemsCreated,
    SearchResponse,
    json_response,
    search_response_json,
)

router = APIRouter(prefix="/v1/images", tags=["images"])


@router.post("", status_code=201, response_model=ItemsCreated, dependencies=[WriteKey])
async def add_images(
    encoder: EncoderDep,
    captioner: OptionalCaptionerDep,
    store: StoreDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="one or more image files")],
    ids: Annotated[list[str] | None, Form(description="one id per file, in order; omitted: generated")] = None,
    metadata: Annotated[
        list[str] | None, Form(description='one JSON object per file, in order (e.g. {"album": "x"})')
    ] = None,
    caption: Annotated[
        bool, Form(description="write a BLIP caption into each item's metadata as `caption` (needs --captioner)")
    ] = False,
) -> ItemsCreated:
    """Embed and store images. An existing id is replaced (upsert). Stored durably before the answer.

    A string `caption` in an item's metadata (written by the captioner with
    caption=true, or given by the client) is embedded too, so text search can
    match it (`"fields": ["caption"]`).
    """
    limits = settings.limits
    uploads = await read_uploads(files, limits)
    if ids is not None and len(ids) != len(uploads):
        raise ApiError(422, "validation_error", f"{len(ids)} ids for {len(uploads)} files: give one id per file")
    if metadata is not None and len(metadata) != len(uploads):
        raise ApiError(
            422, "validation_error", f"{len(metadata)} metadata fields for {len(uploads)} files: give one per file"
        )
    for item_id in ids or []:
        validate_id(item_id)  # before the model runs, not after
    metas = [
        check_metadata(parse_json_field(raw, f"metadata of {name}"), f"metadata of {name}", limits)
        for raw, (name, _) in zip(metadata or ["{}"] * len(uploads), uploads, strict=True)
    ]
    active = None
    if caption:
        active = require_captioner(captioner)
        for meta, (name, _) in zip(metas, uploads, strict=True):
            if "caption" in meta:
                raise ApiError(
                    422, "validation_error", f"metadata of {name} has a caption already: send caption=false to keep it"
                )
    stored = await ingest_images(
        encoder,
        store,
        uploads,
        ids=ids,
        metadata=metas,
        keep_originals=settings.store.keep_originals,
        captioner=active,
    )
    return ItemsCreated(items=[ItemOut.model_validate(i) for i in stored])


@router.get("", response_model=ItemPage, dependencies=[ReadKey])
async def list_images(
    store: StoreDep,
    offset: Annotated[int, Query(ge=0, le=10**12)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ItemPage:
    """Stored items in the order they were last written, a page at a time."""
    items = await asyncio.to_thread(store.page, offset, limit)
    return ItemPage(
        items=[ItemOut.model_validate(i) for i in items],
        total=await asyncio.to_thread(store.count),
        offset=offset,
        limit=limit,
    )


@router.get("/{item_id}", response_model=ItemOut, dependencies=[ReadKey])
async def get_image(store: StoreDep, item_id: str) -> ItemOut:
    item = await asyncio.to_thread(store.get, item_id)
    return ItemOut.model_validate(item)


@router.delete("/{item_id}", status_code=204, dependencies=[WriteKey])
async def delete_image(store: StoreDep, item_id: str) -> Response:
    """Remove the item; it is gone from searches when this answers."""
    await asyncio.to_thread(store.delete, item_id)
    return Response(status_code=204)


@router.get(
    "/{item_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG of at most 256x256 pixels"}},
    dependencies=[ReadKey],
)
async def get_thumbnail(store: StoreDep, item_id: str) -> Response:
    """The thumbnail kept when the image was added (items from import-vectors have none: 404)."""
    jpeg = await asyncio.to_thread(store.thumbnail, item_id)
    # An upsert under the same id replaces it, so browsers may keep it only briefly.
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


@router.get(
    "/{item_id}/original",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the file as uploaded"}},
    dependencies=[ReadKey],
)
async def get_original(store: StoreDep, item_id: str) -> Response:
    """The uploaded file itself, where the service keeps originals (CLIPSEARCH_STORE__KEEP_ORIGINALS)."""
    data = await asyncio.to_thread(store.original, item_id)
    return Response(data, media_type="application/octet-stream")


@router.get("/{item_id}/embedding", response_model=EmbeddingsResponse, dependencies=[ReadKey])
async def get_embedding(store: StoreDep, encoder: EncoderDep, item_id: str) -> EmbeddingsResponse:
    """The stored (normalised) embedding of one item."""
    vector = await asyncio.to_thread(store.vector, item_id)
    return EmbeddingsResponse(model=encoder.info.name, dim=store.dim, embeddings=[vector.tolist()])


@router.get("/{item_id}/similar", response_model=SearchResponse, dependencies=[ReadKey])
async def similar_images(
    store: StoreDep,
    settings: SettingsDep,
    item_id: str,
    k: Annotated[int, Query()] = 10,
    min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
    filter: Annotated[str | None, Query(description="JSON filter, as in text search")] = None,
    exact: Annotated[bool, Query(description=EXACT_DESCRIPTION)] = False,
) -> Response:
    """Items most similar to an indexed one (the item itself left out)."""
    check_k(k, settings.limits)
    filters = parse_filter(filter)
    vector = await asyncio.to_thread(store.vector, item_id)
    hits = await asyncio.to_thread(
        lambda: store.search(vector, k, filters=filters, min_score=min_score, exclude_id=item_id, exact=exact)
    )
    return json_response(search_response_json(hits))
