"""Bulk embedding on Ray Data: `clipsearch embed PATH... (--out DIR | --store milvus)`.

The pipeline, one Ray Data dataset from end to end:

    paths (found by the driver, or read from Parquet/CSV lists by Ray Data)
      -> read and hash (Ray tasks; clipsearch.bulk.read: the same content-hash ids as `clipsearch index`)
      -> skip known ids, decode, preprocess, embed (an actor pool; ImageTower.prepare and encode)
      -> the driver: shards in DIR, or counts only (with --store milvus the actors upsert)

Every row comes out with a status (embedded, skipped or failed) so the driver
counts and lists what happened to each file; a file that cannot be read or
decoded is a row with an error, never a failed task. Items get the vector and
`{"path": ...}` metadata, no thumbnail (like `clipsearch import-vectors`).

The command line passes in its own file discovery and hashing (clipsearch.bulk's
find_images and read), so both commands name files alike and this package
never imports the command line that imports it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import ray
import ray.data

from service.settings import ModelSettings, StoreSettings

if TYPE_CHECKING:
    from models.clip import ClipTowers

ROOT = Path(__file__).resolve().parent.parent
LIST_SUFFIXES = frozenset({".csv", ".parquet"})
SHARD_PREFIX = "shard-"


class Content(Protocol):
    """A file read and named by its content (clipsearch.bulk.Found)."""

    @property
    def id(self) -> str: ...

    @property
    def data(self) -> bytes: ...


class Progress(Protocol):
    """clipsearch.bulk.Progress: told the total, then each batch done."""

    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


class Status(StrEnum):
    EMBEDDED = "embedded"
    SKIPPED = "skipped"  # already stored (or in a shard), or the same content met earlier in the batch
    FAILED = "failed"


@dataclass
class EmbedSummary:
    embedded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    shards: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Placement:
    """How many embedding actors and what each takes from the cluster."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float


