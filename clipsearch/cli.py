"""The `clipsearch` command line.

Only what every command needs is imported here: torch, open_clip, faiss and
transformers take seconds to import, so the commands that need them (serve,
import, export, local indexing) import them when they run, and `--help`,
`search` and `index --server` start in about a second
(tests/clipsearch/test_cli.py checks which modules an HTTP-only command loads).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, track
from rich.table import Table

from client import Client, ClipsearchError
from client.client import DEFAULT_URL
from clipsearch.bulk import ServerSink, index_paths
from index.errors import InvalidItemError, StoreError
from index.metadata import validate_metadata
from index.options import IndexType, StoreBackend
from models.errors import ModelLoadError
from models.options import Precision

if TYPE_CHECKING:
    from index.export import ExportRow
    from service.schemas import SearchHit
    from service.settings import Settings

cli = typer.Typer(help="Zero-shot image–text retrieval with CLIP and FAISS.", no_args_is_help=True)


@cli.callback()
def _group() -> None:
    """Zero-shot image–text retrieval with CLIP and FAISS."""


def build_settings(overrides: dict[str, Any]) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from service.settings import Settings

    given: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        group, _, name = dotted.rpartition(".")
        target = given.setdefault(group, {}) if group else given
        target[name] = value
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    except SettingsError as exc:
        # pydantic-settings cannot parse a nested value (a list or an object) from the environment.
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise typer.BadParameter(
            f"{exc}{cause}. Lists and objects in CLIPSEARCH_ variables are JSON, "
            """e.g. CLIPSEARCH_AUTH__API_KEYS='["a-key-of-16-chars-or-more"]'"""
        ) from None


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [env CLIPSEARCH_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [env CLIPSEARCH_PORT]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="store directory [env CLIPSEARCH_STORE__DATA_DIR]")] = None,
    model: Annotated[
        str | None, typer.Option(help="open_clip model name or `demo` [env CLIPSEARCH_MODEL__NAME]")
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="tag, hf-hub:id, checkpoint path or `none` [env CLIPSEARCH_MODEL__PRETRAINED]")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N [env CLIPSEARCH_MODEL__DEVICE]")] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(help="largest forward pass; 1 turns batching off [env CLIPSEARCH_BATCHING__MAX_BATCH_SIZE]"),
    ] = None,
    max_batch_wait_ms: Annotated[
        float | None, typer.Option(help="wait for more items [env CLIPSEARCH_BATCHING__MAX_BATCH_WAIT_MS]")
    ] = None,
    index: Annotated[
        IndexType | None, typer.Option(help="auto, flat, hnsw or ivf [env CLIPSEARCH_STORE__INDEX]")
    ] = None,
    precision: Annotated[
        Precision | None, typer.Option(help="auto, fp32, bf16 or fp16 [env CLIPSEARCH_MODEL__PRECISION]")
    ] = None,
    captioner: Annotated[
        str | None,
        typer.Option(help="BLIP captioner: hub id, directory or `demo`; unset: off [env CLIPSEARCH_BLIP__CAPTIONER]"),
    ] = None,
    itm: Annotated[
        str | None,
        typer.Option(help="BLIP ITM reranker: hub id, directory or `demo`; unset: off [env CLIPSEARCH_BLIP__ITM]"),
    ] = None,
    backend: Annotated[
        StoreBackend | None, typer.Option("--store", help="sqlite or milvus [env CLIPSEARCH_STORE__BACKEND]")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="API processes, with --store milvus [env CLIPSEARCH_WORKERS]")
    ] = None,
    on_ray: Annotated[
        bool, typer.Option("--ray", help="on Ray Serve: API replicas, image and text tower replicas (--store milvus)")
    ] = False,
    address: Annotated[str | None, typer.Option(help="with --ray: the cluster (auto, ray://...); unset: local")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="with --ray: replicas of each tower")] = 1,
    api_replicas: Annotated[int, typer.Option(min=1, help="with --ray: replicas of the HTTP API")] = 1,
    gpus_per_replica: Annotated[float, typer.Option(min=0, help="with --ray: GPUs per tower replica")] = 0.0,
    cpus_per_replica: Annotated[float, typer.Option(min=0.01, help="with --ray: CPUs per tower replica")] = 0.5,
) -> None:
    """Run the HTTP service (with --ray: as a Ray Serve application, docs/ray.md)."""
    import uvicorn

    from service.app import create_app
    from service.logs import configure_logging

    options = {
        "host": host,
        "port": port,
        "workers": workers,
        "store.data_dir": data_dir,
        "model.name": model,
        "model.pretrained": pretrained,
        "model.device": device,
        "batching.max_batch_size": max_batch_size,
        "batching.max_batch_wait_ms": max_batch_wait_ms,
        "store.index": index,
        "store.backend": backend,
        "model.precision": precision,
        "blip.captioner": captioner,
        "blip.itm": itm,
    }
    settings = build_settings(options)
    configure_logging(settings.log_level, settings.log_format)
    if on_ray:
        _serve_on_ray(settings, address, replicas, api_replicas, gpus_per_replica, cpus_per_replica)
        return
    # log_config=None: uvicorn's loggers propagate to ours, so they share its format and request ids.
    if settings.workers == 1:
        uvicorn.run(
            create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None
        )
        return
    # Each worker is a new process that builds its app from the environment: the options go there.
    for dotted, value in options.items():
        if value is not None:
            os.environ["CLIPSEARCH_" + dotted.upper().replace(".", "__")] = str(value)
    uvicorn.run(
        "service.app:create_app_from_environment",
        factory=True,
        workers=settings.workers,
        # uvicorn's 5 s for a worker to answer its supervisor's ping was too short for one that is
        # importing torch on a busy machine: it was killed and restarted, over and over.
        timeout_worker_healthcheck=120,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
    )


def _require_ray() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("scaleout") is None:
        raise typer.BadParameter("this needs Ray and clipsearch's scaleout package: pip install 'clipsearch[ray]'")


def _serve_on_ray(settings: Settings, address: str | None, towers: int, api: int, gpus: float, cpus: float) -> None:
    """Deploy the Serve application and keep this process (the local Ray's driver) alive until Ctrl-C."""
    if settings.store.backend is not StoreBackend.MILVUS:
        raise typer.BadParameter("--ray needs --store milvus: every API replica opens the store")
    _require_ray()
    # Imported here: ray takes seconds to import and only --ray needs it.
    from ray import serve

    from scaleout.serve_app import Replicas, start

    start(settings, Replicas(towers=towers, api=api, gpus_per_tower=gpus, cpus_per_tower=cpus), address=address)
    typer.echo(f"serving on Ray Serve at http://{settings.host}:{settings.port} (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()  # type: ignore[no-untyped-call]


def _read_lines(path: Path, expected: int, what: str) -> list[str]:
    lines = path.read_text().splitlines()
    if len(lines) != expected:
        raise typer.BadParameter(
            f"{path} has {len(lines)} lines but there are {expected} vectors: one {what} per vector"
        )
    return lines


@cli.command("import-vectors")
def import_vectors(
    vectors: Annotated[Path, typer.Option(help="an (n, dim) .npy file of embeddings", exists=True, dir_okay=False)],
    data_dir: Annotated[Path | None, typer.Option(help="store directory [env CLIPSEARCH_STORE__DATA_DIR]")] = None,
    ids: Annotated[Path | None, typer.Option(help="one id per line; default: the row number", exists=True)] = None,
    metadata: Annotated[
        Path | None, typer.Option(help="one JSON object per line (JSON Lines)", exists=True, dir_okay=False)
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="model the vectors came from, for a new store [env CLIPSEARCH_MODEL__NAME]")
    ] = None,
    chunk: Annotated[int, typer.Option(min=1, help="vectors per transaction")] = 20_000,
    caption_vectors: Annotated[
        Path | None,
        typer.Option(
            help="an (n, dim) .npy of caption embeddings, row for row, zero rows for none (as export writes)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    backend: Annotated[
        StoreBackend | None, typer.Option("--store", help="sqlite or milvus [env CLIPSEARCH_STORE__BACKEND]")
    ] = None,
) -> None:
    """Load precomputed embeddings (e.g. clip-retrieval's .npy files) into a data directory or Milvus.

    Vectors are checked against the store's (or the model's) dimension, normalised,
    and written durably like any other write. Stop the server on that directory first
    (a Milvus collection may stay in service).
    """
    from index.ann import IndexSpec
    from index.export import stored_dim
    from index.store import SqliteFaissStore
    from index.types import NewItem
    from models.clip import model_dim
    from service.stores import open_store

    settings = build_settings({"store.data_dir": data_dir, "model.name": model, "store.backend": backend})
    sqlite = settings.store.backend is StoreBackend.SQLITE
    array = np.load(vectors, mmap_mode="r")
    if array.ndim != 2:
        raise typer.BadParameter(f"{vectors} holds an array of shape {array.shape}; expected (n, dim)")
    try:
        dim = (stored_dim(settings.store.data_dir) if sqlite else None) or model_dim(settings.model.name)
    except ModelLoadError as exc:
        raise typer.BadParameter(str(exc)) from None
    if array.shape[1] != dim:
        raise typer.BadParameter(f"the vectors have {array.shape[1]} dimensions; {settings.model.name} makes {dim}")
    n = array.shape[0]
    captions = np.load(caption_vectors, mmap_mode="r") if caption_vectors else None
    if captions is not None and captions.shape != array.shape:
        raise typer.BadParameter(
            f"{caption_vectors} has shape {captions.shape}; expected {array.shape}, like the vectors"
        )
    id_list = _read_lines(ids, n, "id") if ids else [str(i) for i in range(n)]
    metas = _read_metadata(metadata, n) if metadata else [{}] * n
    try:
        # SQLite is flat while loading: its ANN index is built once at the end, not after every chunk.
        # Milvus builds its index itself, segment by segment.
        loading = IndexSpec(type=IndexType.FLAT) if sqlite else None
        store = open_store(settings.store, dim, settings.model.name, loading)
        try:
            for start in track(range(0, n, chunk), description=f"importing {n} vectors"):
                rows = np.asarray(array[start : start + chunk], dtype=np.float32)
                caption_rows = (
                    np.asarray(captions[start : start + chunk], dtype=np.float32)
                    if captions is not None
                    else np.zeros_like(rows)
                )
                store.upsert(
                    [
                        NewItem(v, id_list[start + i], metas[start + i], caption_vector=c if c.any() else None)
                        for i, (v, c) in enumerate(zip(rows, caption_rows, strict=True))
                    ]
                )
            if not sqlite:
                store.wait_for_index()
                typer.echo(f"imported {n} vectors into Milvus: {store.count()} items, {store.index_type} index")
                return
        finally:
            store.close()
        final = SqliteFaissStore(settings.store.data_dir, dim, settings.model.name, settings.store.index_spec())
        final.wait_for_index()
        typer.echo(
            f"imported {n} vectors into {settings.store.data_dir}: {final.count()} items, {final.index_type} index"
        )
        final.close()
    except StoreError as exc:
        raise typer.BadParameter(str(exc)) from None


def _read_metadata(path: Path, n: int) -> list[dict[str, Any]]:
    """Every line of a JSON Lines file, checked against the store's metadata rule before anything is written."""
    metas = []
    for number, line in enumerate(_read_lines(path, n, "JSON object"), start=1):
        try:
            metas.append(validate_metadata(json.loads(line, parse_constant=_not_json)))
        except (ValueError, RecursionError, InvalidItemError) as exc:
            raise typer.BadParameter(f"{path} line {number}: {exc}") from None
    return metas


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (numbers must be finite)")


@cli.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for, in words")],
    k: Annotated[int, typer.Option(min=1, help="how many results")] = 10,
    server: Annotated[str, typer.Option(help="the service's URL", envvar="CLIPSEARCH_SERVER")] = DEFAULT_URL,
    api_key: Annotated[
        str | None, typer.Option(help="API key, if the service needs one", envvar="CLIPSEARCH_API_KEY")
    ] = None,
) -> None:
    """Search a running service by text and print the results as a table."""
    try:
        with Client(server, api_key=api_key) as client:
            hits = client.search_text(query, k=k)
    except ClipsearchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach {server}: {exc}", err=True)
        raise typer.Exit(1) from None
    console = Console()
    console.print(results_table(hits, console.width))


def results_table(hits: list[SearchHit], width: int) -> Table:
    """Rank, id, score and metadata for a terminal `width` columns wide.

    Ids are printed whole, so they can be copied into the next command: the id
    column is as wide as the longest id, as far as the terminal allows, and the
    metadata column gives way first; an id wider than that is folded onto the
    next lines, never cut short.
    """
    # Widths set here, not measured by rich, which would let an unbreakable word push the table past the terminal.
    fixed = len("rank") + len("-0.0000") + 5 + 2 * 4  # the rank and score columns, 5 borders, padding
    room = max(width - fixed, 16)
    id_width = min(max((len(hit.id) for hit in hits), default=2), room - 8)
    table = Table()
    table.add_column("rank", no_wrap=True)
    table.add_column("id", width=id_width, overflow="fold")
    table.add_column("score", no_wrap=True)
    table.add_column("metadata", width=room - id_width, overflow="fold")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), hit.id, f"{hit.score:.4f}", json.dumps(hit.metadata))
    return table


