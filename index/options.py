"""The index settings' closed vocabularies, importable without faiss.

The command line lists them in `clipsearch serve --help`, which must start
without importing the index's heavy dependencies.
"""

from __future__ import annotations

from enum import StrEnum


class IndexType(StrEnum):
    AUTO = "auto"
    FLAT = "flat"
    HNSW = "hnsw"
    IVF = "ivf"


class Encoding(StrEnum):
    """How an ANN index stores vectors: full float32, 8-bit scalar quantised, or product quantised."""

    FLAT = "flat"
    SQ8 = "sq8"
    PQ = "pq"


class StoreBackend(StrEnum):
    """Where the vectors live: SQLite + FAISS in the data directory, or a Milvus server or cluster."""

    SQLITE = "sqlite"
    MILVUS = "milvus"
