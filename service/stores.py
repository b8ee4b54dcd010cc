"""Open the configured vector store: SQLite + FAISS in the data directory, or Milvus."""

from __future__ import annotations

from index.ann import IndexSpec
from index.options import StoreBackend
from index.store import SqliteFaissStore
from index.types import VectorStore
from service.settings import StoreSettings


def open_store(settings: StoreSettings, dim: int, model: str, spec: IndexSpec | None = None) -> VectorStore:
    """The store `settings` name, for `dim`-d vectors from `model` (`spec`: another index than the settings').

    Raises:
        StoreError: it cannot be opened (IncompatibleStoreError, StorageUnavailableError, StoreUnreachableError).
    """
    spec = spec or settings.index_spec()
    if settings.backend is StoreBackend.SQLITE:
        return SqliteFaissStore(settings.data_dir, dim, model, spec)
    # Imported here: pymilvus (and the pandas it loads) is only for those who use it.
    from index.milvus import MilvusStore

    return MilvusStore(
        settings.milvus_uri,
        dim,
        model,
        files_dir=settings.data_dir / "files",
        collection=settings.milvus_collection,
        token=settings.milvus_token.get_secret_value() if settings.milvus_token else None,
        spec=spec,
        consistency=settings.milvus_consistency,
        timeout_s=settings.milvus_timeout_s,
    )


def describe(settings: StoreSettings) -> str:
    """Where the store lives, for log lines."""
    if settings.backend is StoreBackend.SQLITE:
        return str(settings.data_dir)
    return f"Milvus at {settings.milvus_uri}"
