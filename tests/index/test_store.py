from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.errors import IncompatibleStoreError, InvalidItemError, ItemNotFoundError
from index.store import SqliteFaissStore
from index.types import FieldFilter, NewItem, VectorField

DIM = 4


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteFaissStore(tmp_path, DIM, "test-model")
    yield s
    s.close()


def test_search_ranks_the_nearest_vector_first_with_cosine_scores(store):
    store.upsert([NewItem(unit(1, 0, 0, 0), "x"), NewItem(unit(0, 1, 0, 0), "y"), NewItem(unit(1, 1, 0, 0), "xy")])
    hits = store.search(unit(1, 0.1, 0, 0), 3)
    assert [h.id for h in hits] == ["x", "xy", "y"]
    assert hits[0].score == pytest.approx(float(unit(1, 0.1, 0, 0) @ unit(1, 0, 0, 0)), abs=1e-6)


def test_vectors_are_stored_normalised(store):
    store.upsert([NewItem(np.array([3, 4, 0, 0], dtype=np.float32), "a")])
    assert np.linalg.norm(store.vector("a")) == pytest.approx(1.0, abs=1e-6)
    assert store.search(unit(3, 4, 0, 0), 1)[0].score == pytest.approx(1.0, abs=1e-6)


def test_generated_ids_are_unique(store):
    items = store.upsert([NewItem(unit(1, 0, 0, 0)), NewItem(unit(0, 1, 0, 0))])
    assert len({i.id for i in items}) == 2
    assert store.count() == 2


def test_upsert_of_an_existing_id_replaces_vector_and_metadata(store):
    store.upsert([NewItem(unit(1, 0, 0, 0), "a", {"v": 1})])
    store.upsert([NewItem(unit(0, 1, 0, 0), "a", {"v": 2})])
    assert store.count() == 1
    assert store.get("a").metadata == {"v": 2}
    hits = store.search(unit(0, 1, 0, 0), 5)
    assert [(h.id, round(h.score, 5)) for h in hits] == [("a", 1.0)]


def test_delete_removes_the_item_from_search_at_once(store):
    store.upsert([NewItem(unit(1, 0, 0, 0), "a"), NewItem(unit(0, 1, 0, 0), "b")])
    store.delete("a")
    assert [h.id for h in store.search(unit(1, 0, 0, 0), 5)] == ["b"]
    with pytest.raises(ItemNotFoundError):
        store.get("a")


def test_deleting_an_unknown_id_raises_not_found(store):
    with pytest.raises(ItemNotFoundError, match="no item with id 'ghost'"):
        store.delete("ghost")


def test_filter_returns_the_true_top_k_among_matching_items(store):
    # 50 non-matching items sit closer to the query than any matching one:
    # post-filtering a short list would return nothing.
    rng = np.random.default_rng(0)
    near = [NewItem(unit(1, 0.01 * i, 0, 0), f"near{i}", {"album": "other"}) for i in range(50)]
    far = [NewItem(unit(0.2, 1, 0.1 * i, 0), f"far{i}", {"album": "mine"}) for i in range(5)]
    store.upsert(near + far)
    rng.shuffle(far)
    hits = store.search(unit(1, 0, 0, 0), 3, filters=[FieldFilter("album", ("mine",))])
    expected = sorted(far, key=lambda item: -float(unit(1, 0, 0, 0) @ (item.vector / np.linalg.norm(item.vector))))
    assert [h.id for h in hits] == [item.id for item in expected[:3]]


def test_filters_match_lists_of_values_nested_fields_and_numbers(store):
    store.upsert(
        [
            NewItem(unit(1, 0, 0, 0), "a", {"tag": "cat", "exif": {"camera": "x100"}, "year": 2020}),
            NewItem(unit(1, 0.1, 0, 0), "b", {"tag": "dog", "exif": {"camera": "x100"}, "year": 2021}),
            NewItem(unit(1, 0.2, 0, 0), "c", {"tag": "cow", "exif": {"camera": "z9"}, "year": 2021}),
        ]
    )
    query = unit(1, 0, 0, 0)
    assert [h.id for h in store.search(query, 5, filters=[FieldFilter("tag", ("cat", "cow"))])] == ["a", "c"]
    assert [h.id for h in store.search(query, 5, filters=[FieldFilter("exif.camera", ("x100",))])] == ["a", "b"]
    both = [FieldFilter("exif.camera", ("x100",)), FieldFilter("year", (2021,))]
    assert [h.id for h in store.search(query, 5, filters=both)] == ["b"]


