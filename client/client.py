"""Client and AsyncClient: one method per API call, typed results, errors as ClipsearchError.

Both clients share the request specs below; each only sends them, so the two
stay the same API by construction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from service.schemas import (
    BatchSearchResponse,
    CaptionOut,
    CaptionResponse,
    ClassifyResponse,
    ItemOut,
    ItemsCreated,
    LabelOut,
    SearchHit,
    SearchResponse,
    StatsResponse,
)

T = TypeVar("T")
Image = Path | str | bytes | tuple[str, bytes]
DEFAULT_URL = "http://127.0.0.1:8000"


class ClipsearchError(Exception):
    """The service answered with an error: `status`, `code` and `message` say which."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    options: dict[str, Any] = field(default_factory=dict)


def _file(image: Image, field_name: str) -> tuple[str, tuple[str, bytes]]:
    if isinstance(image, tuple):
        return field_name, image
    if isinstance(image, bytes):
        return field_name, ("image", image)
    path = Path(image)
    return field_name, (path.name, path.read_bytes())


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            raise ClipsearchError(response.status_code, error["code"], error["message"])
        except (ValueError, KeyError, TypeError):
            raise ClipsearchError(response.status_code, "http_error", response.text) from None
    return response


def _hits(response: httpx.Response) -> list[SearchHit]:
    return SearchResponse.model_validate_json(response.content).results