@cli.command("export")
def export_collection(
    out: Annotated[
        Path,
        typer.Argument(help="a new folder for vectors.npy, caption_vectors.npy, ids.txt, metadata.jsonl, model.txt"),
    ],
    data_dir: Annotated[Path | None, typer.Option(help="store directory [env CLIPSEARCH_STORE__DATA_DIR]")] = None,
    backend: Annotated[
        StoreBackend | None, typer.Option("--store", help="sqlite or milvus [env CLIPSEARCH_STORE__BACKEND]")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="with --store milvus: whose collection [env CLIPSEARCH_MODEL__NAME]")
    ] = None,
) -> None:
    """Write a collection out (a server may keep running on it); `clipsearch import` reads it back."""
    from index.export import read_collection

    settings = build_settings({"store.data_dir": data_dir, "store.backend": backend, "model.name": model})
    try:
        if settings.store.backend is StoreBackend.SQLITE:
            dim, model, chunks = read_collection(settings.store.data_dir)
        else:
            dim, model, chunks = _milvus_collection(settings)
    except (StoreError, ModelLoadError) as exc:
        raise typer.BadParameter(str(exc)) from None
    out.mkdir(parents=True, exist_ok=False)
    parts: list[np.ndarray] = []
    caption_parts: list[np.ndarray] = []
    no_caption = np.zeros(dim, dtype=np.float32)
    with (out / "ids.txt").open("w") as ids, (out / "metadata.jsonl").open("w") as metas:
        for chunk in chunks:
            for item_id, metadata, _, _ in chunk:
                ids.write(item_id + "\n")
                metas.write(json.dumps(metadata) + "\n")
            parts.append(np.stack([vector for _, _, vector, _ in chunk]))
            caption_parts.append(np.stack([no_caption if c is None else c for _, _, _, c in chunk]))
    vectors = np.concatenate(parts) if parts else np.empty((0, dim), dtype=np.float32)
    np.save(out / "vectors.npy", vectors)
    # Row for row with vectors.npy; a zero row: the item has no caption vector.
    np.save(out / "caption_vectors.npy", np.concatenate(caption_parts) if caption_parts else np.empty((0, dim)))
    (out / "model.txt").write_text(model + "\n")
    typer.echo(f"exported {len(vectors)} items ({dim}-d, {model}) to {out}")


