"""Checks of request input that need the settings: sizes, counts, JSON form fields."""

from __future__ import annotations

import json
from typing import Any

from fastapi import UploadFile
from pydantic import TypeAdapter, ValidationError

from index.errors import InvalidItemError
from index.metadata import to_json, validate_metadata
from index.types import FieldFilter
from models.encoder import Encoder
from service.errors import ApiError
from service.schemas import Filter, to_field_filters
from service.settings import LimitSettings

_FILTER_ADAPTER: TypeAdapter[Filter] = TypeAdapter(Filter)


async def read_uploads(files: list[UploadFile], limits: LimitSettings) -> list[tuple[str, bytes]]:
    """(name, bytes) of each upload; 413 for a file over the size limit, 400 for too many files."""
    if not files:
        raise ApiError(400, "invalid_input", "no image file was sent")
    if len(files) > limits.max_files:
        raise ApiError(400, "too_many_files", f"{len(files)} files sent; at most {limits.max_files} per request")
    uploads = []
    for i, upload in enumerate(files):
        name = upload.filename or f"file {i + 1}"
        data = await upload.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise ApiError(413, "file_too_large", f"{name} is larger than the limit of {limits.max_upload_bytes} bytes")
        uploads.append((name, data))
    return uploads


def check_text(text: str, what: str, limits: LimitSettings) -> str:
    if not text.strip():
        raise ApiError(422, "validation_error", f"{what} is blank")
    if len(text) > limits.max_text_chars:
        raise ApiError(
            422, "validation_error", f"{what} is {len(text)} characters long; the limit is {limits.max_text_chars}"
        )
    return text


def check_k(k: int, limits: LimitSettings) -> int:
    if k < 1 or k > limits.max_k:
        raise ApiError(422, "validation_error", f"k must be between 1 and {limits.max_k}, not {k}")
    return k


def check_metadata(metadata: Any, what: str, limits: LimitSettings) -> dict[str, Any]:
    """The metadata, if the store would take it (index/metadata.py's rule) and it is within the size limit."""
    if not isinstance(metadata, dict):
        raise ApiError(422, "validation_error", f"{what} must be a JSON object")
    try:
        # Checked before the model runs; the store checks again at its edge.
        validate_metadata(metadata)
        size = len(to_json(metadata).encode())
    except InvalidItemError as exc:
        raise ApiError(422, "validation_error", f"{what}: {exc}") from None
    if size > limits.max_metadata_bytes:
        raise ApiError(
            413, "metadata_too_large", f"{what} is {size} bytes as JSON; the limit is {limits.max_metadata_bytes}"
        )
    return metadata


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (numbers must be finite)")


def parse_json_field(raw: str, what: str) -> Any:
    try:
        # Python's json reads NaN and Infinity, which are not JSON and which SQLite cannot read back.
        return json.loads(raw, parse_constant=_no_constants)
    except ValueError as exc:  # json.JSONDecodeError is one
        raise ApiError(422, "validation_error", f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(422, "validation_error", f"{what} is nested too deeply") from None


def parse_filter(raw: str | None) -> list[FieldFilter]:
    """A filter sent as a JSON string in a form field or query parameter."""
    if raw is None or not raw.strip():
        return []
    try:
        return to_field_filters(_FILTER_ADAPTER.validate_python(parse_json_field(raw, "filter")))
    except ValidationError as exc:
        raise ApiError(422, "validation_error", f"filter is not valid: {exc.errors()[0]['msg']}") from None


async def check_context(encoder: Encoder, texts: list[str], *, truncate: bool, what: str) -> list[bool]:
    """Whether each text is cut to the model's context; with truncate=False a text that would be is a 422."""
    cut = await encoder.truncated(texts)
    if not truncate and any(cut):
        i = cut.index(True)
        needed = encoder.towers.text.tokens_needed([texts[i]])[0]
        raise ApiError(
            422,
            "text_too_long",
            f"{what} needs {needed} tokens; the model reads at most {encoder.towers.text.context_length} "
            "(send truncate=true to embed only its start)",
        )
    return cut
