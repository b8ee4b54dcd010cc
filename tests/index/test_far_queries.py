"""Queries far from the stored vectors (CLIP text among images): wider search, exact search, recall self-check."""

from __future__ import annotations

import numpy as np
import pytest

from index.ann import IndexSpec, IndexType
from index.store import SqliteFaissStore
from index.types import NewItem

DIM = 32
N = 2000
# A narrow graph searched narrowly: in-distribution queries still find their
# neighbours, far ones miss about a fifth of their true top 10 (measured).
NARROW = IndexSpec(type=IndexType.HNSW, hnsw_m=8, hnsw_ef_search=16, far_query_effort=1)
WIDER = IndexSpec(type=IndexType.HNSW, hnsw_m=8, hnsw_ef_search=16, far_query_effort=8)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, DIM))
    return unit(centres[rng.integers(0, 100, N)] + 0.3 * rng.normal(size=(N, DIM)))


@pytest.fixture(scope="module")
def far_queries() -> np.ndarray:
    """Random directions: each one's best match scores far below a stored vector's nearest neighbour."""
    return unit(np.random.default_rng(5).normal(size=(100, DIM)))


def open_store(path, spec: IndexSpec, vectors: np.ndarray) -> SqliteFaissStore:
    store = SqliteFaissStore(path, DIM, "m", spec)
    store.upsert([NewItem(v, f"v{i}") for i, v in enumerate(vectors)])
    store.wait_for_index()
    return store


def true_top_10(vectors: np.ndarray, queries: np.ndarray) -> list[set[str]]:
    return [{f"v{i}" for i in np.argsort(-(vectors @ q))[:10]} for q in queries]


def recall(store: SqliteFaissStore, queries: np.ndarray, truth: list[set[str]], *, exact: bool = False) -> float:
    found = store.search_many(queries, 10, exact=exact)
    return float(np.mean([len({h.id for h in hits} & t) / 10 for hits, t in zip(found, truth, strict=True)]))


def test_a_query_far_from_the_data_is_searched_wider_and_finds_its_true_top_10(tmp_path, vectors, far_queries):
    truth = true_top_10(vectors, far_queries)
    narrow = open_store(tmp_path / "narrow", NARROW, vectors)
    wider = open_store(tmp_path / "wider", WIDER, vectors)
    assert recall(narrow, far_queries, truth) < 0.85
    assert recall(wider, far_queries, truth) >= 0.98
    status = wider.index_status()
    assert (status.searches, status.far_searches) == (100, 100)


def test_queries_like_the_data_are_not_searched_wider(tmp_path, vectors):
    store = open_store(tmp_path, WIDER, vectors)
    near = unit(vectors[:100] + 0.02 * np.random.default_rng(1).normal(size=(100, DIM)))
    assert recall(store, near, true_top_10(vectors, near)) >= 0.99
    status = store.index_status()
    assert (status.searches, status.far_searches) == (100, 0)
    # The threshold is calibrated on the stored vectors' own nearest neighbours.
    assert status.far_below is not None and 0.5 < status.far_below < 1.0


def test_an_exact_search_gives_the_true_top_10_where_the_ann_index_misses(tmp_path, vectors, far_queries):
    store = open_store(tmp_path, NARROW, vectors)
    truth = true_top_10(vectors, far_queries)
    assert recall(store, far_queries, truth, exact=True) == 1.0
    assert store.index_status().searches == 0  # exact searches never touch the ANN index
    assert [h.id for h in store.search(far_queries[0], 10, exact=True)] == [
        f"v{i}" for i in np.argsort(-(vectors @ far_queries[0]))[:10]
    ]


def test_the_recall_self_check_measures_recent_queries_against_exhaustive_search(tmp_path, vectors, far_queries):
    store = open_store(tmp_path, NARROW, vectors)
    assert store.check_recall() is None  # no query yet: nothing to measure
    queries = far_queries[:16]
    measured_by_hand = recall(store, queries, true_top_10(vectors, queries))
    check = store.check_recall(queries=16, k=10)
    assert check is not None
    assert (check.k, check.queries) == (10, 16)
    assert check.recall == pytest.approx(measured_by_hand)
    assert check.recall < 0.9
    status = store.index_status()
    assert status.recall == check
    assert status.searches == 16  # the check's own searches are not counted as searches


def test_a_flat_store_reports_exact_search_and_no_recall_to_check(tmp_path, vectors):
    store = open_store(tmp_path, IndexSpec(type=IndexType.FLAT), vectors)
    store.search(vectors[0], 10)
    status = store.index_status()
    assert (status.type, status.ef_search, status.nprobe, status.recall) == ("flat", None, None, None)
    assert store.check_recall() is None


def test_the_status_names_the_serving_index_and_its_breadth(tmp_path, vectors):
    hnsw = open_store(tmp_path / "hnsw", WIDER, vectors).index_status()
    assert (hnsw.type, hnsw.ef_search, hnsw.nprobe, hnsw.far_query_effort) == ("hnsw", 16, None, 8)
    ivf = open_store(tmp_path / "ivf", IndexSpec(type=IndexType.IVF, ivf_nprobe=4), vectors).index_status()
    assert (ivf.type, ivf.ef_search, ivf.nprobe) == ("ivf", None, 4)


def test_far_queries_search_16_times_wider_in_a_graph_and_twice_as_wide_in_lists_unless_configured():
    assert IndexSpec().far_effort(IndexType.HNSW) == 16
    assert IndexSpec().far_effort(IndexType.IVF) == 2
    assert IndexSpec(far_query_effort=1).far_effort(IndexType.HNSW) == 1


def test_a_reloaded_index_still_tells_far_queries_from_near_ones(tmp_path, vectors, far_queries):
    open_store(tmp_path, WIDER, vectors).close()
    reopened = SqliteFaissStore(tmp_path, DIM, "m", WIDER)  # loads the saved index: no rebuild
    reopened.search_many(far_queries[:10], 10)
    reopened.search_many(vectors[:10], 10)
    assert reopened.index_status().far_searches == 10