def _milvus_collection(settings: Settings) -> tuple[int, str, Iterator[list[ExportRow]]]:
    """(dimension, model, chunks of rows) of the configured model's Milvus collection."""
    from index.milvus import MilvusStore
    from models.clip import model_dim
    from service.stores import open_store

    dim = model_dim(settings.model.name)
    store = open_store(settings.store, dim, settings.model.name)
    assert isinstance(store, MilvusStore)

    def chunks() -> Iterator[list[ExportRow]]:
        try:
            yield from store.export_rows()
        finally:
            store.close()

    return dim, settings.model.name, chunks()


@cli.command("import")
def import_collection(
    folder: Annotated[Path, typer.Argument(help="a folder written by clipsearch export", exists=True, file_okay=False)],
    data_dir: Annotated[Path | None, typer.Option(help="store directory [env CLIPSEARCH_STORE__DATA_DIR]")] = None,
    backend: Annotated[
        StoreBackend | None, typer.Option("--store", help="sqlite or milvus [env CLIPSEARCH_STORE__BACKEND]")
    ] = None,
) -> None:
    """Load a folder written by `clipsearch export` (or `clipsearch embed --out`'s shards) into a store.

    Stop a SQLite server first; a Milvus collection may stay in service.
    """
    shards = sorted(p for p in folder.glob("shard-*") if p.is_dir())
    if not (folder / "vectors.npy").exists() and shards:
        for shard in shards:  # clipsearch embed --out: one folder in this format per shard
            import_collection(shard, data_dir=data_dir, backend=backend)
        return
    model = (folder / "model.txt").read_text().strip() if (folder / "model.txt").exists() else None
    import_vectors(
        vectors=folder / "vectors.npy",
        data_dir=data_dir,
        ids=folder / "ids.txt",
        metadata=folder / "metadata.jsonl",
        model=model,
        caption_vectors=folder / "caption_vectors.npy" if (folder / "caption_vectors.npy").exists() else None,
        backend=backend,
    )


