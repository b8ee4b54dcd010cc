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

import faiss
import numpy as np

# Re-exported: the vocabularies live in index.options, which imports without faiss.
from index.options import Encoding as Encoding
from index.options import IndexType as IndexType

# A graph walk from a query far from every stored vector needs a much wider
# search than a list scan does: at 1M, text queries among clustered vectors found
# 0.98 of their true top 10 with HNSW at efSearch 96 x 16, and 1.00 with IVF at
# nprobe 32 x 2 (docs/benchmarks.md §7).
FAR_EFFORT: dict[IndexType, int] = {IndexType.HNSW: 16, IndexType.IVF: 2}


@dataclass(frozen=True)
class IndexSpec:
    """The configured index; `auto` is flat below `auto_threshold` items and IVF above.

    IVF rather than HNSW: at 1M clustered vectors both find the true top 10 of
    queries like the data, but for text queries among image-like vectors HNSW
    (efSearch 96) found 0.43 of it where IVF (nprobe 32) found 0.98, and IVF
    built 6x faster (docs/benchmarks.md §7).
    """

    type: IndexType = IndexType.AUTO
    encoding: Encoding = Encoding.FLAT
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 96
    ivf_nlist: int | None = None  # None: about 4·√n lists (fewer for small collections)
    ivf_nprobe: int = 32
    pq_bytes: int = 64  # bytes per vector with the PQ encoding
    auto_threshold: int = 100_000
    # efSearch / nprobe multiplier for a query far from the data (see `far_threshold`); 1: off;
    # None: what measured enough at 1M (docs/benchmarks.md §7), FAR_EFFORT by index type.
    far_query_effort: int | None = None

    def far_effort(self, kind: IndexType) -> int:
        """The breadth multiplier for far queries on an index of `kind`."""
        return self.far_query_effort if self.far_query_effort is not None else FAR_EFFORT.get(kind, 1)

    def resolve(self, count: int) -> IndexType:
        """The index type to use for a collection of `count` items."""
        if self.type is not IndexType.AUTO:
            return self.type
        return IndexType.IVF if count >= self.auto_threshold else IndexType.FLAT

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


def search_parameters(
    spec: IndexSpec, kind: IndexType, exclude: np.ndarray, *, effort: int = 1
) -> faiss.SearchParameters:
    """Search-time knobs of an ANN index, `effort` times the configured breadth, leaving out the `exclude`d seqs."""
    params: faiss.SearchParameters
    if kind is IndexType.HNSW:
        params = faiss.SearchParametersHNSW()
        params.efSearch = spec.hnsw_ef_search * effort
    else:
        params = faiss.SearchParametersIVF()
        params.nprobe = spec.ivf_nprobe * effort  # FAISS caps it at the number of lists
    if len(exclude):
        params.sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(exclude))
    return params


def search_ann(
    spec: IndexSpec,
    kind: IndexType,
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    far_below: float,
    exclude: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, seqs) of each query's top `k` in an ANN index (seq -1: none), and how many queries were far.

    A query whose best match scores below `far_below` (see `far_threshold`) is
    searched again with `spec.far_effort(kind)` times the configured breadth.
    """
    scores, seqs = index.search(queries, k, params=search_parameters(spec, kind, exclude))
    effort = spec.far_effort(kind)
    if effort <= 1:
        return scores, seqs, 0
    far = np.flatnonzero((seqs[:, 0] < 0) | (scores[:, 0] < far_below))
    if len(far):
        params = search_parameters(spec, kind, exclude, effort=effort)
        scores[far], seqs[far] = index.search(queries[far], k, params=params)
    return scores, seqs, len(far)


def far_threshold(spec: IndexSpec, kind: IndexType, index: faiss.Index, sample: np.ndarray) -> float:
    """The best-match score below which a query counts as far from the data.

    It is the 1st percentile, over `sample` (stored vectors), of each vector's
    best match other than itself. A graph or list search is tuned for queries
    like the data, whose best matches score like that; a CLIP text query sits
    apart from the image vectors (the modality gap), scores far lower, and
    needs a wider search to find its true top k (docs/benchmarks.md, cross-modal).
    """
    if len(sample) == 0 or index.ntotal < 2:
        return -1.0  # nothing to calibrate on: no query counts as far
    scores, _ = index.search(sample, 2, params=search_parameters(spec, kind, np.empty(0, dtype=np.int64)))
    return float(np.percentile(scores[:, 1], 1))


def exhaustive_search(index: faiss.Index, kind: IndexType, queries: np.ndarray, k: int) -> np.ndarray:
    """The seqs of each query's true top `k` among the vectors an ANN index holds (its own codes, every one compared).

    The reference the recall self-check measures the index's searches against.
    """
    wrapped = faiss.downcast_index(index)
    inner = faiss.downcast_index(wrapped.index)
    if kind is IndexType.HNSW:
        _, rows = faiss.downcast_index(inner.storage).search(queries, k)
        id_map = faiss.vector_to_array(wrapped.id_map)
        return np.where(rows >= 0, id_map[np.maximum(rows, 0)], -1)
    params = faiss.SearchParametersIVF()
    params.nprobe = inner.nlist
    _, seqs = index.search(queries, k, params=params)
    return np.asarray(seqs)


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
