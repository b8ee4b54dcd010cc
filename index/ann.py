"""Approximate (ANN) FAISS indexes and how to choose one.

An ANN index is built over a snapshot of the collection: the set of `seq`s it
holds. Every write gives an item a new `seq` (an upsert deletes the old row), so
the snapshot's relation to the live collection is two sets: `stale` (in the
snapshot, no longer live: excluded from ANN results) and `delta` (live, not in
the snapshot: searched exactly beside it). See docs/design.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import faiss
import numpy as np


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


@dataclass(frozen=True)
class IndexSpec:
    """The configured index; `auto` is flat below `auto_threshold` items and HNSW above."""

    type: IndexType = IndexType.AUTO
    encoding: Encoding = Encoding.FLAT
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 96
    ivf_nlist: int | None = None  # None: about 4·√n lists (fewer for small collections)
    ivf_nprobe: int = 32
    pq_bytes: int = 64  # bytes per vector with the PQ encoding
    auto_threshold: int = 100_000

    def resolve(self, count: int) -> IndexType:
        """The index type to use for a collection of `count` items."""
        if self.type is not IndexType.AUTO:
            return self.type
        return IndexType.HNSW if count >= self.auto_threshold else IndexType.FLAT

    def factory_string(self, kind: IndexType, dim: int, count: int) -> str:
        """The faiss.index_factory description of an ANN index of `kind` for `count` vectors."""
        if kind is IndexType.HNSW:
            if self.encoding is Encoding.PQ:
                return f"HNSW{self.hnsw_m}_PQ{self._pq_m(dim)}"
            return f"HNSW{self.hnsw_m},{self._code()}"
        if kind is IndexType.IVF:
            # k-means wants about 39 training points per list at least.
            nlist = self.ivf_nlist or max(1, min(int(4 * math.sqrt(count)), count // 39, 65536))
            nlist = min(nlist, max(count, 1))
            code = f"PQ{self._pq_m(dim)}" if self.encoding is Encoding.PQ else self._code()
            return f"IVF{nlist},{code}"
        raise ValueError(f"{kind} is not an ANN index type")

    def _code(self) -> str:
        return "SQ8" if self.encoding is Encoding.SQ8 else "Flat"

    def _pq_m(self, dim: int) -> int:
        m = min(self.pq_bytes, dim)
        while dim % m:  # PQ needs sub-vectors of equal length
            m -= 1
        return m


def build_ann(spec: IndexSpec, kind: IndexType, vectors: np.ndarray, seqs: np.ndarray) -> faiss.Index:
    """Train (where needed) and fill an ANN index over `vectors` keyed by `seqs`."""
    dim = vectors.shape[1]
    index = faiss.index_factory(dim, spec.factory_string(kind, dim, len(vectors)), faiss.METRIC_INNER_PRODUCT)
    if kind is IndexType.HNSW:
        faiss.downcast_index(index).hnsw.efConstruction = spec.hnsw_ef_construction
    if not index.is_trained:
        # k-means on a sample is as good as on everything and much faster.
        sample = vectors if len(vectors) <= 100_000 else vectors[np.random.default_rng(0).choice(len(vectors), 100_000)]
        index.train(sample)
    wrapped = faiss.IndexIDMap(index)
    wrapped.add_with_ids(vectors, seqs)
    return wrapped


def search_parameters(spec: IndexSpec, kind: IndexType, exclude: np.ndarray) -> faiss.SearchParameters:
    """Search-time knobs of an ANN index, leaving out the `exclude`d seqs."""
    params: faiss.SearchParameters
    if kind is IndexType.HNSW:
        params = faiss.SearchParametersHNSW()
        params.efSearch = spec.hnsw_ef_search
    else:
        params = faiss.SearchParametersIVF()
        params.nprobe = spec.ivf_nprobe
    if len(exclude):
        params.sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(exclude))
    return params


def ann_seqs(index: faiss.Index) -> np.ndarray:
    """The sorted seqs held by an ANN index built by build_ann."""
    return np.sort(faiss.vector_to_array(faiss.downcast_index(index).id_map))


def index_kind(index: faiss.Index) -> IndexType | None:
    """The kind of an index built by build_ann, read from the index itself (None: neither HNSW nor IVF)."""
    inner = faiss.downcast_index(faiss.downcast_index(index).index)
    if isinstance(inner, faiss.IndexHNSW):
        return IndexType.HNSW
    if isinstance(inner, faiss.IndexIVF):
        return IndexType.IVF
    return None