def test_filter_on_an_unknown_field_matches_nothing(store):
    store.upsert([NewItem(unit(1, 0, 0, 0), "a", {"tag": "cat"})])
    assert store.search(unit(1, 0, 0, 0), 5, filters=[FieldFilter("colour", ("red",))]) == []


def test_filter_fields_with_odd_characters_are_refused(store):
    with pytest.raises(InvalidItemError, match="filter field"):
        store.search(unit(1, 0, 0, 0), 5, filters=[FieldFilter("a') OR 1=1 --", ("x",))])


def test_min_score_drops_weaker_hits(store):
    store.upsert([NewItem(unit(1, 0, 0, 0), "same"), NewItem(unit(0, 1, 0, 0), "orthogonal")])
    assert [h.id for h in store.search(unit(1, 0, 0, 0), 5, min_score=0.5)] == ["same"]


def test_exclude_id_leaves_the_item_itself_out(store):
    store.upsert([NewItem(unit(1, 0, 0, 0), "a"), NewItem(unit(1, 0.5, 0, 0), "b"), NewItem(unit(0, 1, 0, 0), "c")])
    assert [h.id for h in store.search(store.vector("a"), 2, exclude_id="a")] == ["b", "c"]


def test_items_survive_reopening_the_store(tmp_path):
    first = SqliteFaissStore(tmp_path, DIM, "m")
    first.upsert([NewItem(unit(1, 0, 0, 0), "a", {"k": "v"}), NewItem(unit(0, 1, 0, 0), "b")])
    first.delete("b")
    first.close()
    again = SqliteFaissStore(tmp_path, DIM, "m")
    assert again.count() == 1
    assert again.get("a").metadata == {"k": "v"}
    assert [h.id for h in again.search(unit(0, 1, 0, 0), 5)] == ["a"]
    again.close()


def test_reopening_with_another_dimension_is_refused(tmp_path):
    SqliteFaissStore(tmp_path, DIM, "small").close()
    with pytest.raises(IncompatibleStoreError, match="holds 4-d vectors from model 'small'"):
        SqliteFaissStore(tmp_path, 8, "big")
    SqliteFaissStore(tmp_path, DIM, "small").close()  # the refused open left nothing locked


@pytest.mark.parametrize("bad_id", ["../etc/passwd", "a/b", "", " space", "x" * 129, "-leading"])
def test_ids_with_path_characters_or_over_the_length_limit_are_refused(store, bad_id):
    with pytest.raises(InvalidItemError):
        store.upsert([NewItem(unit(1, 0, 0, 0), bad_id)])
    assert store.count() == 0


def test_a_rejected_batch_stores_nothing(store):
    with pytest.raises(InvalidItemError, match="more than once"):
        store.upsert([NewItem(unit(1, 0, 0, 0), "a"), NewItem(unit(0, 1, 0, 0), "a")])
    with pytest.raises(InvalidItemError, match="dimensions"):
        store.upsert([NewItem(unit(1, 0, 0, 0), "b"), NewItem(np.ones(3, dtype=np.float32), "c")])
    with pytest.raises(InvalidItemError, match="non-zero"):
        store.upsert([NewItem(np.zeros(DIM, dtype=np.float32), "d")])
    assert store.count() == 0


def test_list_pages_through_items_in_insertion_order(store):
    store.upsert([NewItem(unit(1, i, 0, 0), f"i{i}") for i in range(5)])
    assert [i.id for i in store.page(0, 2)] == ["i0", "i1"]
    assert [i.id for i in store.page(4, 2)] == ["i4"]


def test_searching_an_empty_store_returns_nothing(store):
    assert store.search(unit(1, 0, 0, 0), 10) == []


# --- caption vectors ---------------------------------------------------------------------------