class _Calls:
    """What each API call sends and how its answer is read."""

    @staticmethod
    def add_images(
        images: Sequence[Image],
        ids: Sequence[str] | None,
        metadata: Sequence[dict[str, Any]] | None,
        caption: bool,
    ) -> _Call[list[ItemOut]]:
        data: dict[str, Any] = {"caption": "true"} if caption else {}
        if ids is not None:
            data["ids"] = list(ids)
        if metadata is not None:
            data["metadata"] = [json.dumps(m) for m in metadata]
        files = [_file(image, "files") for image in images]
        return _Call(
            "POST",
            "/v1/images",
            lambda r: ItemsCreated.model_validate_json(r.content).items,
            {"files": files, "data": data},
        )

    @staticmethod
    def search_text(
        query: str,
        k: int,
        filter: dict[str, Any] | None,
        min_score: float | None,
        fields: Sequence[str] | None,
        rerank_top_k: int | None,
    ) -> _Call[list[SearchHit]]:
        body: dict[str, Any] = {"query": query, "k": k, "filter": filter, "min_score": min_score}
        if fields is not None:
            body["fields"] = list(fields)
        if rerank_top_k is not None:
            body["rerank"] = {"top_k": rerank_top_k}
        return _Call("POST", "/v1/search/text", _hits, {"json": body})

    @staticmethod
    def search_texts(
        queries: Sequence[str],
        k: int,
        filter: dict[str, Any] | None,
        min_score: float | None,
        fields: Sequence[str] | None,
    ) -> _Call[list[list[SearchHit]]]:
        body: dict[str, Any] = {"queries": list(queries), "k": k, "filter": filter, "min_score": min_score}
        if fields is not None:
            body["fields"] = list(fields)
        return _Call(
            "POST",
            "/v1/search/text/batch",
            lambda r: BatchSearchResponse.model_validate_json(r.content).results,
            {"json": body},
        )

    @staticmethod
    def caption(images: Sequence[Image], options: dict[str, Any]) -> _Call[list[CaptionOut]]:
        data = {name: str(value) for name, value in options.items() if value is not None}
        return _Call(
            "POST",
            "/v1/caption",
            lambda r: CaptionResponse.model_validate_json(r.content).captions,
            {"files": [_file(image, "files") for image in images], "data": data},
        )

    @staticmethod
    def search_image(image: Image, k: int, filter: dict[str, Any] | None) -> _Call[list[SearchHit]]:
        data: dict[str, Any] = {"k": str(k)}
        if filter is not None:
            data["filter"] = json.dumps(filter)
        return _Call("POST", "/v1/search/image", _hits, {"files": [_file(image, "file")], "data": data})

    @staticmethod
    def similar(item_id: str, k: int) -> _Call[list[SearchHit]]:
        return _Call("GET", f"/v1/images/{item_id}/similar", _hits, {"params": {"k": k}})

    @staticmethod
    def get(item_id: str) -> _Call[ItemOut]:
        return _Call("GET", f"/v1/images/{item_id}", lambda r: ItemOut.model_validate_json(r.content))

    @staticmethod
    def delete(item_id: str) -> _Call[None]:
        return _Call("DELETE", f"/v1/images/{item_id}", lambda r: None)

    @staticmethod
    def classify(image: Image, labels: Sequence[str], template: str | None) -> _Call[list[LabelOut]]:
        data: dict[str, Any] = {"labels": list(labels)}
        if template is not None:
            data["template"] = template
        return _Call(
            "POST",
            "/v1/classify",
            lambda r: ClassifyResponse.model_validate_json(r.content).labels,
            {"files": [_file(image, "file")], "data": data},
        )

    @staticmethod
    def stats() -> _Call[StatsResponse]:
        return _Call("GET", "/v1/stats", lambda r: StatsResponse.model_validate_json(r.content))


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """Synchronous client. Use as a context manager, or call close()."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 120) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    def _run(self, call: _Call[T]) -> T:
        return call.parse(_check(self._http.request(call.method, call.path, **call.options)))

    def add_images(
        self,
        images: Sequence[Image],
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
        caption: bool = False,
    ) -> list[ItemOut]:
        """Store images; `caption=True` writes a BLIP caption into each one's metadata."""
        return self._run(_Calls.add_images(images, ids, metadata, caption))

    def search_text(
        self,
        query: str,
        *,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        min_score: float | None = None,
        fields: Sequence[str] | None = None,
        rerank_top_k: int | None = None,
    ) -> list[SearchHit]:
        """`fields`: "image" and/or "caption"; `rerank_top_k`: reorder CLIP's top N by BLIP ITM."""
        return self._run(_Calls.search_text(query, k, filter, min_score, fields, rerank_top_k))

    def search_texts(
        self,
        queries: Sequence[str],
        *,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        min_score: float | None = None,
        fields: Sequence[str] | None = None,
    ) -> list[list[SearchHit]]:
        """Many text searches in one request: one list of hits per query, in order."""
        return self._run(_Calls.search_texts(queries, k, filter, min_score, fields))

    def caption(
        self,
        images: Sequence[Image],
        *,
        max_new_tokens: int | None = None,
        decoding: str | None = None,
        num_beams: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        prompt: str | None = None,
    ) -> list[CaptionOut]:
        """A BLIP caption for each image (the server needs --captioner)."""
        options = {
            "max_new_tokens": max_new_tokens,
            "decoding": decoding,
            "num_beams": num_beams,
            "temperature": temperature,
            "top_p": top_p,
            "prompt": prompt,
        }
        return self._run(_Calls.caption(images, options))

    def search_image(self, image: Image, *, k: int = 10, filter: dict[str, Any] | None = None) -> list[SearchHit]:
        return self._run(_Calls.search_image(image, k, filter))

    def similar(self, item_id: str, *, k: int = 10) -> list[SearchHit]:
        return self._run(_Calls.similar(item_id, k))

    def get(self, item_id: str) -> ItemOut:
        return self._run(_Calls.get(item_id))

    def delete(self, item_id: str) -> None:
        self._run(_Calls.delete(item_id))

    def classify(self, image: Image, labels: Sequence[str], *, template: str | None = None) -> list[LabelOut]:
        return self._run(_Calls.classify(image, labels, template))

    def stats(self) -> StatsResponse:
        return self._run(_Calls.stats())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """Asynchronous client with the same methods as Client. Use with `async with`."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 120) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    async def _run(self, call: _Call[T]) -> T:
        return call.parse(_check(await self._http.request(call.method, call.path, **call.options)))

    async def add_images(
        self,
        images: Sequence[Image],
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
        caption: bool = False,
    ) -> list[ItemOut]:
        """Store images; `caption=True` writes a BLIP caption into each one's metadata."""
        return await self._run(_Calls.add_images(images, ids, metadata, caption))

    async def search_text(
        self,
        query: str,
        *,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        min_score: float | None = None,
        fields: Sequence[str] | None = None,
        rerank_top_k: int | None = None,
    ) -> list[SearchHit]:
        """`fields`: "image" and/or "caption"; `rerank_top_k`: reorder CLIP's top N by BLIP ITM."""
        return await self._run(_Calls.search_text(query, k, filter, min_score, fields, rerank_top_k))

    async def search_texts(
        self,
        queries: Sequence[str],
        *,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        min_score: float | None = None,
        fields: Sequence[str] | None = None,
    ) -> list[list[SearchHit]]:
        """Many text searches in one request: one list of hits per query, in order."""
        return await self._run(_Calls.search_texts(queries, k, filter, min_score, fields))

    async def caption(
        self,
        images: Sequence[Image],
        *,
        max_new_tokens: int | None = None,
        decoding: str | None = None,
        num_beams: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        prompt: str | None = None,
    ) -> list[CaptionOut]:
        """A BLIP caption for each image (the server needs --captioner)."""
        options = {
            "max_new_tokens": max_new_tokens,
            "decoding": decoding,
            "num_beams": num_beams,
            "temperature": temperature,
            "top_p": top_p,
            "prompt": prompt,
        }
        return await self._run(_Calls.caption(images, options))

    async def search_image(self, image: Image, *, k: int = 10, filter: dict[str, Any] | None = None) -> list[SearchHit]:
        return await self._run(_Calls.search_image(image, k, filter))

    async def similar(self, item_id: str, *, k: int = 10) -> list[SearchHit]:
        return await self._run(_Calls.similar(item_id, k))

    async def get(self, item_id: str) -> ItemOut:
        return await self._run(_Calls.get(item_id))

    async def delete(self, item_id: str) -> None:
        await self._run(_Calls.delete(item_id))

    async def classify(self, image: Image, labels: Sequence[str], *, template: str | None = None) -> list[LabelOut]:
        return await self._run(_Calls.classify(image, labels, template))

    async def stats(self) -> StatsResponse:
        return await self._run(_Calls.stats())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
