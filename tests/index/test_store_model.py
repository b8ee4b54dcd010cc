"""The store against a plain in-memory model, step by step (Hypothesis stateful testing).

Random sequences of upserts (with hostile metadata: NaN, infinities, integers
beyond 64 bits, lone surrogates, keys no filter can name, deep nesting),
deletes, gets, pages, searches with and without filters, bad filters, and
close/reopen. After every step the store must agree with the model, a refused
write must change nothing, and nothing may raise anything but the store's own
InvalidItemError or ItemNotFoundError.

The same machine runs against a real Milvus (fewer examples: every step is a
round trip), with the one documented difference in how numbers compare
(`milvus_numbers_equal`) and Milvus's page order (by id).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness.milvus_server import empty_collections
from index.errors import InvalidItemError, ItemNotFoundError
from index.milvus import MilvusStore
from index.store import SqliteFaissStore
from index.types import FieldFilter, NewItem, VectorStore

DIM = 8
IDS = ["a", "b", "c", "d", "e", "f"]
KEY_OK = re.compile(r"[\w-]{1,64}")


def deep(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels):
        value = {"n": value}
    return {"deep": value}


keys = st.one_of(
    st.sampled_from(["a", "b", "tags", "x", "ключ", "n"]),
    st.sampled_from(["a.b", "", "k" * 100, "sp ace", "\ud800", 'q"uote']),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1.0, 0.5, float("nan"), float("inf")]),
    st.text(max_size=4),
    st.sampled_from(["a", "1", "true", '["a","b"]', "\udc80x"]),
)
values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3), max_leaves=8
)
# Values that filters look for too, so filtered searches have something to tell apart:
# true vs 1 vs "1", an array vs its JSON text, an element of an array.
shared = st.sampled_from([True, False, 1, 1.0, 0, "1", "a", "true", '["a","b"]', ["a", "b"], [1, True], {"a": 1}])
typical = st.dictionaries(
    st.sampled_from(["a", "b", "tags", "x"]), shared | st.dictionaries(st.just("a"), shared), max_size=3
)
metadata = st.one_of(
    typical,
    typical,
    typical,  # most writes are good ones, so the model fills up
    st.dictionaries(keys, values, max_size=4),
    st.integers(min_value=1, max_value=8).map(deep),  # within the depth limit
    st.integers(min_value=20, max_value=300).map(deep),  # beyond it
)
good_fields = st.sampled_from(["a", "b", "tags", "x", "x.a", "a.a", "ключ", "deep.n", "nope"])
bad_fields = st.sampled_from(["a..b", "k" * 300, "sp ace", "a.b c"])
filter_fields = st.one_of(good_fields, good_fields, good_fields, bad_fields)
good_values = st.sampled_from([True, False, 1, 1.0, 0, "1", "a", "b", "true", '["a","b"]'])
filter_values = st.one_of(
    good_values,
    good_values,
    good_values,
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([2**63 - 1, 2**80, 1.0, 0.5, 1e308, float("nan"), float("inf")]),
    st.sampled_from(["a", "1", "true", '["a","b"]', ""]),
    st.text(max_size=3),
)


def acceptable(meta: Any) -> bool:
    """The rule, written out again independently of index/metadata.py."""

    def ok(value: Any, depth: int) -> bool:
        if depth > 16:
            return False
        if value is None or isinstance(value, bool):
            return True
        if isinstance(value, int):
            return -(2**63) <= value < 2**63
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, str):
            return encodable(value)
        if isinstance(value, list):
            return all(ok(v, depth + 1) for v in value)
        if isinstance(value, dict):
            return all(
                isinstance(k, str) and KEY_OK.fullmatch(k) is not None and encodable(k) and ok(v, depth + 1)
                for k, v in value.items()
            )
        return False

    return isinstance(meta, dict) and ok(meta, 1)


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def filter_acceptable(field: str, wanted: list[Any]) -> bool:
    parts = field.split(".")
    if len(field) > 256 or not all(KEY_OK.fullmatch(p) for p in parts):
        return False
    for v in wanted:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
            return False
        if isinstance(v, str) and not encodable(v):
            return False
    return True


def sqlite_numbers_equal(stored: int | float, wanted: int | float, in_array: bool) -> bool:
    return stored == wanted


def milvus_numbers_equal(stored: int | float, wanted: int | float, in_array: bool) -> bool:
    """Milvus: integers compare exactly with integers, anything else as doubles (equal below 2**53).

    Beyond 2**53 an integer matches a float that rounds to it, and in an array
    a float element is found by an integer filter value only below 2**53. The
    filter value -2**63 is written as a float (Milvus cannot parse it as an integer).
    """
    if isinstance(wanted, int) and wanted == -(2**63):
        wanted = float(wanted)
    if isinstance(stored, int) and isinstance(wanted, int):
        return stored == wanted
    if in_array and isinstance(stored, float) and isinstance(wanted, int):
        return abs(wanted) < 2**53 and stored == float(wanted)
    return float(stored) == float(wanted)


def model_matches(meta: dict[str, Any], field: str, wanted: list[Any], numbers_equal=sqlite_numbers_equal) -> bool:
    value: Any = meta
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    in_array = isinstance(value, list)
    candidates = value if in_array else [value]
    for c in candidates:
        for w in wanted:
            if isinstance(c, bool) or isinstance(w, bool):
                if isinstance(c, bool) and isinstance(w, bool) and c == w:
                    return True
            elif isinstance(w, int | float):
                if isinstance(c, int | float) and numbers_equal(c, w, in_array):
                    return True
            elif isinstance(c, str) and c == w:
                return True
    return False


def look_alikes(value: Any) -> list[Any]:
    """`value` and values of other types that a loose comparison would confuse with it."""
    if isinstance(value, bool):
        return [value, int(value), json.dumps(value)]
    if isinstance(value, int | float):
        return [value, float(value), str(value)] + ([bool(value)] if value in (0, 1) else [])
    if isinstance(value, str):
        return [value] + ([int(value)] if value.isdigit() and len(value) < 10 else [])
    return [value]


class StoreAgainstModel(RuleBasedStateMachine):
    numbers_equal = staticmethod(sqlite_numbers_equal)
    pages_by_id = False

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.store = self.open_store()
        self.model: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}  # insertion order = write order
        self.counter = 0

    def open_store(self) -> VectorStore:
        return SqliteFaissStore(self.dir / "data", DIM, "test")

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _vector(self) -> np.ndarray:
        self.counter += 1
        v = np.random.default_rng(self.counter).normal(size=DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    @initialize(writes=st.lists(st.tuples(st.sampled_from(IDS), typical), max_size=6, unique_by=lambda w: w[0]))
    def fill(self, writes: list[tuple[str, Any]]) -> None:
        if writes:
            self.upsert(writes)

    @rule(writes=st.lists(st.tuples(st.sampled_from(IDS), metadata), min_size=1, max_size=2))
    def upsert(self, writes: list[tuple[str, Any]]) -> None:
        items = [NewItem(self._vector(), item_id, meta) for item_id, meta in writes]
        ids = [item_id for item_id, _ in writes]
        valid = len(set(ids)) == len(ids) and all(acceptable(meta) for _, meta in writes)
        if not valid:
            with pytest.raises(InvalidItemError):
                self.store.upsert(items)
            return
        stored = self.store.upsert(items)
        assert [i.id for i in stored] == ids
        for item in items:
            assert item.id is not None
            self.model.pop(item.id, None)
            self.model[item.id] = (item.vector, item.metadata)

    @rule(item_id=st.sampled_from(IDS))
    def delete(self, item_id: str) -> None:
        if item_id in self.model:
            self.store.delete(item_id)
            del self.model[item_id]
        else:
            with pytest.raises(ItemNotFoundError):
                self.store.delete(item_id)

    @rule(item_id=st.sampled_from(IDS))
    def get(self, item_id: str) -> None:
        if item_id in self.model:
            assert self.store.get(item_id).metadata == self.model[item_id][1]
        else:
            with pytest.raises(ItemNotFoundError):
                self.store.get(item_id)

    @rule(offset=st.integers(0, 7), limit=st.integers(1, 7))
    def page(self, offset: int, limit: int) -> None:
        ordered = sorted(self.model.items()) if self.pages_by_id else list(self.model.items())
        expected = ordered[offset : offset + limit]
        got = self.store.page(offset, limit)
        assert [(i.id, i.metadata) for i in got] == [(k, meta) for k, (_, meta) in expected]

    @rule(k=st.integers(1, 8), seed=st.integers(0, 1000))
    def search(self, k: int, seed: int) -> None:
        query = np.random.default_rng(10_000 + seed).normal(size=DIM).astype(np.float32)
        self._compare(query, k, [])

    @precondition(lambda self: bool(self.model))
    @rule(
        k=st.integers(1, 8),
        seed=st.integers(0, 1000),
        conditions=st.lists(st.tuples(filter_fields, st.lists(filter_values, min_size=1, max_size=3)), max_size=2),
    )
    def filtered_search(self, k: int, seed: int, conditions: list[tuple[str, list[Any]]]) -> None:
        query = np.random.default_rng(20_000 + seed).normal(size=DIM).astype(np.float32)
        self._compare(query, k, conditions)

    @precondition(lambda self: any(self.model[i][1] for i in self.model))
    @rule(data=st.data(), k=st.integers(1, 8))
    def search_for_a_stored_value(self, data: st.DataObject, k: int) -> None:
        """Filter on a value some item holds, as it is or as a look-alike of another type."""
        item_id = data.draw(st.sampled_from([i for i in self.model if self.model[i][1]]))
        meta = self.model[item_id][1]
        field = data.draw(st.sampled_from(sorted(meta)))
        value = meta[field]
        if isinstance(value, dict) and value:
            key = data.draw(st.sampled_from(sorted(value)))
            field, value = f"{field}.{key}", value[key]
        if isinstance(value, list) and value:
            value = data.draw(st.sampled_from(value))
        if isinstance(value, dict | list) or value is None:
            value = json.dumps(value)  # the JSON text of a container must not match it
        wanted = data.draw(st.sampled_from(look_alikes(value)))
        query = np.random.default_rng(k).normal(size=DIM).astype(np.float32)
        self._compare(query, k, [(field, [wanted])])

    def _compare(self, query: np.ndarray, k: int, conditions: list[tuple[str, list[Any]]]) -> None:
        filters = [FieldFilter(field, tuple(wanted)) for field, wanted in conditions]
        if not all(filter_acceptable(field, wanted) for field, wanted in conditions):
            with pytest.raises(InvalidItemError):
                self.store.search(query, k, filters=filters)
            return
        hits = self.store.search(query, k, filters=filters)
        unit = query / np.linalg.norm(query)
        candidates = [
            (float(vector @ unit), item_id)
            for item_id, (vector, meta) in self.model.items()
            if all(model_matches(meta, field, wanted, self.numbers_equal) for field, wanted in conditions)
        ]
        expected = sorted(candidates, reverse=True)[:k]
        assert [h.id for h in hits] == [item_id for _, item_id in expected]
        assert [h.score for h in hits] == pytest.approx([score for score, _ in expected], abs=1e-5)
        for hit in hits:
            assert hit.metadata == self.model[hit.id][1]

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.open_store()

    @invariant()
    def counts_agree(self) -> None:
        assert self.store.count() == len(self.model)


StoreAgainstModel.TestCase.settings = settings(
    # A longer hunt: STORE_MODEL_EXAMPLES=2000 pytest tests/index/test_store_model.py
    max_examples=int(os.environ.get("STORE_MODEL_EXAMPLES", "80")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_the_store_behaves_like_a_plain_dictionary_under_any_sequence_of_requests = StoreAgainstModel.TestCase


class MilvusStoreAgainstModel(StoreAgainstModel):
    uri = ""  # set by the test below, from the session's Milvus server
    numbers_equal = staticmethod(milvus_numbers_equal)
    pages_by_id = True

    def open_store(self) -> VectorStore:
        if not hasattr(self, "store"):  # a new example: an empty collection
            empty_collections(self.uri, "model_test")
        return MilvusStore(self.uri, DIM, "test", files_dir=self.dir / "files", collection="model_test")


def test_the_milvus_store_behaves_like_a_plain_dictionary_under_any_sequence_of_requests(milvus):
    MilvusStoreAgainstModel.uri = milvus.uri
    run_state_machine_as_test(
        MilvusStoreAgainstModel,
        settings=settings(
            # A longer hunt: MILVUS_MODEL_EXAMPLES=500 pytest tests/index/test_store_model.py
            max_examples=int(os.environ.get("MILVUS_MODEL_EXAMPLES", "15")),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