IMAGE, CAPTION = VectorField.IMAGE, VectorField.CAPTION


def test_search_by_caption_ranks_items_by_their_caption_vector(store):
    store.upsert(
        [
            NewItem(unit(1, 0, 0, 0), "a", caption_vector=unit(0, 0, 1, 0)),
            NewItem(unit(0, 1, 0, 0), "b", caption_vector=unit(0, 0, 0, 1)),
            NewItem(unit(0, 0, 1, 0), "no-caption"),
        ]
    )
    hits = store.search(unit(0, 0, 1, 0), 5, fields=[CAPTION])
    assert [(h.id, h.matched) for h in hits] == [("a", CAPTION), ("b", CAPTION)]
    assert hits[0].score == pytest.approx(1.0, abs=1e-6)


def test_search_over_image_and_caption_scores_each_item_by_its_best_field(store):
    store.upsert(
        [
            NewItem(unit(1, 0, 0, 0), "image-match", caption_vector=unit(0, 1, 0, 0)),
            NewItem(unit(0, 0, 0, 1), "caption-match", caption_vector=unit(1, 0.2, 0, 0)),
            NewItem(unit(0, 0, 1, 0), "neither"),
        ]
    )
    hits = store.search(unit(1, 0, 0, 0), 3, fields=[IMAGE, CAPTION])
    assert [(h.id, h.matched) for h in hits] == [
        ("image-match", IMAGE),
        ("caption-match", CAPTION),
        ("neither", IMAGE),
    ]
    assert hits[1].score == pytest.approx(float(unit(1, 0.2, 0, 0)[0]), abs=1e-6)


def test_caption_search_honours_filters_exclusions_and_min_score(store):
    store.upsert(
        [
            NewItem(unit(1, 0, 0, 0), "a", {"album": "x"}, caption_vector=unit(0, 1, 0, 0)),
            NewItem(unit(1, 0, 0, 0), "b", {"album": "y"}, caption_vector=unit(0, 1, 0.1, 0)),
            NewItem(unit(1, 0, 0, 0), "c", {"album": "y"}, caption_vector=unit(0, 0, 1, 0)),
        ]
    )
    query = unit(0, 1, 0, 0)
    assert [h.id for h in store.search(query, 5, fields=[CAPTION], filters=[FieldFilter("album", ("y",))])] == [
        "b",
        "c",
    ]
    assert [h.id for h in store.search(query, 5, fields=[CAPTION], exclude_id="a")] == ["b", "c"]
    assert [h.id for h in store.search(query, 5, fields=[CAPTION], min_score=0.5)] == ["a", "b"]


def test_deleting_or_rewriting_an_item_without_a_caption_drops_its_caption_vector(store):
    store.upsert([NewItem(unit(1, 0, 0, 0), "a", caption_vector=unit(0, 1, 0, 0))])
    store.upsert([NewItem(unit(1, 0, 0, 0), "b", caption_vector=unit(0, 1, 0, 0))])
    store.upsert([NewItem(unit(1, 0, 0, 0), "a")])
    store.delete("b")
    assert store.search(unit(0, 1, 0, 0), 5, fields=[CAPTION]) == []


def test_caption_vectors_survive_reopening_the_store(tmp_path):
    first = SqliteFaissStore(tmp_path, DIM, "test-model")
    first.upsert([NewItem(unit(1, 0, 0, 0), "a", caption_vector=unit(0, 1, 0, 0)), NewItem(unit(0, 1, 0, 0), "b")])
    first.close()
    reopened = SqliteFaissStore(tmp_path, DIM, "test-model")
    try:
        assert [h.id for h in reopened.search(unit(0, 1, 0, 0), 5, fields=[CAPTION])] == ["a"]
    finally:
        reopened.close()


def test_a_bad_caption_vector_is_refused_and_nothing_is_written(store):
    with pytest.raises(InvalidItemError, match="caption vector has 3 dimensions"):
        store.upsert([NewItem(unit(1, 0, 0, 0), "a"), NewItem(unit(0, 1, 0, 0), "b", caption_vector=unit(1, 0, 0))])
    assert store.count() == 0