def local_ray_init_options(num_cpus: int | None = None) -> dict[str, Any]:
    """`ray.init` arguments for a one-machine Ray: loopback only, no dashboard, this checkout on the workers' path.

    The workers import this repository's packages from PYTHONPATH: an installed
    clipsearch elsewhere (another checkout's editable install) would otherwise win.
    """
    return {
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "_node_ip_address": "127.0.0.1",  # Ray advertises the machine's outside address unless told
        "runtime_env": {
            "env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        },
        "log_to_driver": False,
    }


def connect(address: str | None) -> None:
    """Use the Ray this process is already connected to, the cluster at `address`, or start a local one.

    A local Ray runs without token auth (RAY_AUTH_MODE=disabled unless set): it
    listens on 127.0.0.1 only, and 2.60's default would prompt for a token.
    """
    if ray.is_initialized():
        return
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(**local_ray_init_options())
    else:
        ray.init(address=address, log_to_driver=False)


def plan_placement(actors: int | None, gpus_per_actor: float | None, cpus_per_actor: float) -> Placement:
    """Defaults from the cluster: one actor per GPU where there are GPUs, else one actor on a fraction of a core.

    A fraction, because a pool that takes every core leaves Ray Data's read tasks
    none and the pipeline hangs (seen on 2 cores with 2 actors of 1 CPU).
    """
    gpus = float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if actors is None:
        actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor > 0 else 1
    return Placement(actors, gpus_per_actor, cpus_per_actor)


def split_lists(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(the .csv/.parquet lists of paths among `paths`, the rest: image files and folders)."""
    lists = [p for p in paths if p.is_file() and p.suffix.lower() in LIST_SUFFIXES]
    return lists, [p for p in paths if p not in lists]


def path_dataset(images: Iterable[Path], lists: Sequence[Path]) -> tuple[ray.data.Dataset, int]:
    """(a dataset of `path` (as recorded) and `file` (absolute, to open), how many rows).

    `images` are files the driver found (the command line walks folders as
    `clipsearch index` does); each of `lists` is a `.csv` or `.parquet` file with
    a `path` column, read by Ray Data, its relative paths taken from its own folder.
    """
    parts: list[ray.data.Dataset] = []
    found = [{"path": str(p), "file": str(p.absolute())} for p in images]
    if found:
        parts.append(ray.data.from_items(found))
    for listing in lists:
        reader = ray.data.read_csv if listing.suffix.lower() == ".csv" else ray.data.read_parquet
        listed = reader(str(listing.absolute())).select_columns(["path"])
        base = str(listing.absolute().parent)
        parts.append(listed.map_batches(functools.partial(_absolute_files, base=base), batch_format="numpy"))
    if not parts:
        return ray.data.from_items([]), 0
    dataset = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return dataset, dataset.count()


def _absolute_files(batch: dict[str, np.ndarray], base: str) -> dict[str, np.ndarray]:
    paths = [str(p) for p in batch["path"]]
    files = [p if Path(p).is_absolute() else str(Path(base) / p) for p in paths]
    return {"path": np.array(paths, dtype=object), "file": np.array(files, dtype=object)}


def read_files(batch: dict[str, np.ndarray], read: Callable[[Path], Content]) -> dict[str, np.ndarray]:
    """Each file's bytes and content-hash id (`read`: clipsearch.bulk.read), or why it cannot be read."""
    ids, datas, errors = [], [], []
    for file in batch["file"]:
        path = Path(str(file))
        try:
            found = read(path)
            ids.append(found.id)
            datas.append(found.data)
            errors.append("")
        except OSError as exc:
            ids.append("")
            datas.append(b"")
            errors.append(f"cannot read: {exc.strerror or exc}")
    return {
        "path": np.array([str(p) for p in batch["path"]], dtype=object),
        "id": np.array(ids, dtype=object),
        "data": np.array(datas, dtype=object),
        "error": np.array(errors, dtype=object),
    }


class Embedder:
    """The image tower in a Ray actor: skips known ids, decodes and embeds the rest, upserts where told.

    Args:
        model: which CLIP model (the service's model settings).
        max_pixels: the service's decode limit.
        known: ids already done (the shards' ids), or the Milvus store's settings
            (asked per batch, and written into: each actor upserts what it embeds).
    """

    def __init__(self, model: ModelSettings, max_pixels: int, known: frozenset[str] | StoreSettings) -> None:
        from models.clip import load_clip, set_torch_threads

        # Ray sets OMP_NUM_THREADS to the actor's CPUs (at least 1); torch otherwise takes every core.
        set_torch_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self._towers: ClipTowers = load_clip(
            model.name,
            model.pretrained,
            model.device,
            fallback_to_demo=model.fallback_to_demo,
            precision=model.precision,
            pipeline=model.pipeline,
        )
        self._max_pixels = max_pixels
        self._store = None
        if isinstance(known, StoreSettings):
            from service.stores import open_store

            info = self._towers.info
            self._store = open_store(known, info.dim, info.name)
            self._known: Callable[[Sequence[str]], set[str]] = self._store.known_ids
        else:
            done = known
            self._known = lambda ids: set(done.intersection(ids))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from index.types import NewItem
        from models.errors import InvalidImageError

        n = len(batch["id"])
        ids = [str(i) for i in batch["id"]]
        errors = [str(e) for e in batch["error"]]
        status = [Status.FAILED if errors[i] else Status.EMBEDDED for i in range(n)]
        readable = [i for i in range(n) if not errors[i]]
        known = self._known([ids[i] for i in readable])
        seen: set[str] = set()
        for i in readable:
            if ids[i] in known or ids[i] in seen:
                status[i] = Status.SKIPPED
            seen.add(ids[i])
        rows, pixels = [], []
        for i in range(n):
            if status[i] is not Status.EMBEDDED:
                continue
            try:
                pixels.append(self._towers.image.prepare(bytes(batch["data"][i]), max_pixels=self._max_pixels))
                rows.append(i)
            except InvalidImageError as exc:
                status[i], errors[i] = Status.FAILED, str(exc)
        vectors = np.zeros((n, self._towers.info.dim), dtype=np.float32)
        if pixels:
            vectors[rows] = self._towers.image.encode(pixels)
            if self._store is not None:
                self._store.upsert([NewItem(vectors[i], ids[i], {"path": str(batch["path"][i])}) for i in rows])
        return {
            "path": batch["path"],
            "id": np.array(ids, dtype=object),
            "status": np.array([str(s) for s in status], dtype=object),
            "error": np.array(errors, dtype=object),
            "vector": vectors,
        }


class ShardWriter:
    """Shards in DIR, each a folder in `clipsearch export`'s format that `clipsearch import` loads.

    A shard is written to a temporary folder and renamed when complete, so a run
    that stops leaves whole shards only; their ids are what a rerun skips.
    """

    def __init__(self, out: Path, model: str, dim: int, shard_size: int) -> None:
        self._out, self._model, self._dim, self._size = out, model, dim, shard_size
        out.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        existing = sorted(p for p in out.glob(f"{SHARD_PREFIX}*") if p.is_dir())
        for shard in existing:
            stored = (shard / "model.txt").read_text().strip()
            if stored != model:
                raise ValueError(f"{shard} holds {stored} vectors, not {model}: use another --out")
            self.done.update((shard / "ids.txt").read_text().split())
        self._next = 1 + max((int(p.name.removeprefix(SHARD_PREFIX)) for p in existing), default=-1)
        self._ids: list[str] = []
        self._paths: list[str] = []
        self._vectors: list[np.ndarray] = []
        self.written: list[Path] = []

    def add(self, item_id: str, path: str, vector: np.ndarray) -> None:
        if item_id in self.done:  # the same content met in another batch of this run
            raise KeyError(item_id)
        self.done.add(item_id)
        self._ids.append(item_id)
        self._paths.append(path)
        self._vectors.append(vector)
        if len(self._ids) >= self._size:
            self.flush()

    def flush(self) -> None:
        if not self._ids:
            return
        name = f"{SHARD_PREFIX}{self._next:05d}"
        temporary = self._out / f".{name}.tmp"
        temporary.mkdir()
        np.save(temporary / "vectors.npy", np.stack(self._vectors))
        (temporary / "ids.txt").write_text("".join(i + "\n" for i in self._ids))
        (temporary / "metadata.jsonl").write_text("".join(json.dumps({"path": p}) + "\n" for p in self._paths))
        (temporary / "model.txt").write_text(self._model + "\n")
        for part in temporary.iterdir():
            _fsync(part)
        temporary.rename(self._out / name)
        _fsync(self._out)
        self.written.append(self._out / name)
        self._next += 1
        self._ids, self._paths, self._vectors = [], [], []


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def embed(
    images: Iterable[Path],
    lists: Sequence[Path] = (),
    *,
    read: Callable[[Path], Content],
    model: ModelSettings,
    max_pixels: int,
    placement: Placement,
    batch_size: int,
    out: ShardWriter | None = None,
    store: StoreSettings | None = None,
    progress: Progress | None = None,
) -> EmbedSummary:
    """Embed `images` and the files `lists` name into shards (`out`) or the Milvus store (`store`).

    Call connect() first. `read` reads a file and names it by its content (clipsearch.bulk.read).
    """
    if (out is None) == (store is None):
        raise ValueError("give exactly one of out and store")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours shows images/s; Ray's bars would interleave with it
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per dataset on the terminal
    dataset, total = path_dataset(images, lists)
    if progress is not None:
        progress.start(total)
    summary = EmbedSummary()
    counted: set[str] = set()  # with the store: the same content met in two batches is counted once
    if total == 0:
        return summary
    reading = functools.partial(read_files, read=read)
    embedded = dataset.map_batches(reading, batch_size=batch_size, batch_format="numpy").map_batches(
        Embedder,
        fn_constructor_kwargs={
            "model": model,
            "max_pixels": max_pixels,
            "known": store if store is not None else frozenset(out.done if out is not None else ()),
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=placement.actors),
        num_cpus=placement.cpus_per_actor,
        num_gpus=placement.gpus_per_actor,
    )
    for batch in _batches(embedded):
        for path, item_id, status, error, vector in zip(
            batch["path"], batch["id"], batch["status"], batch["error"], batch["vector"], strict=True
        ):
            if status == Status.FAILED:
                summary.failed.append((str(path), str(error)))
            elif status == Status.SKIPPED:
                summary.skipped += 1
            elif out is None:
                if item_id in counted:
                    summary.skipped += 1
                else:
                    counted.add(str(item_id))
                    summary.embedded += 1
            else:
                try:
                    out.add(str(item_id), str(path), vector)
                    summary.embedded += 1
                except KeyError:
                    summary.skipped += 1
        if progress is not None:
            progress.advance(len(batch["id"]))
    if out is not None:
        out.flush()
        summary.shards = out.written
    summary.failed.sort()
    return summary


def _batches(dataset: ray.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
