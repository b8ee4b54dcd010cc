"""OpenAI-compatible text embeddings, so OpenAI clients can use the service as it is."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter

from service.auth import ReadKey
from service.deps import EncoderDep, SettingsDep
from service.errors import ApiError
from service.inputs import check_text
from service.schemas import (
    OpenAIEmbedding,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIModel,
    OpenAIModelList,
    OpenAIUsage,
)

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[ReadKey])

MODEL_ALIAS = "clipsearch"


@router.post("/embeddings", response_model=OpenAIEmbeddingResponse)
async def embeddings(
    request: OpenAIEmbeddingRequest, encoder: EncoderDep, settings: SettingsDep
) -> OpenAIEmbeddingResponse:
    """CLIP text embeddings in the shape of OpenAI's embeddings API (L2-normalised)."""
    info = encoder.info
    if request.model not in (info.name, MODEL_ALIAS):
        raise ApiError(404, "model_not_found", f"model {request.model!r} is not served here; use {info.name!r}")
    if request.dimensions is not None and request.dimensions != info.dim:
        raise ApiError(422, "validation_error", f"dimensions must be {info.dim} for {info.name}")
    texts = [request.input] if isinstance(request.input, str) else request.input
    limits = settings.limits
    if not texts or len(texts) > limits.max_texts:
        raise ApiError(422, "validation_error", f"input must hold 1 to {limits.max_texts} texts")
    for text in texts:
        check_text(text, "an input text", limits)
    vectors = await encoder.embed_texts(texts)
    tokens = await encoder.count_tokens(texts)
    data = [
        OpenAIEmbedding(
            index=i,
            embedding=(
                base64.b64encode(row.astype("<f4").tobytes()).decode()
                if request.encoding_format == "base64"
                else row.astype(np.float64).tolist()
            ),
        )
        for i, row in enumerate(vectors)
    ]
    return OpenAIEmbeddingResponse(
        data=data, model=info.name, usage=OpenAIUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


@router.get("/models", response_model=OpenAIModelList)
async def models(encoder: EncoderDep) -> OpenAIModelList:
    """The names `POST /v1/embeddings` accepts, in the shape of OpenAI's model list."""
    return OpenAIModelList(data=[OpenAIModel(id=encoder.info.name), OpenAIModel(id=MODEL_ALIAS)])


@router.get("/models/{model_id:path}", response_model=OpenAIModel)
async def model(encoder: EncoderDep, model_id: str) -> OpenAIModel:
    """One of the names `POST /v1/embeddings` accepts (404 for any other)."""
    if model_id not in (encoder.info.name, MODEL_ALIAS):
        raise ApiError(404, "model_not_found", f"model {model_id!r} is not served here; use {encoder.info.name!r}")
    return OpenAIModel(id=model_id)
