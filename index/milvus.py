"""A VectorStore on Milvus, for collections and replicas past one machine.

Milvus (tested against the 2.3 standalone server, through pymilvus's
`MilvusClient`) keeps the vectors, ids and metadata, shards and replicates them
and serves any number of API processes; this module maps the store's contract
onto it. What differs from the SQLite store is listed in docs/design.md
("Milvus") and tested in tests/index/.

Layout, for a collection `C` (default: derived from the model and dimension):

- `C`: one row per item: `id` (VARCHAR primary key, the API's id rule),
  `vector` (FLOAT_VECTOR, unit length, inner product = cosine), `meta` (JSON),
  `created_at`, `version` (a time-ordered token, new on every write) and flags
  saying whether the item has a caption vector, a thumbnail and an original.
  Writing this row is an item's commit point.
- `C_captions`: caption vectors, one row per captioned item, with a copy of its
  metadata (so filters apply) and the version of the write that made it.
  Milvus 2.3 allows one vector field per collection, hence a second collection.
  A caption row counts only while the item's row names its version, so a
  write cut between the two collections never shows a stale caption.
- Thumbnails and kept originals: files under `files_dir/<id>/<version>.<kind>`,
  written (fsynced) before the row that names them. Milvus is no blob store:
  2.3 has no binary field and caps a string at 64 KB, and its own docs keep raw
  data in object storage. Several API processes share them through one
  directory (a volume on one host, a shared file system across hosts).

Every call has a timeout; a Milvus that does not answer raises
StoreUnreachableError (the service answers 503 and recovers when Milvus does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from index.ann import IndexSpec, IndexType
from index.directory import replace_durably
from index.errors import (
    IncompatibleStoreError,
    InvalidItemError,
    ItemNotFoundError,
    StorageUnavailableError,
    StoreError,
    StoreUnreachableError,
)
from index.metadata import INT64_MIN, check_filters, validate_metadata
from index.types import (
    MAX_ID_LENGTH,
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

COLLECTION_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")
CAPTIONS_SUFFIX = "_captions"
DEFAULT_NLIST = 1024  # IVF lists when ivf_nlist is unset: Milvus needs it before any data arrives
# Milvus answers at most this many rows per query or search (offset + limit).
MAX_WINDOW = 16_384
_ROWS_PER_WRITE = 1000  # rows per insert/upsert call (Milvus caps a request at 64 MB)
_IDS_PER_QUERY = 500
_RECENT_QUERIES = 64
_VERSION_LENGTH = 24


class Consistency(StrEnum):
    """Milvus consistency levels. Strong: every read sees every acknowledged write, from any process."""

    STRONG = "strong"
    SESSION = "session"
    BOUNDED = "bounded"
    EVENTUALLY = "eventually"


def default_collection(model: str, dim: int) -> str:
    """A collection name for `model`'s `dim`-d vectors: two models never share one by default."""
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:40]
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"clipsearch_{slug}_{dim}_{digest}"


# --- filters -----------------------------------------------------------------------------------


def filter_expression(filters: Sequence[FieldFilter]) -> str:
    """A Milvus boolean expression over the `meta` JSON field with the semantics of index/metadata.py.

    Keys are checked by `check_filters` (letters, digits, `_`, `-`: nothing a
    string literal could end on) and values are written as literals with every
    character outside printable ASCII, and `"` and `\\`, escaped, so no filter
    can change the expression's structure. A field matches when its value is one
    of the values (types strictly: `1` is not `true` nor `"1"`) or, for an array,
    when one of its elements is.
    """
    check_filters(list(filters))
    return " and ".join(_field_clause(f) for f in filters)


def _field_clause(f: FieldFilter) -> str:
    path = "meta" + "".join(f'["{part}"]' for part in f.field.split("."))
    # Milvus compares a list of one type only (a mixed list fails inside the query node).
    groups: dict[str, list[str]] = {"int": [], "float": [], "bool": [], "str": []}
    # json_contains_any compares an integer literal only with integer elements; a float
    # literal with both, so integral values are looked for as floats too.
    elements: dict[str, list[str]] = {"int": [], "float": [], "bool": [], "str": []}
    # Deduplicated by type too: `True == 1` in Python, and dict.fromkeys would drop one of them.
    for _, value in dict.fromkeys((type(v), v) for v in f.values):
        kind, text = _literal(value)
        groups[kind].append(text)
        elements[kind].append(text)
        if kind == "int":
            elements["float"].append(repr(float(value)))
    parts = [f"{path} in [{', '.join(texts)}]" for texts in groups.values() if texts]
    parts += [f"json_contains_any({path}, [{', '.join(dict.fromkeys(t))}])" for t in elements.values() if t]
    return "(" + " or ".join(parts) + ")"


