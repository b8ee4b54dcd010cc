"""Reading a SQLite store's collection without opening it for writing: export, and the dimension it holds.

Both read one consistent snapshot through SQLite's WAL, so a server may keep
running on the directory meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np

from index.errors import StorageUnavailableError
from index.store import DB_FILE
from index.types import Metadata

# (id, metadata, vector, caption vector or None), as `clipsearch export` writes them.
ExportRow = tuple[str, Metadata, np.ndarray, np.ndarray | None]


def read_collection(data_dir: Path, chunk: int = 10_000) -> tuple[int, str, Iterator[list[ExportRow]]]:
    """(dimension, model, chunks of (id, metadata, vector, caption vector or None)) of a data directory, read-only.

    Reads one consistent snapshot through SQLite's WAL, so a server may keep
    running on the directory meanwhile.

    Raises:
        StorageUnavailableError: no readable store in `data_dir`.
    """
    try:
        db = sqlite3.connect(f"file:{data_dir / DB_FILE}?mode=ro", uri=True)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        # Stores written before captions existed have no caption table.
        has_captions = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'caption_vectors'").fetchone() is not None
    except sqlite3.Error as exc:
        raise StorageUnavailableError(f"no readable store in {data_dir}: {exc}") from exc
    dim = int(meta["dim"])
    sql = (
        "SELECT items.id, metadata, items.vector, caption_vectors.vector FROM items "
        "LEFT JOIN caption_vectors USING (id) ORDER BY seq"
        if has_captions
        else "SELECT id, metadata, vector, NULL FROM items ORDER BY seq"
    )

    def chunks() -> Iterator[list[ExportRow]]:
        try:
            db.execute("BEGIN")
            rows = db.execute(sql)
            while part := rows.fetchmany(chunk):
                yield [
                    (
                        r[0],
                        json.loads(r[1]),
                        np.frombuffer(r[2], dtype=np.float32),
                        np.frombuffer(r[3], dtype=np.float32) if r[3] is not None else None,
                    )
                    for r in part
                ]
            db.execute("COMMIT")
        finally:
            db.close()

    return dim, meta["model"], chunks()


def stored_dim(data_dir: Path) -> int | None:
    """The dimension of the vectors stored in `data_dir`; None when it holds no store yet."""
    if not (data_dir / DB_FILE).exists():
        return None
    with closing(sqlite3.connect(f"file:{data_dir / DB_FILE}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
    return int(row[0]) if row else None
