"""The default vector store: SQLite (WAL) for durability, FAISS for search.

SQLite is the single source of truth: ids, metadata and vectors live in one
table, and a write is acknowledged only after its transaction commits with
`synchronous=FULL`, so it survives a crash or `kill -9`. The FAISS indexes are
derived state, rebuilt (or reloaded) when the store opens and updated after each
commit; a crash between the commit and the FAISS update loses nothing.

Each write gives the item a new `seq` (an upsert deletes the old row), so a
`seq` names one version of one item, which is what lets an ANN index built in
the background over a snapshot be brought up to date cheaply (see index/ann.py).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson

from index.ann import (
    IndexSpec,
    IndexType,
    LiveAnn,
    ann_seqs,
    build_ann,
    exhaustive_search,
    far_threshold,
    flat_index,
    load_ann,
    save_ann,
    search_ann,
)
from index.directory import take_directory
from index.errors import (
    IncompatibleStoreError,
    InvalidItemError,
    ItemNotFoundError,
    StorageUnavailableError,
    StoreError,
)
from index.metadata import check_filters, repair_metadata, to_json, validate_metadata
from index.types import (
    FieldFilter,
    Hit,
    IndexStatus,
    Item,
    Metadata,
    NewItem,
    RecallCheck,
    Scalar,
    VectorField,
    unit_queries,
    unit_vector,
    validate_id,
)

log = logging.getLogger(__name__)

DB_FILE = "store.sqlite3"
# Rebuild the ANN index once this share of the collection changed since its snapshot.
REBUILD_FRACTION = 0.1
# Set once every row's metadata follows index/metadata.py's rule; stores
# written before the rule are checked (and repaired) once when they open.
METADATA_RULE = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS thumbnails (id TEXT PRIMARY KEY, jpeg BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS originals (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS caption_vectors (id TEXT PRIMARY KEY, vector BLOB NOT NULL);
"""


_ROWS_PER_READ = 5000
# Stored vectors the far-query threshold is calibrated on (see index.ann.far_threshold).
_CALIBRATION_SAMPLE = 1000
# Recent ANN queries kept for the recall self-check.
_RECENT_QUERIES = 64
# FAISS 1.15 computes exact inner products with BLAS only when queries x dim
# reaches `distance_compute_blas_threshold` (128,000 by default: 250 queries of
# 512 dims, 2,000 of 64); below it, it scans the vectors once per query. The
# micro-batches a server searches (4-64 queries) were 3-7x slower that way: on
# one core, 32 queries of 512 dims among 10k vectors took 39.7 ms against 5.1
# ms with BLAS, 32 of 64 dims 3.8 against 1.0 ms. A single query stays on the
# scan, which is faster for it (0.19 against 0.47 ms at 64 dims).
BLAS_FROM_QUERIES = 4


