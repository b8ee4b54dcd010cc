"""The metadata rule at the store's edge, and stores written before it existed."""

from __future__ import annotations

import logging
import sqlite3

import numpy as np
import pytest

from index.errors import InvalidItemError
from index.metadata import repair_metadata, validate_metadata
from index.store import DB_FILE, SqliteFaissStore
from index.types import FieldFilter, NewItem


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=4).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([1], "must be a JSON object"),
        ({"x": float("nan")}, "numbers must be finite"),
        ({"x": 2**63}, "outside the 64-bit range"),
        ({"x": {1: 2}}, "keys must be strings"),
        ({"x": b"bytes"}, "bytes is not a JSON value"),
        ({"k" * 2000: [1] * 10}, "must be 1 to 64 characters long"),
        ({f"k{i}": i for i in range(1025)}, "more than 1024 keys"),
        ({"x": "y" * 70_000}, "the limit is 65536"),
    ],
)
def test_the_store_refuses_metadata_outside_the_rule_whatever_the_caller(tmp_path, metadata, message):
    store = SqliteFaissStore(tmp_path, 4, "test")
    with pytest.raises(InvalidItemError, match=message):
        store.upsert([NewItem(unit(0), "a", metadata)])
    assert store.count() == 0


def test_the_largest_integers_sqlite_holds_are_kept_exactly(tmp_path):
    store = SqliteFaissStore(tmp_path, 4, "test")
    store.upsert([NewItem(unit(0), "a", {"hi": 2**63 - 1, "lo": -(2**63)})])
    assert store.get("a").metadata == {"hi": 2**63 - 1, "lo": -(2**63)}
    hits = store.search(unit(0), 5, filters=[FieldFilter("hi", (2**63 - 1,))])
    assert [h.id for h in hits] == ["a"]


def test_validate_returns_the_metadata_it_accepts():
    meta = {"album": "a", "tags": ["x", 1, True, None], "exif": {"iso": 100.5}}
    assert validate_metadata(meta) is meta


def test_repair_keeps_what_it_can_and_says_what_it_changed():
    fixed, why = repair_metadata('{"ok": 1, "bad": NaN, "a.b": 2, "n": [Infinity]}')
    assert fixed == {"ok": 1, "bad": None, "n": [None]}
    assert why is not None and "non-finite" in why and "'a.b' was dropped" in why
    assert repair_metadata('{"fine": true}') == ({"fine": True}, None)


def write_rows_as_an_older_version_did(data_dir, rows):
    """Put rows the rule refuses straight into SQLite, and forget that the rule was ever checked."""
    db = sqlite3.connect(data_dir / DB_FILE)
    with db:
        for seq, (item_id, raw) in enumerate(rows, start=100):
            db.execute(
                "INSERT INTO items (seq, id, vector, metadata, created_at) VALUES (?, ?, ?, ?, 0)",
                (seq, item_id, unit(seq).tobytes(), raw),
            )
        db.execute("DELETE FROM meta WHERE key = 'metadata_rule'")
    db.close()


def test_a_store_holding_poisoned_rows_repairs_them_on_open_and_answers_every_read(tmp_path, caplog):
    store = SqliteFaissStore(tmp_path, 4, "test")
    store.upsert([NewItem(unit(1), "good", {"album": "a"})])
    store.close()
    deep = '{"a":' * 300 + "1" + "}" * 300
    write_rows_as_an_older_version_did(tmp_path, [("nan", '{"album": "a", "x": NaN}'), ("deep", deep)])
    with caplog.at_level(logging.WARNING):
        store = SqliteFaissStore(tmp_path, 4, "test")
    assert "repaired the stored metadata of item 'nan'" in caplog.text
    assert "repaired the metadata of 2 stored items" in caplog.text
    assert store.get("nan").metadata == {"album": "a", "x": None}
    assert store.get("deep").metadata["a"]["a"] is not None  # kept down to the depth limit
    hits = store.search(unit(1), 5, filters=[FieldFilter("album", ("a",))])
    assert sorted(h.id for h in hits) == ["good", "nan"]
    assert len(store.page(0, 10)) == 3
    store.close()


def test_the_repair_runs_once(tmp_path, caplog):
    SqliteFaissStore(tmp_path, 4, "test").close()
    write_rows_as_an_older_version_did(tmp_path, [("nan", '{"x": NaN}')])
    SqliteFaissStore(tmp_path, 4, "test").close()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        SqliteFaissStore(tmp_path, 4, "test").close()
    assert "repaired" not in caplog.text
