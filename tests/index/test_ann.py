from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

import index.store as store_module  # build_ann is patched where the store looks it up
from index.ann import ANN_FILE, Encoding, IndexSpec, IndexType, build_ann
from index.errors import StorageUnavailableError
from index.store import SqliteFaissStore
from index.types import FieldFilter, NewItem

DIM = 32
N = 2000


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, DIM))
    points = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(N)


def open_store(path, spec: IndexSpec, vectors: np.ndarray | None = None) -> SqliteFaissStore:
    store = SqliteFaissStore(path, DIM, "m", spec)
    if vectors is not None:
        store.upsert([NewItem(v, f"v{i}", {"parity": i % 2}) for i, v in enumerate(vectors)])
    store.wait_for_index()
    return store


ANN_SPECS = [
    IndexSpec(type=IndexType.HNSW),
    IndexSpec(type=IndexType.HNSW, encoding=Encoding.SQ8),
    IndexSpec(type=IndexType.IVF),
    IndexSpec(type=IndexType.IVF, encoding=Encoding.SQ8),
    IndexSpec(type=IndexType.IVF, encoding=Encoding.PQ, pq_bytes=8),  # PQ training is slow on 2 cores
]


@pytest.mark.parametrize("spec", ANN_SPECS, ids=lambda s: f"{s.type}-{s.encoding}")
def test_every_index_type_returns_the_same_top_1_as_flat(tmp_path, vectors, spec):
    flat = open_store(tmp_path / "flat", IndexSpec(type=IndexType.FLAT), vectors)
    ann = open_store(tmp_path / "ann", spec, vectors)
    assert ann.index_type == spec.type
    # Queries near stored vectors, so the true top-1 is clear of ties.
    noise = 0.02 * np.random.default_rng(1).normal(size=(50, DIM)).astype(np.float32)
    queries = vectors[:50] + noise
    same = [flat.search(q, 1)[0].id == ann.search(q, 1)[0].id for q in queries]
    assert np.mean(same) >= (0.9 if spec.encoding is Encoding.PQ else 1.0)


@pytest.mark.parametrize("spec", ANN_SPECS[:1] + ANN_SPECS[2:3], ids=["hnsw", "ivf"])
def test_deletes_upserts_and_new_items_are_seen_at_once_by_an_ann_index(tmp_path, vectors, spec):
    store = open_store(tmp_path, spec, vectors)
    query = vectors[7]
    assert store.search(query, 1)[0].id == "v7"
    store.delete("v7")
    assert "v7" not in {h.id for h in store.search(query, 10)}
    store.upsert([NewItem(query, "new")])  # after the snapshot: found through the exact delta
    assert store.search(query, 1)[0].id == "new"
    store.upsert([NewItem(vectors[9], "new")])  # the upsert moves it
    assert store.search(query, 1)[0].id != "new"
    assert store.search(vectors[9], 1)[0].id in {"new", "v9"}
    assert store.index_type == spec.type


def test_filters_give_the_exact_top_k_with_an_ann_index(tmp_path, vectors):
    store = open_store(tmp_path, IndexSpec(type=IndexType.HNSW), vectors)
    query = vectors[3]
    hits = store.search(query, 5, filters=[FieldFilter("parity", (0,))])
    odd_out = vectors[0::2] @ query
    expected = [f"v{2 * i}" for i in np.argsort(-odd_out)[:5]]
    assert [h.id for h in hits] == expected


def test_auto_is_flat_below_the_threshold_and_ivf_above(tmp_path, vectors):
    store = open_store(tmp_path, IndexSpec(auto_threshold=1000), vectors[:500])
    assert store.index_type == "flat"
    store.upsert([NewItem(v, f"more{i}") for i, v in enumerate(vectors[500:1500])])
    store.wait_for_index()
    assert store.index_type == "ivf"


def test_a_store_saved_with_an_hnsw_index_under_auto_rebuilds_it_as_ivf(tmp_path, vectors):
    open_store(tmp_path, IndexSpec(type=IndexType.HNSW), vectors).close()
    store = open_store(tmp_path, IndexSpec(auto_threshold=1000), None)
    assert store.index_type == "ivf"
    assert store.search(vectors[7], 1)[0].id == "v7"


def test_a_saved_ann_index_is_reloaded_on_open_without_a_rebuild(tmp_path, vectors):
    spec = IndexSpec(type=IndexType.HNSW)
    open_store(tmp_path, spec, vectors).close()
    again = SqliteFaissStore(tmp_path, DIM, "m", spec)
    assert again.index_type == "hnsw"
    assert again._builder is None
    assert again.search(vectors[5], 1)[0].id == "v5"


def test_searches_are_served_exactly_while_an_ann_index_builds(tmp_path, vectors, monkeypatch):
    release = threading.Event()

    def slow_build(*args):
        release.wait(10)
        return build_ann(*args)

    monkeypatch.setattr(store_module, "build_ann", slow_build)
    store = SqliteFaissStore(tmp_path, DIM, "m", IndexSpec(type=IndexType.HNSW))
    store.upsert([NewItem(v, f"v{i}") for i, v in enumerate(vectors)])
    assert store.index_type == "flat"  # still building
    assert store.search(vectors[11], 1)[0].id == "v11"
    release.set()
    store.wait_for_index()
    assert store.index_type == "hnsw"


def test_a_second_process_cannot_open_a_directory_in_use(tmp_path):
    first = SqliteFaissStore(tmp_path, DIM, "m")
    with pytest.raises(StorageUnavailableError, match="in use by another process"):
        SqliteFaissStore(tmp_path, DIM, "m")
    first.close()
    SqliteFaissStore(tmp_path, DIM, "m").close()


def test_a_saved_index_of_another_kind_than_its_description_says_is_rebuilt_not_served(tmp_path, vectors, caplog):
    store = open_store(tmp_path, IndexSpec(type=IndexType.HNSW), vectors)
    store.close()
    # What a power cut between the two renames of a save that changed the kind leaves behind.
    ivf = build_ann(IndexSpec(type=IndexType.IVF), IndexType.IVF, vectors, np.arange(1, N + 1, dtype=np.int64))
    faiss.write_index(ivf, str(tmp_path / ANN_FILE))
    with caplog.at_level("WARNING", logger="index.ann"):
        store = open_store(tmp_path, IndexSpec(type=IndexType.HNSW))
    assert "is not the hnsw its description says" in caplog.text
    assert store.index_type == "hnsw"
    assert store.search(vectors[5], 1)[0].id == "v5"
    store.close()
