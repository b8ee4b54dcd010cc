"""Bulk indexing of image folders: `clipsearch index PATH... [--server URL | --data-dir DIR]`.

Files are found recursively by extension, named by the SHA-256 of their bytes
(so a file already indexed, under any path, is skipped and an interrupted run
resumes where it stopped), and sent in batches, to a running service or
straight into a data directory. Each item records its path in metadata.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from client import Client, ClipsearchError
from index.errors import StoreError
from index.types import VectorStore
from models.errors import InvalidImageError

if TYPE_CHECKING:
    from models.clip import ClipTowers

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Found:
    path: Path
    data: bytes
    id: str


@dataclass
class Summary:
    indexed: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


class Sink(Protocol):
    """Where a batch of images goes."""

    def known(self, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` that are already stored."""
        ...

    def add(self, batch: Sequence[Found]) -> None:
        """Store the batch (raises on a bad image, naming it)."""
        ...


def find_images(paths: Sequence[Path]) -> Iterator[Path]:
    """Image files under `paths`, recursively, each real file once (symlink loops are not followed)."""
    seen: set[Path] = set()
    for root in paths:
        candidates = [root] if root.is_file() else _walk(root)
        for path in candidates:
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                real = path.resolve()
                if real not in seen:
                    seen.add(real)
                    yield path


def _walk(root: Path) -> Iterator[Path]:
    for folder, folders, files in os.walk(root):
        folders.sort()  # a stable order, so reruns and reports are the same
        for name in sorted(files):
            yield Path(folder) / name


def read(path: Path) -> Found:
    data = path.read_bytes()
    return Found(path, data, hashlib.sha256(data).hexdigest()[:32])


class ServerSink:
    def __init__(self, client: Client) -> None:
        self._client = client

    def known(self, ids: Sequence[str]) -> set[str]:
        known = set()
        for item_id in ids:
            try:
                self._client.get(item_id)
                known.add(item_id)
            except ClipsearchError as exc:
                if exc.status != 404:
                    raise
        return known

    def add(self, batch: Sequence[Found]) -> None:
        self._client.add_images(
            [(f.path.name, f.data) for f in batch],
            ids=[f.id for f in batch],
            metadata=[{"path": str(f.path)} for f in batch],
        )


class LocalSink:
    """Straight into a data directory, through the same ingest path as `POST /v1/images`.

    The towers run behind an Encoder (the service's micro-batchers) on an event
    loop of the sink's own, so a locally indexed item gets what an uploaded one
    gets: the same decode, embedding, thumbnail and, where configured, original.
    Call `close()` when done. The model's modules are imported here, not at the
    top: indexing to a server must start without torch.
    """

    def __init__(
        self, towers: ClipTowers, store: VectorStore, *, max_pixels: int, keep_originals: bool, batch_size: int
    ) -> None:
        from models.batcher import BatchLimits
        from models.encoder import Encoder

        self._store = store
        self._keep_originals = keep_originals
        self._runner = asyncio.Runner()
        limits = BatchLimits(max_batch_size=batch_size, max_wait_s=0, max_queue=max(1024, batch_size))
        self._encoder = Encoder(towers, limits, max_pixels=max_pixels)
        self._runner.run(self._start())

    async def _start(self) -> None:
        self._encoder.start()  # the batchers' consumers live on the runner's loop, between calls too

    def known(self, ids: Sequence[str]) -> set[str]:
        return self._store.known_ids(ids)

    def add(self, batch: Sequence[Found]) -> None:
        from service.ingest import ingest_images

        self._runner.run(
            ingest_images(
                self._encoder,
                self._store,
                [(f.path.name, f.data) for f in batch],
                ids=[f.id for f in batch],
                metadata=[{"path": str(f.path)} for f in batch],
                keep_originals=self._keep_originals,
            )
        )

    def close(self) -> None:
        self._runner.run(self._encoder.stop())
        self._runner.close()


def index_paths(paths: Sequence[Path], sink: Sink, batch_size: int, progress: Progress | None = None) -> Summary:
    """Index every image under `paths` into `sink`; a batch that fails is retried one file at a time."""
    summary = Summary()
    files = list(find_images(paths))
    if progress is not None:
        progress.start(len(files))
    for start in range(0, len(files), batch_size):
        found: list[Found] = []
        for path in files[start : start + batch_size]:
            try:
                found.append(read(path))
            except OSError as exc:
                summary.failed.append((path, f"cannot read: {exc.strerror or exc}"))
        known = sink.known([f.id for f in found])
        first_of_each: dict[str, Found] = {}
        for f in found:
            if f.id not in known:
                first_of_each.setdefault(f.id, f)  # the first path met for a content is the one recorded
        fresh = list(first_of_each.values())
        summary.skipped += len(found) - len(fresh)
        _add(sink, fresh, summary)
        if progress is not None:
            progress.advance(len(files[start : start + batch_size]))
    return summary


def _add(sink: Sink, batch: Sequence[Found], summary: Summary) -> None:
    if not batch:
        return
    try:
        sink.add(batch)
        summary.indexed += len(batch)
    except (ClipsearchError, InvalidImageError, StoreError) as exc:
        if isinstance(exc, ClipsearchError) and (exc.status in (401, 403) or exc.status >= 500):
            raise  # no API key, a wrong one, or a failing server: no file would go in, so stop at the first
        if len(batch) == 1:
            summary.failed.append((batch[0].path, str(exc)))
            return
        for one in batch:  # find which file it was; the others still go in
            _add(sink, [one], summary)


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...
