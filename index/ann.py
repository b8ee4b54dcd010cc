"""Approximate (ANN) FAISS indexes and how to choose one.

An ANN index is built over a snapshot of the collection: the set of `seq`s it
holds. Every write gives an item a new `seq` (an upsert deletes the old row), so
the snapshot's relation to the live collection is two sets: `stale` (in the
snapshot, no longer live: excluded from ANN results) and `delta` (live, not in
the snapshot: searched exactly beside it). See docs/design.md.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from index.directory import replace_durably

# Re-exported: the vocabularies live in index.options, which imports without faiss.
from index.options import Encoding as Encoding
from index.options import IndexType as IndexType

log = logging.getLogger(__name__)

ANN_FILE = "ann.faiss"

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


def save_ann(directory: Path, index: faiss.Index, kind: IndexType, encoding: Encoding) -> None:
    """Save an index built by build_ann in `directory`, with a description of how it was built.

    Each file is replaced durably (index.directory.replace_durably), so a power
    cut leaves the old file or the new one, whole. The description goes last: a
    cut between the two leaves the new index with the old description, which
    load_ann notices (it checks the loaded index's own kind).
    Raises OSError or RuntimeError (FAISS) when the files cannot be written.
    """
    replace_durably(directory / ANN_FILE, lambda tmp: faiss.write_index(index, str(tmp)))
    description = json.dumps({"kind": str(kind), "encoding": str(encoding)})
    replace_durably(directory / (ANN_FILE + ".json"), lambda tmp: tmp.write_text(description))


def load_ann(directory: Path, kind: IndexType, encoding: Encoding) -> faiss.Index | None:
    """The index save_ann saved in `directory`, if it is a `kind` index in `encoding`; None (logged) if not."""
    path = directory / ANN_FILE
    if not path.exists():
        return None
    try:
        meta = json.loads((directory / (ANN_FILE + ".json")).read_text())
        if meta["kind"] != kind or meta["encoding"] != encoding:
            return None  # built with other settings: rebuild
        index = faiss.read_index(str(path))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("ignoring the saved ANN index (%s); it will be rebuilt", exc)
        return None
    if index_kind(index) is not kind:
        # The description and the index come from different saves (a cut between the renames).
        log.warning("the saved ANN index is not the %s its description says; it will be rebuilt", kind)
        return None
    return index


def flat_index(dim: int) -> faiss.IndexIDMap2:
    """An exact inner-product index over `dim`-d vectors, under ids of one's choosing (seqs)."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


@dataclass
class LiveAnn:
    """An ANN index over a snapshot of the collection, kept current between builds.

    `stale`: seqs in the snapshot no longer live (excluded from its results);
    `delta`: live vectors written since the snapshot, searched exactly beside it.
    Not thread-safe: its owner serialises `record` and searches.
    """

    index: faiss.Index
    kind: IndexType
    snapshot: np.ndarray  # sorted seqs in `index`
    stale: set[int]
    delta: faiss.IndexIDMap2
    delta_seqs: set[int] = field(default_factory=set)
    far_below: float = -1.0  # queries whose best match scores less search wider (far_threshold)

    @classmethod
    def over(
        cls, index: faiss.Index, kind: IndexType, exact: faiss.Index, live: np.ndarray, far_below: float
    ) -> LiveAnn:
        """`index` (built by build_ann) brought up to the `live` seqs (sorted), whose vectors `exact` holds."""
        snapshot = ann_seqs(index)
        delta_seqs = np.setdiff1d(live, snapshot, assume_unique=True)
        delta = flat_index(exact.d)
        if len(delta_seqs):
            delta.add_with_ids(exact.reconstruct_batch(delta_seqs), delta_seqs)
        stale = np.setdiff1d(snapshot, live, assume_unique=True)
        return cls(index, kind, snapshot, set(stale.tolist()), delta, set(delta_seqs.tolist()), far_below)

    def holds(self, seq: int) -> bool:
        """Whether `seq` is in the snapshot."""
        i = int(np.searchsorted(self.snapshot, seq))
        return i < len(self.snapshot) and int(self.snapshot[i]) == seq

    def changed_share(self) -> float:
        """How much of the collection changed since the snapshot, as a share of the snapshot's size."""
        return (len(self.stale) + len(self.delta_seqs)) / max(len(self.snapshot), 1)

    def record(self, added: np.ndarray, vectors: np.ndarray, removed: np.ndarray) -> None:
        """Take in a committed write: seqs `removed`, and `added` with their `vectors`."""
        gone_from_delta = [s for s in removed.tolist() if not self.holds(s)]
        self.stale.update(s for s in removed.tolist() if self.holds(s))
        if gone_from_delta:
            self.delta.remove_ids(np.asarray(gone_from_delta, dtype=np.int64))
            self.delta_seqs.difference_update(gone_from_delta)
        if len(added):
            self.delta.add_with_ids(vectors, added)
            self.delta_seqs.update(added.tolist())
