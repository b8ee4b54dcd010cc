"""The default vector store: SQLite (WAL) for durability, FAISS for search.

SQLite is the single source of truth: ids, metadata and vectors live in one
table, and a write is acknowledged only after its transaction commits with
`synchronous=FULL`, so it survives a crash or `kill -9`. The FAISS index is
derived state, rebuilt from SQLite when the store opens and updated after each
commit; a crash between the commit and the FAISS update loses nothing.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.errors import (
    IncompatibleStoreError,
    InvalidItemError,
    ItemNotFoundError,
    StorageUnavailableError,
)
from index.types import FieldFilter, Hit, Item, Metadata, NewItem

DB_FILE = "store.sqlite3"
MAX_ID_LENGTH = 128
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")
_FIELD_PATTERN = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def validate_id(item_id: str) -> str:
    """Ids are 1..128 characters of letters, digits and `._:@-`, starting with a letter or digit."""
    if len(item_id) > MAX_ID_LENGTH:
        raise InvalidItemError(f"id is {len(item_id)} characters long; the limit is {MAX_ID_LENGTH}")
    if not _ID_PATTERN.fullmatch(item_id):
        raise InvalidItemError(
            f"id {item_id!r} is not allowed: use letters, digits and . _ : @ - (starting with a letter or digit)"
        )
    return item_id


class SqliteFaissStore:
    """VectorStore backed by one SQLite file in `data_dir` and an in-memory FAISS index.

    Thread-safe: every operation holds one lock, so FAISS never sees a search
    and a write at once.
    """

    def __init__(self, data_dir: Path, dim: int, model: str) -> None:
        """Open (or create) the store in `data_dir` for `dim`-d vectors from `model`.

        Raises:
            IncompatibleStoreError: the directory holds vectors of another dimension.
            StorageUnavailableError: the directory or database cannot be opened.
        """
        self._dim = dim
        self._lock = threading.RLock()
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(data_dir / DB_FILE, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: fsync the WAL on every commit, so an acknowledged write survives power loss too.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._check_compatible(dim, model)
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"cannot open the store in {data_dir}: {exc}") from exc
        except OSError as exc:
            raise StorageUnavailableError(f"cannot create the data directory {data_dir}: {exc}") from exc
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._rebuild()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def index_type(self) -> str:
        return "flat"

    def _check_compatible(self, dim: int, model: str) -> None:
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not stored:
            with self._transaction():
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", [("dim", str(dim)), ("model", model)])
            return
        if int(stored["dim"]) != dim:
            raise IncompatibleStoreError(
                f"the data directory holds {stored['dim']}-d vectors from model {stored['model']!r}, "
                f"but the serving model {model!r} makes {dim}-d vectors: use another --data-dir or the same model"
            )

    def _rebuild(self) -> None:
        rows = self._db.execute("SELECT seq, vector FROM items ORDER BY seq")
        while chunk := rows.fetchmany(65536):
            ids = np.fromiter((seq for seq, _ in chunk), dtype=np.int64, count=len(chunk))
            vectors = np.frombuffer(b"".join(blob for _, blob in chunk), dtype=np.float32).reshape(-1, self._dim)
            self._index.add_with_ids(vectors, ids)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            # Disk full, read-only directory, I/O error: the transaction did not commit.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StorageUnavailableError(f"the write was not stored: {exc}") from exc

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def upsert(self, items: Sequence[NewItem]) -> list[Item]:
        prepared = [self._prepare(item) for item in items]
        ids = [item_id for item_id, _, _ in prepared]
        if len(set(ids)) != len(ids):
            raise InvalidItemError("the same id is given more than once in one request")
        now = time.time()
        with self._lock:
            with self._transaction():
                seqs = []
                for item_id, vector, metadata in prepared:
                    row = self._db.execute(
                        "INSERT INTO items (id, vector, metadata, created_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET vector=excluded.vector, metadata=excluded.metadata, "
                        "created_at=excluded.created_at RETURNING seq",
                        (item_id, vector.tobytes(), json.dumps(metadata), now),
                    ).fetchone()
                    seqs.append(row[0])
            seq_array = np.asarray(seqs, dtype=np.int64)
            # replaced vectors of existing ids; (faiss's stubs miss its numpy wrappers, hence the ignores)
            self._index.remove_ids(seq_array)  # type: ignore[arg-type]
            self._index.add_with_ids(np.stack([vector for _, vector, _ in prepared]), seq_array)
        return [Item(item_id, metadata, now) for item_id, _, metadata in prepared]

    def _prepare(self, item: NewItem) -> tuple[str, np.ndarray, Metadata]:
        item_id = validate_id(item.id) if item.id is not None else uuid.uuid4().hex
        vector = np.asarray(item.vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self._dim:
            raise InvalidItemError(f"vector has {vector.shape[0]} dimensions; this store holds {self._dim}")
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            raise InvalidItemError("vector must be finite and non-zero")
        if not isinstance(item.metadata, dict):
            raise InvalidItemError("metadata must be a JSON object")
        # Unit length makes FAISS inner products cosine similarities.
        return item_id, np.ascontiguousarray(vector / norm), item.metadata

    def get(self, item_id: str) -> Item:
        with self._lock:
            row = self._db.execute("SELECT id, metadata, created_at FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise ItemNotFoundError(item_id)
        return Item(row[0], json.loads(row[1]), row[2])

    def vector(self, item_id: str) -> np.ndarray:
        with self._lock:
            row = self._db.execute("SELECT vector FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise ItemNotFoundError(item_id)
        return np.frombuffer(row[0], dtype=np.float32).copy()

    def page(self, offset: int, limit: int) -> list[Item]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, metadata, created_at FROM items ORDER BY seq LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [Item(r[0], json.loads(r[1]), r[2]) for r in rows]

    def delete(self, item_id: str) -> None:
        with self._lock:
            with self._transaction():
                row = self._db.execute("DELETE FROM items WHERE id = ? RETURNING seq", (item_id,)).fetchone()
            if row is None:
                raise ItemNotFoundError(item_id)
            self._index.remove_ids(np.asarray([row[0]], dtype=np.int64))  # type: ignore[arg-type]

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        filters: Sequence[FieldFilter] = (),
        min_score: float | None = None,
        exclude_id: str | None = None,
    ) -> list[Hit]:
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self._dim:
            raise InvalidItemError(f"query vector has {query.shape[1]} dimensions; this store holds {self._dim}")
        if k < 1:
            raise InvalidItemError("k must be at least 1")
        with self._lock:
            exclude_seq = self._seq_of(exclude_id) if exclude_id is not None else None
            params = None
            candidates = self._index.ntotal
            if filters:
                # Searching only the matching ids gives the true top-k among
                # them, where filtering a short list afterwards could miss some.
                matching = self._matching_seqs(filters)
                candidates = len(matching)
                params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(matching))  # type: ignore[call-arg]
            fetch = min(k + (exclude_seq is not None), candidates)
            if fetch == 0:
                return []
            scores, seqs = self._index.search(query, fetch, params=params)
            found = [
                (int(s), float(d)) for s, d in zip(seqs[0], scores[0], strict=True) if s != -1 and s != exclude_seq
            ]
            found = [(s, d) for s, d in found if min_score is None or d >= min_score][:k]
            rows = self._rows_by_seq([s for s, _ in found])
        return [Hit(rows[s][0], d, rows[s][1]) for s, d in found if s in rows]

    def _seq_of(self, item_id: str) -> int:
        row = self._db.execute("SELECT seq FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise ItemNotFoundError(item_id)
        return int(row[0])

    def _matching_seqs(self, filters: Sequence[FieldFilter]) -> np.ndarray:
        clauses: list[str] = []
        params: list[Any] = []
        for f in filters:
            if not _FIELD_PATTERN.fullmatch(f.field):
                raise InvalidItemError(
                    f"filter field {f.field!r} is not allowed: use letters, digits, _ and -, with dots for nesting"
                )
            if not f.values:
                raise InvalidItemError(f"filter on {f.field!r} lists no values")
            clauses.append(f"json_extract(metadata, ?) IN ({', '.join('?' * len(f.values))})")
            params += ["$" + "".join(f'."{part}"' for part in f.field.split(".")), *f.values]
        sql = "SELECT seq FROM items WHERE " + " AND ".join(clauses)
        return np.fromiter((r[0] for r in self._db.execute(sql, params)), dtype=np.int64)

    def _rows_by_seq(self, seqs: list[int]) -> dict[int, tuple[str, Metadata]]:
        if not seqs:
            return {}
        rows = self._db.execute(
            f"SELECT seq, id, metadata FROM items WHERE seq IN ({', '.join('?' * len(seqs))})", seqs
        ).fetchall()
        return {r[0]: (r[1], json.loads(r[2])) for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