class _RichProgress:
    """A progress bar with images/s and the time left."""

    def __init__(self, label: str = "indexing") -> None:
        self._bar = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        )
        self._task: TaskID | None = None
        self._started = time.monotonic()
        self._done = 0

    def start(self, total: int) -> None:
        self._started = time.monotonic()  # images/s from the first image on, not from loading the model
        self._bar.start()
        self._task = self._bar.add_task("index", total=total, rate="")

    def advance(self, count: int) -> None:
        self._done += count
        rate = self._done / max(time.monotonic() - self._started, 1e-9)
        assert self._task is not None
        self._bar.update(self._task, advance=count, rate=f"{rate:.1f} images/s")

    def stop(self) -> None:
        self._bar.stop()


@cli.command("index")
def index_folders(
    paths: Annotated[list[Path], typer.Argument(help="image files or folders (searched recursively)", exists=True)],
    server: Annotated[str | None, typer.Option(help="send to this running service", envvar="CLIPSEARCH_SERVER")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="or write straight into this data directory")] = None,
    model: Annotated[str | None, typer.Option(help="with --data-dir: the model [env CLIPSEARCH_MODEL__NAME]")] = None,
    pretrained: Annotated[str | None, typer.Option(help="with --data-dir: its weights")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="images per request or forward pass")] = 32,
    api_key: Annotated[
        str | None, typer.Option(help="API key, if the service needs one", envvar="CLIPSEARCH_API_KEY")
    ] = None,
) -> None:
    """Index image folders: skips files already indexed (by content hash), so a rerun resumes."""
    if (server is None) == (data_dir is None):
        raise typer.BadParameter("give exactly one of --server and --data-dir")
    progress = _RichProgress()
    try:
        if server is not None:
            with Client(server, api_key=api_key) as client:
                summary = index_paths(paths, ServerSink(client), batch_size, progress)
        else:
            from clipsearch.bulk import LocalSink
            from index.store import SqliteFaissStore
            from service.app import load_towers

            settings = build_settings({"store.data_dir": data_dir, "model.name": model, "model.pretrained": pretrained})
            towers = load_towers(settings)
            store = SqliteFaissStore(
                settings.store.data_dir, towers.info.dim, towers.info.name, settings.store.index_spec()
            )
            try:
                sink = LocalSink(
                    towers,
                    store,
                    max_pixels=settings.limits.max_image_pixels,
                    keep_originals=settings.store.keep_originals,
                    batch_size=batch_size,
                )
                try:
                    summary = index_paths(paths, sink, batch_size, progress)
                finally:
                    sink.close()
                store.wait_for_index()
            finally:
                store.close()
    except (ClipsearchError, ModelLoadError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach {server}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        progress.stop()
    typer.echo(f"indexed {summary.indexed}, skipped {summary.skipped} already indexed, failed {len(summary.failed)}")
    for path, reason in summary.failed:
        typer.echo(f"  failed: {path}: {reason}")


@cli.command("embed")
def embed_on_ray(
    paths: Annotated[
        list[Path],
        typer.Argument(help="image files, folders (searched recursively), or .csv/.parquet lists with a path column"),
    ],
    out: Annotated[
        Path | None, typer.Option(help="write shards here (each one a folder clipsearch import loads)")
    ] = None,
    backend: Annotated[
        StoreBackend | None, typer.Option("--store", help="or upsert straight into this store: milvus")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto, ray://HOST:10001; unset: start a local Ray")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="open_clip model name or `demo` [env CLIPSEARCH_MODEL__NAME]")
    ] = None,
    pretrained: Annotated[str | None, typer.Option(help="its weights [env CLIPSEARCH_MODEL__PRETRAINED]")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda [env CLIPSEARCH_MODEL__DEVICE]")] = None,
    actors: Annotated[int | None, typer.Option(min=1, help="embedding actors; default: one per GPU, else 1")] = None,
    gpus_per_actor: Annotated[
        float | None, typer.Option(min=0, help="default: 1 where the cluster has GPUs, else 0")
    ] = None,
    cpus_per_actor: Annotated[
        float, typer.Option(min=0.01, help="a fraction leaves cores to Ray Data's read tasks")
    ] = 0.5,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="images per forward pass")] = 32,
    shard_size: Annotated[int, typer.Option(min=1, help="vectors per shard (with --out)")] = 10_000,
) -> None:
    """Embed image folders on Ray (Ray Data, an actor pool of image towers) into shards or Milvus.

    Ids are content hashes as with `clipsearch index`: what the shards in --out
    (or the store) hold is skipped, so a rerun resumes. Files that cannot be read
    or decoded are counted and listed. Items get vectors and their path, no thumbnails.
    """
    if (out is None) == (backend is None):
        raise typer.BadParameter("give exactly one of --out and --store")
    if backend is StoreBackend.SQLITE:
        raise typer.BadParameter(
            "the SQLite store takes writes from one process only: embed with --out DIR, then clipsearch import DIR"
        )
    for path in paths:
        if not path.exists():
            raise typer.BadParameter(f"{path} does not exist")
    _require_ray()
    # Imported here: ray takes seconds to import and only this command needs it.
    from clipsearch.bulk import find_images, read
    from models.clip import model_dim
    from scaleout.ray_embed import ShardWriter, connect, embed, plan_placement, split_lists

    settings = build_settings(
        {"model.name": model, "model.pretrained": pretrained, "model.device": device, "store.backend": backend}
    )
    progress = _RichProgress("embedding")
    try:
        dim = model_dim(settings.model.name)
        writer = ShardWriter(out, settings.model.name, dim, shard_size) if out is not None else None
        if backend is not None:
            from service.stores import open_store

            # Opened here first, so the collection exists before the actors open it.
            open_store(settings.store, dim, settings.model.name).close()
        connect(address)
        placement = plan_placement(actors, gpus_per_actor, cpus_per_actor)
        started = time.monotonic()
        lists, others = split_lists(paths)
        summary = embed(
            find_images(others),
            lists,
            read=read,
            model=settings.model,
            max_pixels=settings.limits.max_image_pixels,
            placement=placement,
            batch_size=batch_size,
            out=writer,
            store=settings.store if backend is not None else None,
            progress=progress,
        )
        elapsed = time.monotonic() - started
        if backend is not None:
            from service.stores import open_store

            store = open_store(settings.store, dim, settings.model.name)
            try:
                store.wait_for_index()
            finally:
                store.close()
    except (ModelLoadError, StoreError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        progress.stop()
    rate = summary.embedded / elapsed if elapsed > 0 else 0.0
    typer.echo(
        f"embedded {summary.embedded}, skipped {summary.skipped} already done, failed {len(summary.failed)} "
        f"({rate:.1f} images/s on {placement.actors} actor(s))"
    )
    for shard in summary.shards:
        typer.echo(f"  wrote {shard}")
    for path_text, reason in summary.failed:
        typer.echo(f"  failed: {path_text}: {reason}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
