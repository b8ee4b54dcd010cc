"""Stores for the contract tests: each test runs against SQLite + FAISS and against a real Milvus.

A test opens "its" store with `open_store`: a data directory of its own, or a
Milvus collection emptied for it (creating a collection takes Milvus seconds,
so collections are kept for the session and emptied, keyed by what the test
first opens). Opening again in the same test opens the same place, as
reopening a data directory does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.milvus_server import empty_collections
from index.ann import IndexSpec
from index.milvus import MilvusStore
from index.store import SqliteFaissStore
from index.types import VectorStore

BACKENDS = ["sqlite", "milvus"]
StoreOpener = Callable[..., VectorStore]


def opener(backend: str, request: pytest.FixtureRequest, root: Path) -> Iterator[StoreOpener]:
    """`open_store(dim, model, spec)` for one test, closing what it opened at the end."""
    opened: list[VectorStore] = []
    place: list[str] = []

    def open_store(dim: int, model: str = "test-model", spec: IndexSpec | None = None) -> VectorStore:
        store: VectorStore
        if backend == "sqlite":
            store = SqliteFaissStore(root / "data", dim, model, spec)
        else:
            server = request.getfixturevalue("milvus")
            if not place:
                kind = spec.type if spec else "auto"
                place.append(f"contract_{dim}_{kind}_{hashlib.sha256(model.encode()).hexdigest()[:8]}")
                empty_collections(server.uri, place[0])
            store = MilvusStore(server.uri, dim, model, files_dir=root / "files", collection=place[0], spec=spec)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    yield from opener(backend, request, tmp_path)
