"""store.search_many and index.batch.search_each: many queries at once give what one search each gives.

On both stores (tests/index/conftest.py), but for the SQLite store's own ANN delta.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.ann import IndexSpec, IndexType
from index.batch import SearchQuery, search_each
from index.errors import InvalidItemError
from index.store import SqliteFaissStore
from index.types import FieldFilter, Hit, NewItem, VectorField, VectorStore

DIM = 16


def rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(store: VectorStore, n: int = 300) -> None:
    vectors, captions = rows(n, 0), rows(n, 1)
    store.upsert(
        [
            NewItem(v, f"i{i}", {"parity": i % 2, "n": i}, caption_vector=c if i % 3 == 0 else None)
            for i, (v, c) in enumerate(zip(vectors, captions, strict=True))
        ]
    )


def filled(path: Path, spec: IndexSpec | None = None, n: int = 300) -> SqliteFaissStore:
    store = SqliteFaissStore(path, DIM, "m", spec)
    fill(store, n)
    store.wait_for_index()
    return store


def ranked(hits: list[Hit]) -> list[tuple[str, float, VectorField]]:
    return [(h.id, round(h.score, 5), h.matched) for h in hits]


@pytest.fixture
def store(open_store):
    s = open_store(DIM, "m")
    fill(s)
    return s


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"filters": [FieldFilter("parity", (1,))]},
        {"filters": [FieldFilter("n", (3, 4, 5, 6))]},
        {"min_score": 0.3},
        {"fields": [VectorField.CAPTION]},
        {"fields": [VectorField.IMAGE, VectorField.CAPTION], "filters": [FieldFilter("parity", (0,))]},
    ],
    ids=["plain", "filter", "filter-fewer-than-k", "min-score", "caption", "both-fields-filtered"],
)
def test_search_many_returns_for_each_row_what_search_returns(store, options):
    queries = rows(25, 7)  # many rows: FAISS takes its matrix (BLAS) path, one row its scan
    many = store.search_many(queries, 10, **options)
    single = [store.search(q, 10, **options) for q in queries]
    # The same items in the same order; the scores agree to float32 rounding (BLAS sums in another order).
    assert [[(h.id, h.matched) for h in hits] for hits in many] == [
        [(h.id, h.matched) for h in hits] for hits in single
    ]
    assert [[h.score for h in hits] for hits in many] == [
        pytest.approx([h.score for h in hits], abs=1e-6) for hits in single
    ]


def test_search_many_over_an_ann_index_with_recent_writes_matches_single_searches(tmp_path):
    store = filled(tmp_path, IndexSpec(type=IndexType.HNSW), n=600)
    assert store.index_type == IndexType.HNSW
    store.delete("i5")
    store.upsert([NewItem(rows(1, 9)[0], "fresh")])  # in the exact delta beside the ANN snapshot
    queries = np.vstack([rows(20, 8), rows(1, 9)])
    many = store.search_many(queries, 5)
    assert [ranked(hits) for hits in many] == [ranked(store.search(q, 5)) for q in queries]
    assert many[-1][0].id == "fresh" and all(h.id != "i5" for hits in many for h in hits)
    store.close()


def test_search_many_of_no_rows_is_empty_and_bad_rows_are_refused(store):
    assert store.search_many(np.empty((0, DIM), dtype=np.float32), 3) == []
    with pytest.raises(InvalidItemError, match="query vectors have 17 dimensions; this store holds 16"):
        store.search_many(np.ones((2, DIM + 1), dtype=np.float32), 3)
    with pytest.raises(InvalidItemError, match="non-zero"):
        store.search_many(np.vstack([rows(1, 0), np.zeros((1, DIM), dtype=np.float32)]), 3)
    with pytest.raises(InvalidItemError, match="k must be"):
        store.search_many(rows(2, 0), 0)


def test_search_each_answers_each_query_by_its_own_parameters_in_order(store):
    vectors = rows(6, 3)
    odd = (FieldFilter("parity", (1,)),)
    queries = [
        SearchQuery(vectors[0], 3),
        SearchQuery(vectors[1], 5, odd),
        SearchQuery(vectors[2], 3),
        SearchQuery(vectors[3], 4, min_score=0.2),
        SearchQuery(vectors[4], 2, fields=(VectorField.IMAGE, VectorField.CAPTION)),
        SearchQuery(vectors[5], 5, odd),
    ]
    expected = [store.search(q.vector, q.k, filters=q.filters, min_score=q.min_score, fields=q.fields) for q in queries]
    found = search_each(store, queries)
    assert [ranked(hits) for hits in found if isinstance(hits, list)] == [ranked(hits) for hits in expected]


def test_a_query_the_store_refuses_fails_alone(store):
    good = SearchQuery(rows(1, 3)[0], 3)
    bad = SearchQuery(rows(1, 4)[0], 3, (FieldFilter("no'quote", (1,)),))
    found = search_each(store, [good, bad, good])
    assert isinstance(found[1], InvalidItemError)
    assert found[0] == found[2] and isinstance(found[0], list) and len(found[0]) == 3
