"""Value types and the storage Protocol shared by every vector-store backend."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from index.errors import InvalidItemError

Scalar = str | int | float | bool
MAX_ID_LENGTH = 128
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")
Metadata = dict[str, Any]


@dataclass(frozen=True)
class NewItem:
    """An item to store: `id` None means the store generates one."""

    vector: np.ndarray
    id: str | None = None
    metadata: Metadata = field(default_factory=dict)
    thumbnail: bytes | None = None  # a small JPEG, kept beside the item
    original: bytes | None = None  # the uploaded file, where the service keeps originals
    caption_vector: np.ndarray | None = None  # the text embedding of the item's caption, if it has one


@dataclass(frozen=True)
class Item:
    id: str
    metadata: Metadata
    created_at: float


class VectorField(StrEnum):
    """Which of an item's vectors a search compares the query with."""

    IMAGE = "image"
    CAPTION = "caption"


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: Metadata
    matched: VectorField = VectorField.IMAGE  # the field whose vector gave `score`


@dataclass(frozen=True)
class FieldFilter:
    """Metadata `field` (dots reach into nested objects) equals one of `values`."""

    field: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class RecallCheck:
    """What the last recall self-check measured: the ANN index's recall@k against exhaustive search."""

    recall: float
    k: int
    queries: int  # recent queries it was measured on
    measured_at: float  # Unix time


@dataclass(frozen=True)
class IndexStatus:
    """The serving index and how it searches (`type` flat: exact, the rest None)."""

    type: str
    ef_search: int | None = None  # HNSW search breadth
    nprobe: int | None = None  # IVF lists searched
    far_query_effort: int | None = None  # breadth multiplier for queries far from the data
    far_below: float | None = None  # the best-match score under which a query counts as far
    searches: int = 0  # query vectors the ANN index answered since the store opened
    far_searches: int = 0  # of which searched wider
    recall: RecallCheck | None = None


class VectorStore(Protocol):
    """A durable store of unit vectors with ids and metadata, searched by cosine similarity."""

    @property
    def dim(self) -> int: ...

    @property
    def index_type(self) -> str: ...

    def count(self) -> int: ...

    def upsert(self, items: Sequence[NewItem]) -> list[Item]:
        """Store all items atomically (replacing existing ids); durable once it returns."""
        ...

    def get(self, item_id: str) -> Item: ...

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` that are stored."""
        ...

    def vector(self, item_id: str) -> np.ndarray: ...

    def thumbnail(self, item_id: str) -> bytes:
        """The item's JPEG thumbnail (ItemNotFoundError when it has none)."""
        ...

    def original(self, item_id: str) -> bytes:
        """The item's uploaded file (ItemNotFoundError when it was not kept)."""
        ...

    def page(self, offset: int, limit: int) -> list[Item]: ...

    def delete(self, item_id: str) -> None:
        """Remove an item; gone from searches and durable once it returns."""
        ...

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        filters: Sequence[FieldFilter] = (),
        min_score: float | None = None,
        exclude_id: str | None = None,
        fields: Sequence[VectorField] = (VectorField.IMAGE,),
        exact: bool = False,
    ) -> list[Hit]:
        """The k items most similar to `query` among those matching every filter, best first.

        With several `fields`, an item's score is the highest cosine similarity
        of the query to any of its vectors in those fields (items without a
        caption are compared by their image alone). `exact` compares the query
        with every stored vector even where an ANN index serves.
        """
        ...

    def search_many(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filters: Sequence[FieldFilter] = (),
        min_score: float | None = None,
        fields: Sequence[VectorField] = (VectorField.IMAGE,),
        exact: bool = False,
    ) -> list[list[Hit]]:
        """For each row of the (n, dim) `queries`, what `search` returns for it.

        One index call per field for all rows: many queries cost far less than
        as many single searches.
        """
        ...

    def index_status(self) -> IndexStatus:
        """The serving index's kind, search settings and last measured recall."""
        ...

    def check_recall(self, queries: int = 16, k: int = 10) -> RecallCheck | None:
        """Measure the ANN index's recall@k on recent queries (None: nothing to measure)."""
        ...

    def wait_for_index(self, timeout: float | None = None) -> None:
        """Block until the ANN index covers what is stored (for tools and benchmarks)."""
        ...

    def close(self) -> None: ...


def unit_vector(raw: np.ndarray, dim: int, what: str = "vector") -> np.ndarray:
    """`raw` scaled to unit length (inner products become cosines), or InvalidItemError saying why not."""
    vector = np.asarray(raw, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dim:
        raise InvalidItemError(f"{what} has {vector.shape[0]} dimensions; this store holds {dim}")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise InvalidItemError(f"{what} must be finite and non-zero")
    return np.ascontiguousarray(vector / norm)


def unit_queries(queries: np.ndarray, dim: int, k: int, fields: Sequence[VectorField]) -> np.ndarray:
    """The rows of an (n, dim) query matrix at unit length, after the checks every store makes on a search."""
    if not fields:
        raise InvalidItemError("fields names no vector field to search")
    matrix = np.asarray(queries, dtype=np.float32)
    if matrix.ndim != 2:
        raise InvalidItemError(f"queries have shape {matrix.shape}; expected (n, {dim})")
    if matrix.shape[1] != dim:
        raise InvalidItemError(f"query vectors have {matrix.shape[1]} dimensions; this store holds {dim}")
    if k < 1:
        raise InvalidItemError("k must be at least 1")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.isfinite(norms).all() or (norms == 0.0).any():
        raise InvalidItemError("query vectors must be finite and non-zero")
    return np.ascontiguousarray(matrix / norms)


def validate_id(item_id: str) -> str:
    """Ids are 1..128 ASCII characters: letters, digits and `._:@-`, starting with a letter or digit."""
    if len(item_id) > MAX_ID_LENGTH:
        raise InvalidItemError(f"id is {len(item_id)} characters long; the limit is {MAX_ID_LENGTH}")
    if not _ID_PATTERN.fullmatch(item_id):
        raise InvalidItemError(
            f"id {item_id!r} is not allowed: use ASCII letters, digits and . _ : @ - (starting with a letter or digit)"
        )
    return item_id