def _literal(value: Scalar) -> tuple[str, str]:
    """(type group, Milvus literal) of one filter value, already checked by check_filters."""
    if isinstance(value, bool):
        return "bool", "true" if value else "false"
    if isinstance(value, int):
        if value == INT64_MIN:
            # Milvus parses -9223372036854775808 as minus an out-of-range integer; the float is exact.
            return "float", repr(float(value))
        return "int", str(value)
    if isinstance(value, float):
        return "float", repr(value)
    return "str", _string_literal(value)


def _string_literal(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= code < 127:
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _id_literal(item_id: str) -> str:
    return _string_literal(validate_id(item_id))


# --- files -------------------------------------------------------------------------------------


class _Files:
    """Thumbnails and originals as files `root/<id>/<version>.<kind>`, each written atomically and fsynced."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, item_id: str, version: str, kind: str, data: bytes) -> None:
        folder = self.root / item_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            replace_durably(folder / f"{version}.{kind}", lambda tmp: tmp.write_bytes(data))
        except OSError as exc:
            raise StorageUnavailableError(f"cannot write the {kind} of {item_id!r} under {self.root}: {exc}") from exc

    def read(self, item_id: str, version: str, kind: str) -> bytes | None:
        try:
            return (self.root / item_id / f"{version}.{kind}").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailableError(f"cannot read the {kind} of {item_id!r}: {exc}") from exc

    def drop_older(self, item_id: str, version: str) -> None:
        """Remove what writes of `item_id` older than `version` left (versions sort by time)."""
        folder = self.root / item_id
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.name.lstrip(".")[:_VERSION_LENGTH] < version:
                path.unlink(missing_ok=True)

    def drop(self, item_id: str) -> None:
        shutil.rmtree(self.root / item_id, ignore_errors=True)


def _new_version() -> str:
    """A token that sorts by creation time: 16 hex digits of nanoseconds, 8 random."""
    return f"{time.time_ns():016x}{secrets.token_hex(4)}"


# --- the store ---------------------------------------------------------------------------------

T = TypeVar("T")
_ITEM_FIELDS = ["id", "meta", "created_at"]


class MilvusStore:
    """VectorStore on a Milvus server or cluster at `uri`.

    Thread-safe (pymilvus's client is); several processes, on one machine or
    many, may serve the same collection at once.
    """

    def __init__(
        self,
        uri: str,
        dim: int,
        model: str,
        *,
        files_dir: Path,
        collection: str | None = None,
        token: str | None = None,
        spec: IndexSpec | None = None,
        consistency: Consistency = Consistency.STRONG,
        timeout_s: float = 10.0,
        start_timeout_s: float = 120.0,
    ) -> None:
        """Connect to Milvus at `uri` and open (or create) the collection for `dim`-d vectors from `model`.

        Waits up to `start_timeout_s` for the collection to answer (Milvus takes
        a while after a restart); each later call waits up to `timeout_s`.

        Raises:
            StoreUnreachableError: Milvus at `uri` did not answer.
            IncompatibleStoreError: the collection holds another model's vectors, or is not clipsearch's.
            ValueError: `spec` asks for what this store does not offer (an sq8 or pq encoding).
        """
        from pymilvus import MilvusClient

        # pymilvus logs every failed call with its traceback; the store raises a domain
        # error instead, which the service logs once.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        self._uri = uri
        self._dim = dim
        self._model = model
        self._spec = spec or IndexSpec()
        if self._spec.encoding != "flat":
            raise ValueError(f"the Milvus store keeps float32 vectors: encoding {self._spec.encoding} is not offered")
        self._items = collection or default_collection(model, dim)
        if not COLLECTION_PATTERN.fullmatch(self._items):
            raise ValueError(f"{self._items!r} is not a Milvus collection name (letters, digits, _)")
        self._captions = self._items + CAPTIONS_SUFFIX
        self._consistency = consistency
        self._timeout = timeout_s
        self._files = _Files(files_dir / self._items)
        self._lock = threading.Lock()
        self._recent: deque[np.ndarray] = deque(maxlen=_RECENT_QUERIES)
        self._recall: RecallCheck | None = None
        self._searches = 0
        self._closed = False
        self._client = self._call("connect", MilvusClient, uri=uri, token=token or "", timeout=timeout_s)
        try:
            self._kind, self._nlist = self._open_collection(self._items, "items", self._spec)
            self._open_collection(self._captions, "captions", IndexSpec(type=IndexType.FLAT))
            # The first query after Milvus (re)starts waits for its recovery: wait here, not in a request.
            self._count(start_timeout_s)
        except BaseException:
            self._client.close()
            raise

    # --- calls ------------------------------------------------------------------------------------

    def _call(self, what: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`method(*args, **kwargs)`, one pymilvus call, its failures as the store's errors."""
        from pymilvus.exceptions import MilvusException

        try:
            return method(*args, **kwargs)
        except MilvusException as exc:
            if _is_outage(exc):
                timeout = kwargs.get("timeout", self._timeout)
                raise StoreUnreachableError(
                    f"Milvus at {self._uri} did not answer ({what}, timeout {timeout:g}s): "
                    f"{exc.message}; a write may not have been stored: retry it"
                ) from exc
            raise StoreError(f"Milvus at {self._uri} refused {what}: {exc.message}") from exc

    def _open_collection(self, name: str, role: str, spec: IndexSpec) -> tuple[IndexType, int | None]:
        """Create `name` or check it is this model's; load it. Returns its index kind and IVF list count."""
        from pymilvus import DataType, MilvusClient

        client = self._client
        note = json.dumps({"clipsearch": role, "model": self._model, "dim": self._dim})
        if not self._call("has_collection", client.has_collection, name):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=note)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
            schema.add_field("meta", DataType.JSON)
            schema.add_field("version", DataType.VARCHAR, max_length=_VERSION_LENGTH)
            if role == "items":
                schema.add_field("created_at", DataType.DOUBLE)
                for flag in ("caption", "thumbnail", "original"):
                    schema.add_field(flag, DataType.BOOL)
            index = client.prepare_index_params()
            index.add_index("vector", metric_type="IP", **_index_params(spec))
            try:
                self._call(
                    f"creating collection {name}", client.create_collection, name, schema=schema, index_params=index
                )
            except StoreError:
                # Another API process may have created it a moment ago: then check it like any other.
                if not self._call("has_collection", client.has_collection, name):
                    raise
            else:
                log.info("created the Milvus collection %s at %s", name, self._uri)
        described = self._call(f"describing {name}", client.describe_collection, name)
        self._check_compatible(name, described, role)
        indexed = self._call(f"describing the index of {name}", client.describe_index, name, "vector")
        kind = _kind_of(str(indexed.get("index_type", "FLAT")))
        nlist = int(indexed["nlist"]) if kind is IndexType.IVF and "nlist" in indexed else None
        if role == "items" and spec.type not in (IndexType.AUTO, kind):
            log.warning(
                "the collection %s has a %s index; CLIPSEARCH_STORE__INDEX=%s applies to new collections only "
                "(to change it, drop its index in Milvus and create another)",
                name,
                kind,
                spec.type,
            )
        self._call(f"loading {name}", client.load_collection, name, timeout=self._timeout * 12)
        return kind, nlist

    def _check_compatible(self, name: str, described: dict[str, Any], role: str) -> None:
        try:
            note = json.loads(described.get("description") or "")
            ours = isinstance(note, dict) and note.get("clipsearch") == role
        except ValueError:
            ours = False
        if not ours:
            raise IncompatibleStoreError(
                f"the Milvus collection {name} at {self._uri} was not made by clipsearch for {role}: "
                "name another collection (CLIPSEARCH_STORE__MILVUS_COLLECTION)"
            )
        dims = [f.get("params", {}).get("dim") for f in described["fields"] if f["name"] == "vector"]
        dim = int(dims[0]) if dims and dims[0] is not None else note.get("dim")
        if dim != self._dim or note.get("model") != self._model:
            raise IncompatibleStoreError(
                f"the Milvus collection {name} holds {dim}-d vectors from model {note.get('model')!r}, "
                f"but the serving model {self._model!r} makes {self._dim}-d vectors: "
                "use another collection (CLIPSEARCH_STORE__MILVUS_COLLECTION) or the same model"
            )

    def _read_kwargs(self) -> dict[str, Any]:
        return {"consistency_level": self._consistency.value.capitalize(), "timeout": self._timeout}

    # --- properties ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def index_type(self) -> str:
        return str(self._kind)

    @property
    def collection(self) -> str:
        return self._items

    def count(self) -> int:
        return self._count(self._timeout)

    def _count(self, timeout: float) -> int:
        kwargs = {**self._read_kwargs(), "timeout": timeout}
        rows = self._call("count", self._client.query, self._items, filter="", output_fields=["count(*)"], **kwargs)
        return int(rows[0]["count(*)"])

    # --- writes ----------------------------------------------------------------------------------

    def upsert(self, items: Sequence[NewItem]) -> list[Item]:
        """Store the items (replacing existing ids); durable and visible to every reader once it returns.

        Unlike the SQLite store, a request is not atomic: Milvus has no
        transactions, so a failure part-way may leave some of its items written
        (each one whole: its row is its commit point). The caller was not
        answered and retries; writes by id are idempotent.
        """
        prepared = [self._prepare(item) for item in items]
        if not prepared:
            return []
        ids = [p[0] for p in prepared]
        if len(set(ids)) != len(ids):
            raise InvalidItemError("the same id is given more than once in one request")
        version = _new_version()
        now = time.time()
        for (item_id, _, _, _), item in zip(prepared, items, strict=True):
            if item.thumbnail:
                self._files.write(item_id, version, "thumbnail", item.thumbnail)
            if item.original:
                self._files.write(item_id, version, "original", item.original)
        captions = [
            {"id": item_id, "vector": caption, "meta": meta, "version": version}
            for item_id, _, meta, caption in prepared
            if caption is not None
        ]
        self._write(self._captions, captions)
        rows = [
            {
                "id": item_id,
                "vector": vector,
                "meta": meta,
                "created_at": now,
                "version": version,
                "caption": caption is not None,
                "thumbnail": bool(item.thumbnail),
                "original": bool(item.original),
            }
            for (item_id, vector, meta, caption), item in zip(prepared, items, strict=True)
        ]
        self._write(self._items, rows)
        # Tidying: what earlier versions left no longer counts, so a failure here loses nothing.
        uncaptioned = [item_id for item_id, _, _, caption in prepared if caption is None]
        self._delete_ids(self._captions, uncaptioned)
        for item_id in ids:
            self._files.drop_older(item_id, version)
        return [Item(item_id, meta, now) for item_id, _, meta, _ in prepared]

    def _prepare(self, item: NewItem) -> tuple[str, np.ndarray, Metadata, np.ndarray | None]:
        item_id = validate_id(item.id) if item.id is not None else secrets.token_hex(16)
        # The store's edge: nothing a later read or filter could fail on gets in.
        validate_metadata(item.metadata)
        caption = (
            unit_vector(item.caption_vector, self._dim, "caption vector") if item.caption_vector is not None else None
        )
        return item_id, unit_vector(item.vector, self._dim), item.metadata, caption

    def _write(self, collection: str, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), _ROWS_PER_WRITE):
            part = rows[start : start + _ROWS_PER_WRITE]
            self._call(f"writing {len(part)} rows", self._client.upsert, collection, part, timeout=self._timeout)

    def _delete_ids(self, collection: str, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = list(ids[start : start + _IDS_PER_QUERY])
            self._call("deleting", self._client.delete, collection, ids=part, timeout=self._timeout)

    def delete(self, item_id: str) -> None:
        """Remove an item; gone from every reader's searches once it returns."""
        self._row(item_id, ["id"])  # an unknown id says so
        self._delete_ids(self._items, [item_id])  # the commit point
        self._delete_ids(self._captions, [item_id])
        self._files.drop(item_id)

    # --- reads -----------------------------------------------------------------------------------

    def _rows(self, ids: Sequence[str], fields: list[str], collection: str | None = None) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _IDS_PER_QUERY):
            part = unique[start : start + _IDS_PER_QUERY]
            expr = f"id in [{', '.join(_id_literal(i) for i in part)}]"
            rows = self._call(
                "reading items",
                self._client.query,
                collection or self._items,
                filter=expr,
                output_fields=fields,
                **self._read_kwargs(),
            )
            found.update((row["id"], row) for row in rows)
        return found

    def _row(self, item_id: str, fields: list[str]) -> dict[str, Any]:
        try:
            validate_id(item_id)
        except InvalidItemError:
            raise ItemNotFoundError(item_id) from None
        row = self._rows([item_id], fields).get(item_id)
        if row is None:
            raise ItemNotFoundError(item_id)
        return row

    def get(self, item_id: str) -> Item:
        row = self._row(item_id, _ITEM_FIELDS)
        return Item(row["id"], row["meta"], row["created_at"])

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` that are stored: one query per 500 ids."""
        valid = [i for i in ids if _is_valid_id(i)]
        return set(self._rows(valid, ["id"]))

    def vector(self, item_id: str) -> np.ndarray:
        return np.asarray(self._row(item_id, ["vector"])["vector"], dtype=np.float32)

    def thumbnail(self, item_id: str) -> bytes:
        return self._file(item_id, "thumbnail", "thumbnail")

    def original(self, item_id: str) -> bytes:
        return self._file(item_id, "original", "stored original")

    def _file(self, item_id: str, kind: str, what: str) -> bytes:
        row = self._row(item_id, ["version", kind])
        data = self._files.read(item_id, row["version"], kind) if row[kind] else None
        if data is None:
            raise ItemNotFoundError(item_id, what=what)
        return data

    def page(self, offset: int, limit: int) -> list[Item]:
        """Items in id order (Milvus returns query results by primary key; it keeps no insertion order)."""
        after: str | None = None
        skip = offset
        # Milvus answers at most MAX_WINDOW rows past an offset: walk the ids to a deep page.
        while skip + limit > MAX_WINDOW:
            ids = self._ids_after(after, min(skip, MAX_WINDOW))
            if not ids:
                return []
            after, skip = ids[-1], skip - len(ids)
        rows = self._rows_after(after, _ITEM_FIELDS, limit, skip)
        return [Item(r["id"], r["meta"], r["created_at"]) for r in rows]

    def _ids_after(self, after: str | None, limit: int) -> list[str]:
        return [str(r["id"]) for r in self._rows_after(after, ["id"], limit)]

    def _rows_after(self, after: str | None, fields: list[str], limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """Up to `limit` rows with ids after `after` (all: None), skipping `offset`, in id order."""
        expr = f"id > {_string_literal(after)}" if after is not None else ""
        rows = self._call(
            "listing items",
            self._client.query,
            self._items,
            filter=expr,
            output_fields=fields,
            limit=limit,
            offset=offset,
            **self._read_kwargs(),
        )
        return sorted(rows, key=lambda r: str(r["id"]))

    def export_rows(self, chunk: int = 1000) -> Iterator[list[tuple[str, Metadata, np.ndarray, np.ndarray | None]]]:
        """Every item as (id, metadata, vector, caption vector or None), in chunks, in id order.

        Not a snapshot: writes made while it runs may or may not be included.
        """
        after: str | None = None
        fields = [*_ITEM_FIELDS, "vector", "version", "caption"]
        while True:
            rows = self._rows_after(after, fields, chunk)
            if not rows:
                return
            captioned = [r["id"] for r in rows if r["caption"]]
            captions = self._rows(captioned, ["id", "vector", "version"], self._captions) if captioned else {}
            yield [
                (
                    r["id"],
                    r["meta"],
                    np.asarray(r["vector"], dtype=np.float32),
                    np.asarray(captions[r["id"]]["vector"], dtype=np.float32)
                    if r["id"] in captions and captions[r["id"]]["version"] == r["version"]
                    else None,
                )
                for r in rows
            ]
            after = str(rows[-1]["id"])

    # --- search ----------------------------------------------------------------------------------

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
        row = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if exclude_id is not None:
            self._row(exclude_id, ["id"])  # an unknown id says so
        return self._search(row, k, filters, min_score, fields, exact, exclude_id)[0]

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
        return self._search(queries, k, filters, min_score, fields, exact, None)

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        filters: Sequence[FieldFilter],
        min_score: float | None,
        fields: Sequence[VectorField],
        exact: bool,
        exclude_id: str | None,
    ) -> list[list[Hit]]:
        matrix = unit_queries(queries, self._dim, k, fields)
        if not len(matrix):
            return []
        if k > MAX_WINDOW:
            raise InvalidItemError(f"k is {k}; Milvus returns at most {MAX_WINDOW} results")
        clauses = [filter_expression(filters)] if filters else []
        if exclude_id is not None:
            clauses.append(f"id != {_id_literal(exclude_id)}")
        expr = " and ".join(clauses)
        best: list[dict[str, Hit]] = [{} for _ in range(len(matrix))]
        for f in dict.fromkeys(fields):
            found = (
                self._search_images(matrix, k, expr, exact)
                if f is VectorField.IMAGE
                else self._search_captions(matrix, k, expr)
            )
            for of_query, hits in zip(best, found, strict=True):
                for hit in hits:
                    if hit.id not in of_query or hit.score > of_query[hit.id].score:
                        of_query[hit.id] = hit
        if not exact and not filters and VectorField.IMAGE in fields and self._kind is not IndexType.FLAT:
            with self._lock:
                self._searches += len(matrix)
                self._recent.extend(matrix[-_RECENT_QUERIES:].copy())
        return [
            [h for h in sorted(b.values(), key=lambda h: -h.score) if min_score is None or h.score >= min_score][:k]
            for b in best
        ]

    def _search_params(self, exact: bool) -> dict[str, Any]:
        if self._kind is IndexType.IVF:
            nlist = self._nlist or DEFAULT_NLIST
            # nprobe = nlist: every list of every indexed segment is scanned, an exhaustive search.
            return {"metric_type": "IP", "params": {"nprobe": nlist if exact else min(self._spec.ivf_nprobe, nlist)}}
        if self._kind is IndexType.HNSW:
            if exact:
                raise InvalidItemError(
                    "exact search is not offered over Milvus's hnsw index (a graph has no exhaustive mode): "
                    "use an ivf index (exact scans every list) or flat"
                )
            return {"metric_type": "IP", "params": {"ef": self._spec.hnsw_ef_search}}
        return {"metric_type": "IP"}

    def _search_images(self, matrix: np.ndarray, k: int, expr: str, exact: bool) -> list[list[Hit]]:
        params = self._search_params(exact)
        if self._kind is IndexType.HNSW:
            params["params"]["ef"] = max(params["params"]["ef"], k)  # Milvus requires ef >= k
        found = self._call(
            "searching",
            self._client.search,
            self._items,
            data=list(matrix),
            limit=k,
            filter=expr,
            output_fields=["meta"],
            search_params=params,
            anns_field="vector",
            **self._read_kwargs(),
        )
        return [
            [Hit(h["id"], float(h["distance"]), h["entity"]["meta"], VectorField.IMAGE) for h in hits] for hits in found
        ]

    def _search_captions(self, matrix: np.ndarray, k: int, expr: str) -> list[list[Hit]]:
        """Caption hits whose item row names their version (others are left over from earlier writes)."""
        limit = k
        while True:
            found = self._call(
                "searching captions",
                self._client.search,
                self._captions,
                data=list(matrix),
                limit=limit,
                filter=expr,
                output_fields=["version"],
                search_params={"metric_type": "IP"},
                anns_field="vector",
                **self._read_kwargs(),
            )
            rows = self._rows([h["id"] for hits in found for h in hits], ["id", "meta", "version", "caption"])
            hits = [
                [
                    Hit(h["id"], float(h["distance"]), rows[h["id"]]["meta"], VectorField.CAPTION)
                    for h in of_query
                    if h["id"] in rows
                    and rows[h["id"]]["caption"]
                    and rows[h["id"]]["version"] == h["entity"]["version"]
                ]
                for of_query in found
            ]
            short = any(len(h) < k and len(f) == limit for h, f in zip(hits, found, strict=True))
            if not short or limit >= MAX_WINDOW:
                return [h[:k] for h in hits]
            limit = min(limit * 4, MAX_WINDOW)  # left-overs took places: look further

    # --- index status ----------------------------------------------------------------------------

    def index_status(self) -> IndexStatus:
        """Milvus's index for the image vectors (flat, ivf or hnsw), its search setting, the last recall check."""
        with self._lock:
            return IndexStatus(
                type=str(self._kind),
                ef_search=self._spec.hnsw_ef_search if self._kind is IndexType.HNSW else None,
                nprobe=min(self._spec.ivf_nprobe, self._nlist or DEFAULT_NLIST)
                if self._kind is IndexType.IVF
                else None,
                searches=self._searches,
                recall=self._recall,
            )

    def check_recall(self, queries: int = 16, k: int = 10) -> RecallCheck | None:
        """Recall@k of the ivf index on up to `queries` recent searches, against nprobe = nlist (every list).

        None for flat (exact already) and hnsw: Milvus offers no exhaustive
        search through a graph index, and reading every vector out to compare
        would cost more than the searches it checks. The reference is exact
        only where Milvus searches growing segments exhaustively (its interim
        index off, as in our compose file); otherwise both sides share it.
        """
        with self._lock:
            recent = list(self._recent)[-queries:]
        if self._kind is not IndexType.IVF or not recent:
            return None
        matrix = np.stack(recent)
        found = self._search_images(matrix, k, "", exact=False)
        truth = self._search_images(matrix, k, "", exact=True)
        shares = [
            len({h.id for h in a} & {h.id for h in b}) / max(1, len(b)) for a, b in zip(found, truth, strict=True)
        ]
        check = RecallCheck(recall=float(np.mean(shares)), k=k, queries=len(recent), measured_at=time.time())
        with self._lock:
            self._recall = check
        return check

    def wait_for_index(self, timeout: float | None = None) -> None:
        """Seal what is written (a flush) and block until Milvus's index covers every row (tools, benchmarks).

        Until then Milvus searches the newest rows without the index: exhaustively,
        or through its interim index where the server has it on.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else 3600)
        self._call("flushing", self._client.flush, self._items, timeout=max(1.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            described = self._call("describing the index", self._client.describe_index, self._items, "vector")
            # Not pending_index_rows: compactions (an upsert writes a delete too) keep re-indexing
            # merged segments for many minutes while the rows they hold are already indexed.
            if int(described.get("indexed_rows", 0)) >= int(described.get("total_rows", 0)):
                return
            time.sleep(1)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._client.close()


def _index_params(spec: IndexSpec) -> dict[str, Any]:
    """Milvus index parameters for `spec` (auto is flat: Milvus cannot change a collection's index by size)."""
    if spec.type is IndexType.HNSW:
        return {"index_type": "HNSW", "params": {"M": spec.hnsw_m, "efConstruction": spec.hnsw_ef_construction}}
    if spec.type is IndexType.IVF:
        return {"index_type": "IVF_FLAT", "params": {"nlist": spec.ivf_nlist or DEFAULT_NLIST}}
    return {"index_type": "FLAT"}


def _kind_of(milvus_index: str) -> IndexType:
    kinds = {"FLAT": IndexType.FLAT, "IVF_FLAT": IndexType.IVF, "HNSW": IndexType.HNSW}
    if milvus_index not in kinds:
        raise IncompatibleStoreError(f"the collection's {milvus_index} index is not one this store searches")
    return kinds[milvus_index]


def _is_valid_id(item_id: str) -> bool:
    try:
        validate_id(item_id)
    except InvalidItemError:
        return False
    return True


def _is_outage(exc: Exception) -> bool:
    """Whether a pymilvus error says Milvus is down, restarting or slow, rather than refusing the call."""
    from pymilvus.exceptions import MilvusUnavailableException

    if isinstance(exc, MilvusUnavailableException):
        return True
    text = str(getattr(exc, "message", "") or exc).lower()
    signs = ("connect", "unavailable", "deadline", "timeout", "timed out", "not loaded", "not ready", "recover")
    return getattr(exc, "code", None) == 2 or any(sign in text for sign in signs)
