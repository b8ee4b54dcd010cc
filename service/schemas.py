"""Request and response bodies of the REST API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson
from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from index.types import FieldFilter, Hit, Scalar, VectorField


class InFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    in_: list[Scalar] = Field(alias="in", min_length=1, max_length=1000, description="field equals any of these")


FilterValue = Scalar | InFilter
Filter = dict[str, FilterValue]

FILTER_DESCRIPTION = (
    'Metadata conditions, all of which must hold: `{"field": value}` (equals) or '
    '`{"field": {"in": [v1, v2]}}`; dots reach nested fields (`"exif.camera"`).'
)


def to_field_filters(raw: Filter | None) -> list[FieldFilter]:
    """Translate the JSON filter into the store's FieldFilter list."""
    if not raw:
        return []
    return [
        FieldFilter(name, tuple(value.in_) if isinstance(value, InFilter) else (value,)) for name, value in raw.items()
    ]


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(ge=1, description="how many of CLIP's best results the ITM model reorders")


EXACT_DESCRIPTION = (
    "compare the query with every stored vector, even where an approximate (ANN) index serves: "
    "the true top k, at the cost of a full scan (see GET /v1/stats for the index's measured recall)"
)


class TextSearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "a red circle", "k": 5, "filter": {"album": "shapes"}},
                {"query": "a red circle", "k": 5, "fields": ["image", "caption"], "rerank": {"top_k": 20}},
            ]
        },
    )
    query: str = Field(min_length=1, description="what to look for, in words")
    k: int = Field(10, ge=1, description="how many results")
    filter: Filter | None = Field(None, description=FILTER_DESCRIPTION)
    min_score: float | None = Field(None, ge=-1, le=1, description="drop results below this cosine similarity")
    fields: list[VectorField] = Field(
        default_factory=lambda: [VectorField.IMAGE],
        min_length=1,
        max_length=len(VectorField),
        description="vectors to compare the query with: the image, the caption's text embedding, or both; "
        "with both, an item scores the higher of the two similarities",
    )
    exact: bool = Field(False, description=EXACT_DESCRIPTION)
    rerank: RerankRequest | None = Field(
        None, description="reorder CLIP's top_k results by BLIP's image-text matching probability (needs --itm)"
    )
    truncate: bool = Field(
        True,
        description="a query longer than the model's context is cut to fit (and `truncated` says so); "
        "false: such a query is refused with 422",
    )


class SearchHit(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    score: float = Field(description="cosine similarity to the query, in [-1, 1]")
    metadata: dict[str, Any]
    matched: VectorField = Field(VectorField.IMAGE, description="the field whose vector gave `score`")
    itm_score: float | None = Field(
        None, description="with rerank: BLIP's probability that image and query match (null: no image to score)"
    )

    @classmethod
    def of(cls, hit: Hit) -> SearchHit:
        """`hit` as it is answered, unvalidated (see SearchResponse.of)."""
        return cls.model_construct(id=hit.id, score=hit.score, metadata=hit.metadata, matched=hit.matched)


class SearchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"results": [{"id": "img-1", "score": 0.31, "metadata": {"album": "shapes"}}]}]}
    )
    results: list[SearchHit]
    truncated: bool = Field(
        False, description="the query text was longer than the model's context: only its start was embedded"
    )

    @classmethod
    def of(cls, hits: Sequence[Hit], *, truncated: bool = False) -> SearchResponse:
        """The response for the store's hits, built without validating them again: the store checked
        every field when it was written, and validating 10 hits was ~12% of a text search's
        event-loop time in cProfile."""
        return cls.model_construct(results=[SearchHit.of(h) for h in hits], truncated=truncated)


class TextBatchSearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"queries": ["a red circle", "a blue square"], "k": 5}]},
    )
    queries: list[str] = Field(
        min_length=1, description="the texts, one search each (at most limits.max_batch_queries)"
    )
    k: int = Field(10, ge=1, description="how many results per query")
    filter: Filter | None = Field(None, description=FILTER_DESCRIPTION + " The same for every query.")
    min_score: float | None = Field(None, ge=-1, le=1, description="drop results below this cosine similarity")
    fields: list[VectorField] = Field(
        default_factory=lambda: [VectorField.IMAGE],
        min_length=1,
        max_length=len(VectorField),
        description="vectors to compare the queries with, as in text search",
    )
    exact: bool = Field(False, description=EXACT_DESCRIPTION)
    truncate: bool = Field(
        True, description="queries longer than the model's context are cut to fit; false: refused with 422"
    )


class BatchSearchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        [{"id": "img-1", "score": 0.31, "metadata": {}}],
                        [{"id": "img-2", "score": 0.28, "metadata": {}}],
                    ]
                }
            ]
        }
    )
    results: list[list[SearchHit]] = Field(description="one list per query, in the order of `queries`, best first")
    truncated: list[bool] = Field(
        default_factory=list, description="per query: longer than the model's context, so only its start was embedded"
    )


def json_response(content: bytes) -> Response:
    """`content`, already JSON, sent as it is: a returned model would be validated against the
    route's response model once more before FastAPI serialised it."""
    return Response(content, media_type="application/json")


def _hit_json(hit: Hit) -> dict[str, Any]:
    """`hit` as SearchHit serialises it (key for key, in its field order), without a model."""
    return {"id": hit.id, "score": hit.score, "metadata": hit.metadata, "matched": hit.matched.value, "itm_score": None}