class SqliteFaissStore:
    """VectorStore backed by one SQLite file in `data_dir` and in-memory FAISS indexes.

    Thread-safe: one lock serialises reads and writes of the indexes; an ANN
    index is built in a background thread without holding it. One process at a
    time may open a data directory.
    """

    def __init__(self, data_dir: Path, dim: int, model: str, spec: IndexSpec | None = None) -> None:
        """Open (or create) the store in `data_dir` for `dim`-d vectors from `model`.

        Raises:
            IncompatibleStoreError: the directory holds vectors of another dimension.
            StorageUnavailableError: the directory cannot be opened, or another process has it open.
        """
        self._dim = dim
        self._dir = data_dir
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES * dim  # global to FAISS; see above
        self._spec = spec or IndexSpec()
        self._lock = threading.RLock()
        self._closed = False
        self._builder: threading.Thread | None = None
        self._ann: LiveAnn | None = None
        # For the recall self-check: the last ANN queries, and what the last check found.
        self._recent: deque[np.ndarray] = deque(maxlen=_RECENT_QUERIES)
        self._recall: RecallCheck | None = None
        self._searches = 0  # ANN searches (per query vector) since the store opened
        self._far_searches = 0  # of which searched wider
        self._lock_file = take_directory(data_dir)
        try:
            self._db = self._connect()
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise StorageUnavailableError(f"cannot open the store in {data_dir}: {exc}") from exc
        try:
            try:
                self._db.executescript(_SCHEMA)
                self._check_compatible(dim, model)
                self._check_metadata_rule()
            except sqlite3.Error as exc:
                raise StorageUnavailableError(f"cannot open the store in {data_dir}: {exc}") from exc
        except StoreError:
            self._db.close()
            self._lock_file.close()
            raise
        self._exact = flat_index(dim)
        # Caption vectors, under their item's seq. Always exact: captions are an
        # optional second field, and the ANN machinery serves the image vectors.
        self._captions = flat_index(dim)
        self._load_exact()
        self._load_saved_ann()
        self._maybe_build()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._dir / DB_FILE, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: fsync the WAL on every commit, so an acknowledged write survives power loss too.
        db.execute("PRAGMA synchronous=FULL")
        return db

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def index_type(self) -> str:
        ann = self._ann
        return "flat" if ann is None else str(ann.kind)

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

    def _check_metadata_rule(self) -> None:
        """Repair, once, rows whose metadata an older version stored against today's rule.

        Such rows (NaN, 300 levels deep, keys no filter can name) made every
        filtered search or every read that met them fail; repairing keeps the
        item and logs what changed.
        """
        if self._db.execute("SELECT 1 FROM meta WHERE key = 'metadata_rule'").fetchone() is not None:
            return
        repaired: list[tuple[str, int]] = []
        for seq, item_id, raw in self._db.execute("SELECT seq, id, metadata FROM items"):
            try:
                validate_metadata(json.loads(raw))
                continue
            except (StoreError, ValueError, RecursionError):
                pass
            fixed, why = repair_metadata(raw)
            log.warning("repaired the stored metadata of item %r: %s", item_id, why or "it did not follow the rule")
            repaired.append((to_json(fixed), seq))
        with self._transaction():
            self._db.executemany("UPDATE items SET metadata = ? WHERE seq = ?", repaired)
            self._db.execute("INSERT INTO meta VALUES ('metadata_rule', ?)", (METADATA_RULE,))
        if repaired:
            log.warning("repaired the metadata of %d stored items (see the lines above)", len(repaired))

    def _read_vectors(self, db: sqlite3.Connection) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rows = db.execute("SELECT seq, vector FROM items ORDER BY seq")
        while chunk := rows.fetchmany(65536):
            seqs = np.fromiter((seq for seq, _ in chunk), dtype=np.int64, count=len(chunk))
            vectors = np.frombuffer(b"".join(blob for _, blob in chunk), dtype=np.float32).reshape(-1, self._dim)
            yield seqs, vectors

    def _load_exact(self) -> None:
        for seqs, vectors in self._read_vectors(self._db):
            self._exact.add_with_ids(vectors, seqs)
        rows = self._db.execute("SELECT items.seq, caption_vectors.vector FROM items JOIN caption_vectors USING (id)")
        while chunk := rows.fetchmany(65536):
            seqs = np.fromiter((seq for seq, _ in chunk), dtype=np.int64, count=len(chunk))
            vectors = np.frombuffer(b"".join(blob for _, blob in chunk), dtype=np.float32).reshape(-1, self._dim)
            self._captions.add_with_ids(vectors, seqs)

    def _live_seqs(self) -> np.ndarray:
        return np.sort(faiss.vector_to_array(self._exact.id_map))

    # --- ANN index: load, build in the background, swap in ---------------------------------------

    def _load_saved_ann(self) -> None:
        kind = self._spec.resolve(self._exact.ntotal)
        if kind is IndexType.FLAT:
            return
        index = load_ann(self._dir, kind, self._spec.encoding)
        if index is None:
            return
        # Stored vectors still live (the index may hold some deleted since it was saved).
        calibration = _sample(np.intersect1d(ann_seqs(index), self._live_seqs()), _CALIBRATION_SAMPLE)
        sample = self._exact.reconstruct_batch(calibration)
        self._install_ann(index, kind, far_threshold(self._spec, kind, index, sample))

    def _install_ann(self, index: faiss.Index, kind: IndexType, far_below: float) -> None:
        """Make `index` the serving ANN index; caller holds the lock or owns the store."""
        self._ann = LiveAnn.over(index, kind, self._exact, self._live_seqs(), far_below)
        self._recall = None  # measured on another index

    def _maybe_build(self) -> None:
        """Start a background build when the ANN index is missing, of the wrong kind, or too far behind."""
        with self._lock:
            if self._closed or (self._builder is not None and self._builder.is_alive()):
                return
            kind = self._spec.resolve(self._exact.ntotal)
            ann = self._ann
            if kind is IndexType.FLAT:
                self._ann = None
                return
            if ann is not None and ann.kind == kind and ann.changed_share() <= REBUILD_FRACTION:
                return
            self._builder = threading.Thread(target=self._build, args=(kind,), name="ann-build", daemon=True)
            self._builder.start()

    def _build(self, kind: IndexType) -> None:
        started = time.monotonic()
        try:
            # A separate connection reads a consistent snapshot while writes go on.
            db = self._connect()
            try:
                db.execute("BEGIN")
                parts = list(self._read_vectors(db))
                db.execute("COMMIT")
            finally:
                db.close()
            if not parts:
                return
            seqs = np.concatenate([s for s, _ in parts])
            vectors = np.concatenate([v for _, v in parts])
            del parts
            index = build_ann(self._spec, kind, vectors, seqs)
            far_below = far_threshold(
                self._spec, kind, index, vectors[_sample(np.arange(len(vectors)), _CALIBRATION_SAMPLE)]
            )
            if self._closed:  # the directory may belong to another process by now
                return
            save_ann(self._dir, index, kind, self._spec.encoding)
        except Exception:
            log.exception("building the %s index failed; searches stay exact", kind)
            return
        with self._lock:
            if self._closed:
                return
            self._install_ann(index, kind, far_below)
        log.info("built the %s index over %d vectors in %.1fs", kind, len(seqs), time.monotonic() - started)

    def wait_for_index(self, timeout: float | None = None) -> None:
        """Block until no background build is running (for tools and tests)."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)

    # --- writes ----------------------------------------------------------------------------------

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
            return int(self._exact.ntotal)

    def upsert(self, items: Sequence[NewItem]) -> list[Item]:
        prepared = [self._prepare(item) for item in items]
        if not prepared:
            return []
        ids = [item_id for item_id, _, _ in prepared]
        if len(set(ids)) != len(ids):
            raise InvalidItemError("the same id is given more than once in one request")
        now = time.time()
        with self._lock:
            with self._transaction():
                replaced: list[int] = []
                for chunk in range(0, len(ids), 500):
                    part = ids[chunk : chunk + 500]
                    replaced += [
                        row[0]
                        for row in self._db.execute(
                            f"DELETE FROM items WHERE id IN ({', '.join('?' * len(part))}) RETURNING seq", part
                        )
                    ]
                seqs = [
                    self._db.execute(
                        "INSERT INTO items (id, vector, metadata, created_at) VALUES (?, ?, ?, ?) RETURNING seq",
                        (item_id, vector.tobytes(), to_json(metadata), now),
                    ).fetchone()[0]
                    for item_id, vector, metadata in prepared
                ]
                captions: list[tuple[int, np.ndarray]] = []
                for (item_id, _, _), item, seq in zip(prepared, items, seqs, strict=True):
                    # An upsert replaces what the earlier version kept, or drops it.
                    for table in ("thumbnails", "originals", "caption_vectors"):
                        self._db.execute(f"DELETE FROM {table} WHERE id = ?", (item_id,))
                    if item.thumbnail:
                        self._db.execute("INSERT INTO thumbnails VALUES (?, ?)", (item_id, item.thumbnail))
                    if item.original:
                        self._db.execute("INSERT INTO originals VALUES (?, ?)", (item_id, item.original))
                    if item.caption_vector is not None:
                        caption = self._unit(item.caption_vector, "caption vector")
                        self._db.execute("INSERT INTO caption_vectors VALUES (?, ?)", (item_id, caption.tobytes()))
                        captions.append((seq, caption))
            self._apply(
                np.asarray(seqs, dtype=np.int64),
                np.stack([vector for _, vector, _ in prepared]),
                np.asarray(replaced, dtype=np.int64),
            )
            if captions:
                self._captions.add_with_ids(
                    np.stack([v for _, v in captions]), np.asarray([s for s, _ in captions], dtype=np.int64)
                )
        self._maybe_build()
        return [Item(item_id, metadata, now) for item_id, _, metadata in prepared]

    def _apply(self, added: np.ndarray, vectors: np.ndarray, removed: np.ndarray) -> None:
        """Bring the FAISS indexes in line with a committed write; caller holds the lock."""
        if len(removed):
            self._exact.remove_ids(removed)
            self._captions.remove_ids(removed)
        if len(added):
            self._exact.add_with_ids(vectors, added)
        if self._ann is not None:
            self._ann.record(added, vectors, removed)

    def _prepare(self, item: NewItem) -> tuple[str, np.ndarray, Metadata]:
        item_id = validate_id(item.id) if item.id is not None else uuid.uuid4().hex
        # The store's edge: nothing a later read or filter could fail on gets in.
        validate_metadata(item.metadata)
        if item.caption_vector is not None:
            self._unit(item.caption_vector, "caption vector")  # refused before anything is written
        return item_id, self._unit(item.vector, "vector"), item.metadata

    def _unit(self, raw: np.ndarray, what: str) -> np.ndarray:
        # Unit length makes FAISS inner products cosine similarities.
        return unit_vector(raw, self._dim, what)

    def delete(self, item_id: str) -> None:
        with self._lock:
            with self._transaction():
                row = self._db.execute("DELETE FROM items WHERE id = ? RETURNING seq", (item_id,)).fetchone()
                for table in ("thumbnails", "originals", "caption_vectors"):
                    self._db.execute(f"DELETE FROM {table} WHERE id = ?", (item_id,))
            if row is None:
                raise ItemNotFoundError(item_id)
            self._apply(np.empty(0, dtype=np.int64), np.empty((0, self._dim), np.float32), np.asarray([row[0]]))
        self._maybe_build()

    # --- reads -----------------------------------------------------------------------------------

    def get(self, item_id: str) -> Item:
        with self._lock:
            row = self._db.execute("SELECT id, metadata, created_at FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise ItemNotFoundError(item_id)
        return Item(row[0], json.loads(row[1]), row[2])

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` that are stored: one query per 500 ids, not one per id."""
        unique = list(dict.fromkeys(ids))
        known: set[str] = set()
        with self._lock:
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                sql = f"SELECT id FROM items WHERE id IN ({', '.join('?' * len(part))})"
                known.update(row[0] for row in self._db.execute(sql, part))
        return known

    def thumbnail(self, item_id: str) -> bytes:
        return self._blob("SELECT jpeg FROM thumbnails WHERE id = ?", item_id, "thumbnail")

    def original(self, item_id: str) -> bytes:
        return self._blob("SELECT data FROM originals WHERE id = ?", item_id, "stored original")

    def _blob(self, sql: str, item_id: str, what: str) -> bytes:
        with self._lock:
            row = self._db.execute(sql, (item_id,)).fetchone()
        if row is None:
            self.get(item_id)  # an unknown id says so
            raise ItemNotFoundError(item_id, what=what)
        return bytes(row[0])

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

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        filters: Sequence[FieldFilter] = (),
        min_score: float | None = None,
        exclude_id: str | None = None,
        fields: Sequence[VectorField] = (VectorField.IMAGE,),
        exact: bool = False,
    ) -> list[Hit]:
        # One query is a batch of one: one search path to keep right, not two.
        row = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if exclude_id is None:
            return self.search_many(row, k, filters=filters, min_score=min_score, fields=fields, exact=exact)[0]
        with self._lock:
            self._seq_of(exclude_id)  # an unknown id says so
            hits = self.search_many(row, k + 1, filters=filters, min_score=min_score, fields=fields, exact=exact)[0]
        return [h for h in hits if h.id != exclude_id][:k]

    def search_many(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filters: Sequence[FieldFilter] = (),
        min_score: float | None = None,
        fields: Sequence[VectorField] = (VectorField.IMAGE,),
        exact: bool = False,
    ) -> list[list[Hit]]:
        matrix = unit_queries(queries, self._dim, k, fields)
        if not len(matrix):
            return []
        with self._lock:
            matching = self._matching_seqs(filters) if filters else None
            distinct = list(dict.fromkeys(fields))
            ranked: list[list[tuple[int, tuple[float, VectorField]]]]
            if len(distinct) == 1:
                # One field (the usual case): FAISS's lists are already best first.
                f = distinct[0]
                ranked = [
                    [(seq, (score, f)) for seq, score in found if min_score is None or score >= min_score][:k]
                    for found in self._search_field_many(f, matrix, k, matching, exact)
                ]
            else:
                best: list[dict[int, tuple[float, VectorField]]] = [{} for _ in range(len(matrix))]
                for f in distinct:
                    for of_query, found in zip(
                        best, self._search_field_many(f, matrix, k, matching, exact), strict=True
                    ):
                        for seq, score in found:
                            if seq not in of_query or score > of_query[seq][0]:
                                of_query[seq] = (score, f)
                ranked = [
                    [
                        (s, d)
                        for s, d in sorted(b.items(), key=lambda hit: -hit[1][0])
                        if min_score is None or d[0] >= min_score
                    ][:k]
                    for b in best
                ]
            # One read for every query's rows (in chunks: SQLite bounds the parameters of one
            # statement); an item found by several queries shares its metadata dict.
            seqs = sorted({s for found in ranked for s, _ in found})
            rows: dict[int, tuple[str, Metadata]] = {}
            for start in range(0, len(seqs), _ROWS_PER_READ):
                rows.update(self._rows_by_seq(seqs[start : start + _ROWS_PER_READ]))
        return [[Hit(rows[s][0], score, rows[s][1], f) for s, (score, f) in found if s in rows] for found in ranked]

    def _search_field_many(
        self, f: VectorField, queries: np.ndarray, k: int, matching: np.ndarray | None, exact: bool
    ) -> list[list[tuple[int, float]]]:
        """(seq, score) pairs of each row of `queries` in field `f`, best first; caller holds the lock."""
        if matching is not None:
            index = self._exact if f is VectorField.IMAGE else self._captions
            if not len(matching):
                return [[] for _ in range(len(queries))]
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(matching))
            return _hits_many(index, queries, min(k, len(matching), index.ntotal), params)
        if f is VectorField.CAPTION:
            return _hits_many(self._captions, queries, min(k, self._captions.ntotal))
        ann = self._ann
        if ann is None or exact:
            return _hits_many(self._exact, queries, min(k, self._exact.ntotal))
        self._recent.extend(queries[-_RECENT_QUERIES:].copy())
        found = self._ann_search(ann, queries, k, np.fromiter(ann.stale, dtype=np.int64))
        recent = _hits_many(ann.delta, queries, min(k, ann.delta.ntotal))
        return [sorted(a + b, key=lambda hit: -hit[1])[:k] for a, b in zip(found, recent, strict=True)]

    def _ann_search(
        self, ann: LiveAnn, queries: np.ndarray, k: int, exclude: np.ndarray
    ) -> list[list[tuple[int, float]]]:
        """The ANN index's hits for each query, a query far from the data searched wider (index.ann.search_ann)."""
        k = min(k, ann.index.ntotal)
        if k <= 0:
            return [[] for _ in range(len(queries))]
        scores, seqs, far = search_ann(self._spec, ann.kind, ann.index, queries, k, ann.far_below, exclude)
        self._searches += len(queries)
        self._far_searches += far
        return _pairs(scores, seqs)

    def check_recall(self, queries: int = 16, k: int = 10) -> RecallCheck | None:
        """Measure the ANN index's recall@k against exhaustive search, on up to `queries` recent queries.

        The result is what `index_status` reports until the next check (None:
        no ANN index, or no query has used it yet). The exhaustive search runs
        without the store's lock (the ANN index is never changed once serving),
        so searches and writes go on meanwhile.
        """
        with self._lock:
            ann = self._ann
            recent = list(self._recent)[-queries:]
        if ann is None or not recent:
            return None
        matrix = np.stack(recent)
        k = min(k, ann.index.ntotal)
        # One thread: a background check must not take the cores from the searches it checks.
        faiss.omp_set_num_threads(1)
        # As a search does (index.ann.search_ann), but not counted among the searches /v1/stats reports.
        _, found, _ = search_ann(self._spec, ann.kind, ann.index, matrix, k, ann.far_below, np.empty(0, np.int64))
        truth = exhaustive_search(ann.index, ann.kind, matrix, k)
        shares = [
            len(set(got[got >= 0].tolist()) & set(want[want >= 0].tolist())) / max(1, int((want >= 0).sum()))
            for got, want in zip(found, truth, strict=True)
        ]
        check = RecallCheck(recall=float(np.mean(shares)), k=k, queries=len(recent), measured_at=time.time())
        with self._lock:
            if self._ann is ann:
                self._recall = check
        return check

    def index_status(self) -> IndexStatus:
        """The serving index's kind, search settings, and what the last recall check measured."""
        with self._lock:
            ann = self._ann
            spec = self._spec
            if ann is None:
                return IndexStatus(type="flat", searches=self._searches, far_searches=self._far_searches)
            return IndexStatus(
                type=str(ann.kind),
                ef_search=spec.hnsw_ef_search if ann.kind is IndexType.HNSW else None,
                nprobe=spec.ivf_nprobe if ann.kind is IndexType.IVF else None,
                far_query_effort=spec.far_effort(ann.kind),
                far_below=ann.far_below,
                searches=self._searches,
                far_searches=self._far_searches,
                recall=self._recall,
            )

    def _seq_of(self, item_id: str) -> int:
        row = self._db.execute("SELECT seq FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise ItemNotFoundError(item_id)
        return int(row[0])

    def _matching_seqs(self, filters: Sequence[FieldFilter]) -> np.ndarray:
        """Seqs of the items matching every filter, by the rule in index/metadata.py."""
        check_filters(list(filters))
        clauses: list[str] = []
        params: list[Any] = []
        for f in filters:
            path = "$" + "".join(f'."{part}"' for part in f.field.split("."))
            condition, values = _value_condition(f.values)
            # json_each walks an array's elements, or yields a scalar as one row;
            # an object's members must not match, hence the json_type check.
            clauses.append(
                "(json_type(metadata, ?) IS NOT 'object' AND "
                f"EXISTS (SELECT 1 FROM json_each(metadata, ?) AS e WHERE {condition}))"
            )
            params += [path, path, *values]
        sql = "SELECT seq FROM items WHERE " + " AND ".join(clauses)
        return np.fromiter((r[0] for r in self._db.execute(sql, params)), dtype=np.int64)

    def _rows_by_seq(self, seqs: list[int]) -> dict[int, tuple[str, Metadata]]:
        if not seqs:
            return {}
        rows = self._db.execute(
            f"SELECT seq, id, metadata FROM items WHERE seq IN ({', '.join('?' * len(seqs))})", seqs
        ).fetchall()
        # orjson: a search reads every hit's metadata, and json.loads was a tenth of a search's CPU.
        return {r[0]: (r[1], orjson.loads(r[2])) for r in rows}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            self._lock_file.close()


def _sample(seqs: np.ndarray, n: int) -> np.ndarray:
    """Up to `n` of `seqs`, drawn without replacement, the same ones every time for the same input."""
    if len(seqs) <= n:
        return seqs
    return np.sort(np.random.default_rng(0).choice(seqs, n, replace=False))


def _value_condition(values: Sequence[Scalar]) -> tuple[str, list[Scalar]]:
    """SQL over a json_each row `e` that holds when it equals one of `values`, types compared strictly."""
    texts = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    flags = sorted({"true" if v else "false" for v in values if isinstance(v, bool)})
    parts: list[str] = []
    if texts:
        parts.append(f"(e.type = 'text' AND e.value IN ({', '.join('?' * len(texts))}))")
    if numbers:
        parts.append(f"(e.type IN ('integer', 'real') AND e.value IN ({', '.join('?' * len(numbers))}))")
    if flags:
        parts.append(f"e.type IN ({', '.join(repr(flag) for flag in flags)})")
    return " OR ".join(parts), [*texts, *numbers]


def _hits_many(
    index: faiss.Index, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
) -> list[list[tuple[int, float]]]:
    """(seq, score) pairs of each row of `queries`, from one FAISS call, without FAISS's -1 padding."""
    if k <= 0:
        return [[] for _ in range(len(queries))]
    scores, seqs = index.search(queries, k, params=params)
    return _pairs(scores, seqs)


def _pairs(scores: np.ndarray, seqs: np.ndarray) -> list[list[tuple[int, float]]]:
    """FAISS's result arrays as (seq, score) lists, without its -1 padding."""
    return [
        [(s, d) for s, d in zip(row_seqs, row_scores, strict=True) if s != -1]
        for row_seqs, row_scores in zip(seqs.tolist(), scores.tolist(), strict=True)
    ]
