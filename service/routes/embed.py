"""Raw embeddings of texts and images."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from service.auth import ReadKey
from service.deps import EncoderDep, SettingsDep
from service.errors import ApiError
from service.inputs import check_context, check_text, read_uploads
from service.schemas import EmbeddingsResponse, TextEmbedRequest

router = APIRouter(prefix="/v1/embed", tags=["embed"], dependencies=[ReadKey])


@router.post("/text", response_model=EmbeddingsResponse)
async def embed_text(request: TextEmbedRequest, encoder: EncoderDep, settings: SettingsDep) -> EmbeddingsResponse:
    """L2-normalised text embeddings, one per input text."""
    limits = settings.limits
    if len(request.texts) > limits.max_texts:
        raise ApiError(422, "validation_error", f"{len(request.texts)} texts; at most {limits.max_texts}")
    for text in request.texts:
        check_text(text, "a text", limits)
    truncated = await check_context(encoder, request.texts, truncate=request.truncate, what="a text")
    vectors = await encoder.embed_texts(request.texts)
    return EmbeddingsResponse(
        model=encoder.info.name, dim=encoder.info.dim, embeddings=vectors.tolist(), truncated=truncated
    )


@router.post("/image", response_model=EmbeddingsResponse)
async def embed_image(
    encoder: EncoderDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="one or more image files")],
) -> EmbeddingsResponse:
    """L2-normalised image embeddings, one per file."""
    vectors = await encoder.embed_images(await read_uploads(files, settings.limits))
    return EmbeddingsResponse(model=encoder.info.name, dim=encoder.info.dim, embeddings=vectors.tolist())