def search_response_json(hits: Sequence[Hit], *, truncated: bool = False) -> bytes:
    """The JSON of `SearchResponse.of(hits, truncated=truncated)`, written by orjson straight from the hits.

    Building the 11 models of a 10-hit answer (even unvalidated) was a third of a
    text search's event-loop time in cProfile (docs/benchmarks.md, section 6).
    Metadata orjson cannot write (an integer beyond 64 bits, which a Milvus
    store can hand back) goes through the models instead.
    """
    try:
        return orjson.dumps({"results": [_hit_json(h) for h in hits], "truncated": truncated})
    except orjson.JSONEncodeError:
        return SearchResponse.of(hits, truncated=truncated).model_dump_json().encode()


def batch_search_response_json(found: Sequence[Sequence[Hit]], truncated: Sequence[bool]) -> bytes:
    """The JSON of a BatchSearchResponse of `found` (one hit list per query), as search_response_json writes it."""
    try:
        return orjson.dumps({"results": [[_hit_json(h) for h in hits] for hits in found], "truncated": list(truncated)})
    except orjson.JSONEncodeError:
        response = BatchSearchResponse.model_construct(
            results=[[SearchHit.of(h) for h in hits] for hits in found], truncated=list(truncated)
        )
        return response.model_dump_json().encode()


class CaptionOut(BaseModel):
    file: str = Field(description="the uploaded file's name")
    caption: str


class CaptionResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "demo", "captions": [{"file": "a.png", "caption": "a red circle"}]}]}
    )
    model: str = Field(description="the captioning model, as configured")
    captions: list[CaptionOut]


class CaptionModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    spec: str = Field(description="as configured: a hub id, a directory or `demo`")
    source: str = Field(description="what was loaded")
    device: str


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    metadata: dict[str, Any]
    created_at: float = Field(description="Unix time the item was last written")


class ItemsCreated(BaseModel):
    items: list[ItemOut]


class ItemPage(BaseModel):
    items: list[ItemOut]
    total: int
    offset: int
    limit: int


class TextEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["a red circle"]}]})
    texts: list[str] = Field(min_length=1, description="texts to embed")
    truncate: bool = Field(
        True, description="texts longer than the model's context are cut to fit; false: refused with 422"
    )


class EmbeddingsResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]] = Field(description="L2-normalised float32 vectors, one per input")
    truncated: list[bool] | None = Field(
        None, description="texts: whether each was longer than the model's context and cut (null for images)"
    )


class LabelOut(BaseModel):
    label: str
    probability: float = Field(description="softmax over the labels of the model's scaled logits")
    score: float = Field(description="cosine similarity of the image and the label's prompt")


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"labels": [{"label": "circle", "probability": 0.93, "score": 0.29}]}]}
    )
    labels: list[LabelOut]


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    pretrained: str
    dim: int
    device: str
    precision: str
    fallback_reason: str | None = Field(None, description="why the configured model is not the one serving")


class RecallOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    recall: float = Field(description="mean recall@k of the ANN searches against exhaustive search of the same index")
    k: int
    queries: int = Field(description="how many recent queries it was measured on")
    measured_at: float = Field(description="Unix time of the check")


class IndexStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    type: str = Field(description="flat (exact search), hnsw or ivf")
    ef_search: int | None = Field(None, description="HNSW search breadth")
    nprobe: int | None = Field(None, description="IVF lists searched per query")
    far_query_effort: int | None = Field(
        None, description="breadth multiplier for a query far from the stored vectors (e.g. text among images)"
    )
    far_below: float | None = Field(
        None, description="a query whose best match scores below this counts as far (calibrated on stored vectors)"
    )
    searches: int = Field(description="query vectors the ANN index answered since the server started")
    far_searches: int = Field(description="of which were far from the data and searched wider")
    recall: RecallOut | None = Field(
        None, description="the last recall self-check (null: flat index, or not measured yet)"
    )


class StatsResponse(BaseModel):
    count: int
    dim: int
    index_type: str
    index: IndexStatusOut = Field(description="the serving index's search settings and measured recall")
    model: ModelOut
    captioner: CaptionModelOut | None = Field(None, description="the BLIP captioner; null: captioning is off")
    itm: CaptionModelOut | None = Field(None, description="the BLIP ITM model; null: reranking is off")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: ModelOut
    count: int


class LimitsResponse(BaseModel):
    """The request limits a client must keep to (CLIPSEARCH_LIMITS__*), e.g. to send many files in batches."""

    model_config = ConfigDict(from_attributes=True)
    max_files: int = Field(description="most files in one request (adding images, embedding images, captioning)")
    max_upload_bytes: int = Field(description="largest image file")
    max_k: int = Field(description="most results one search returns")
    max_text_chars: int = Field(description="longest query, label or text")
    max_texts: int = Field(description="most texts in one embed request")
    max_labels: int = Field(description="most labels in one classify request")
    max_batch_queries: int = Field(description="most queries in one batch search request")
    max_metadata_bytes: int = Field(description="largest metadata object, as JSON (UTF-8 bytes)")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI's `POST /v1/embeddings` request, for text."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"input": ["a red circle"], "model": "ViT-B-32", "encoding_format": "float"}]}
    )
    input: str | list[str] = Field(description="a text or a list of texts (token arrays are not accepted)")
    model: str = Field(description="the serving model's name (see /v1/stats and /v1/models), or `clipsearch`")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="must equal the model's dimension when given")
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts_only(cls, value: Any) -> Any:
        # OpenAI also takes token arrays; CLIP's tokens are not OpenAI's, so say so once, not per element.
        if isinstance(value, list) and any(not isinstance(item, str) for item in value):
            raise ValueError("input must be a text or a list of texts; token arrays are not accepted here")
        return value


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "clipsearch"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage
