"""Every acknowledged write survives a power cut, not only a `kill -9`.

Why this file exists: a `kill -9` cannot tell `PRAGMA synchronous=FULL` from
`OFF` in index/store.py, because the operating system keeps what a killed
process wrote. Here the store runs on a file system that loses everything not
fsynced when the power goes (tests/powerloss.py, the model of LazyFS), so these
tests fail when `synchronous=FULL` is changed to `OFF` (or `NORMAL`) in
`SqliteFaissStore._connect`, when the fsync of the temporary file in
`index.directory.replace_durably` (which saves the ANN
index) is removed, and (in the strict model, where a
name needs a directory fsync) when `journal_mode=WAL` is dropped: a rollback
journal commits by an unlink that SQLite syncs only with `synchronous=EXTRA`.

Each test runs a writer process over the store on that file system, reads the
writes it acknowledges, kills it with SIGKILL (the store never closes), cuts the
power, mounts what survived and reopens the store there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index.ann import ANN_FILE, IndexSpec, IndexType
from index.errors import ItemNotFoundError
from index.store import SqliteFaissStore
from index.types import NewItem
from tests.powerloss import LossyMount, fuse_missing
from tests.prerequisites import require_or_skip

ROOT = Path(__file__).resolve().parents[2]
DIM = 8
MODEL = "test"
ANN_SPEC = IndexSpec(type=IndexType.HNSW, hnsw_m=8)


# --- the writer process ---------------------------------------------------------------------------


def _unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _writes(data_dir: Path) -> Iterator[dict[str, Any]]:
    """Adds, replacements and deletes, one transaction each; originals of 40 kB fill the WAL past a checkpoint."""
    rng = np.random.default_rng(0)
    store = SqliteFaissStore(data_dir, DIM, MODEL)
    live: list[str] = []
    for i in range(120):
        item_id = f"item-{i}"
        if i % 5 == 4:
            item_id = live[int(rng.integers(len(live)))]  # a replacement: new vector, metadata and original
        vector, original, metadata = _unit(rng), rng.bytes(40_000), {"n": i}
        store.upsert([NewItem(vector, item_id, metadata, original=original)])
        if item_id not in live:
            live.append(item_id)
        digest = hashlib.sha256(original).hexdigest()
        yield {"op": "upsert", "id": item_id, "metadata": metadata, "vector": vector.tolist(), "original": digest}
        if i % 3 == 2:
            victim = live.pop(int(rng.integers(len(live))))
            store.delete(victim)
            yield {"op": "delete", "id": victim}


def _ann_saves(data_dir: Path) -> Iterator[dict[str, Any]]:
    """An HNSW index built and saved, then rebuilt and saved again over half as many items more."""
    rng = np.random.default_rng(1)
    store = SqliteFaissStore(data_dir, DIM, MODEL, ANN_SPEC)
    for first, count in ((0, 200), (200, 100)):
        store.upsert([NewItem(_unit(rng), f"item-{i}") for i in range(first, first + count)])
        store.wait_for_index()
        yield {"op": "saved", "count": first + count}


SCENARIOS = {"writes": _writes, "ann": _ann_saves}


def write_until_killed() -> None:
    """The writer process: `python -c ... DATA_DIR SCENARIO`; one JSON line per acknowledged write, then waits."""
    data_dir, scenario = Path(sys.argv[1]), sys.argv[2]
    for ack in SCENARIOS[scenario](data_dir):
        print(json.dumps(ack), flush=True)
    print("done", flush=True)
    sys.stdin.read()  # holds the store open until the power cut kills this process


# --- the test's side ------------------------------------------------------------------------------


@pytest.fixture(params=["lazyfs", "dirsync"])
def disk(request, tmp_path) -> Iterator[LossyMount]:
    """The lossy file system, in LazyFS's model and in the stricter one where renames need a directory fsync."""
    yield from _lossy(tmp_path, dirsync=request.param == "dirsync")


@pytest.fixture
def lazy_disk(tmp_path) -> Iterator[LossyMount]:
    """The lossy file system in LazyFS's model only."""
    yield from _lossy(tmp_path, dirsync=False)


@pytest.fixture
def strict_disk(tmp_path) -> Iterator[LossyMount]:
    """The lossy file system where a new directory entry or a rename needs a directory fsync."""
    yield from _lossy(tmp_path, dirsync=True)


def _lossy(tmp_path: Path, dirsync: bool) -> Iterator[LossyMount]:
    reason = fuse_missing()
    if reason:
        require_or_skip(f"the power-loss tests need FUSE: {reason}")
    mount = LossyMount(tmp_path / "disk", tmp_path / "disk.state", dirsync=dirsync)
    try:
        mount.power_on()
    except RuntimeError as exc:  # no right to mount, say, in an unprivileged container
        require_or_skip(f"the power-loss tests cannot mount FUSE here: {exc}")
    try:
        yield mount
    finally:
        mount.close()


def _durable_dir(path: Path) -> Path:
    """Make `path` and fsync its parent, as a deployment's data volume exists before the server starts."""
    path.mkdir()
    _fsync(path.parent)
    return path


class Writer:
    """The writer process over `data_dir`, running `scenario`; killed on leaving a `with` block at the latest."""

    def __init__(self, data_dir: Path, scenario: str) -> None:
        code = "from tests.index.test_power_loss import write_until_killed; write_until_killed()"
        # A file, not a pipe, which could fill and stall the writer; closed by kill().
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(data_dir), scenario],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.acks: list[dict[str, Any]] = []
        self._watchdog = threading.Timer(120, self.process.kill)  # a hung file system fails the test, not CI
        self._watchdog.start()

    def next_ack(self) -> dict[str, Any] | None:
        """The next acknowledged write; None once the writer has done them all."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() == "done":
            return None
        if not line:
            self.process.wait()
            self._stderr.seek(0)
            pytest.fail(f"the writer died: {self._stderr.read()[-3000:]}")
        ack: dict[str, Any] = json.loads(line)
        self.acks.append(ack)
        return ack

    def finish(self) -> list[dict[str, Any]]:
        """Every acknowledged write, once the writer has done them all (it stays alive, the store open)."""
        while self.next_ack() is not None:
            pass
        return self.acks

    def kill(self) -> None:
        """SIGKILL, as a power cut stops the process: no close, no last fsync."""
        self._watchdog.cancel()
        self.process.kill()
        self.process.wait()
        self._stderr.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.returncode is None:
            self.kill()


def _cut_power_and_restore(disk: LossyMount, writer: Writer) -> None:
    """Kill the writer, lose what was not synced, and mount what survived."""
    writer.kill()
    disk.cut_power()
    disk.power_on()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _expected(acks: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """(present items by id, deleted ids) after the acknowledged writes, in order."""
    present: dict[str, dict[str, Any]] = {}
    deleted: set[str] = set()
    for ack in acks:
        if ack["op"] == "upsert":
            present[ack["id"]] = ack
            deleted.discard(ack["id"])
        else:
            del present[ack["id"]]
            deleted.add(ack["id"])
    return present, deleted


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the file system loses what it should, so the tests below cannot pass for want of a cut -------


def test_a_power_cut_keeps_what_was_fsynced_and_loses_the_rest(lazy_disk):
    synced, unsynced, renamed = (lazy_disk.path / name for name in ("synced", "unsynced", "renamed"))
    synced.write_bytes(b"kept")
    _fsync(synced)
    with synced.open("ab") as f:
        f.write(b" and lost")
    unsynced.write_bytes(b"lost")
    (lazy_disk.path / "tmp").write_bytes(b"lost too")
    (lazy_disk.path / "tmp").replace(renamed)
    assert synced.read_bytes() == b"kept and lost" and unsynced.read_bytes() == b"lost"

    lazy_disk.cut_power()
    lazy_disk.power_on()
    assert synced.read_bytes() == b"kept"
    # LazyFS's model: names are durable at once, contents only once fsynced.
    assert unsynced.read_bytes() == b"" and renamed.read_bytes() == b""
    assert not (lazy_disk.path / "tmp").exists()


def test_in_the_strict_model_a_new_name_needs_a_directory_fsync(strict_disk):
    kept, lost = strict_disk.path / "kept", strict_disk.path / "lost"
    lost.write_bytes(b"synced, but its name is not")
    _fsync(lost)
    kept.write_bytes(b"synced, and its name too")
    _fsync(kept)
    _fsync(strict_disk.path)
    lost.replace(strict_disk.path / "renamed")  # neither the rename nor the unlink of "lost" is synced

    strict_disk.cut_power()
    strict_disk.power_on()
    assert kept.read_bytes() == b"synced, and its name too"
    assert lost.read_bytes() == b"synced, but its name is not"
    assert not (strict_disk.path / "renamed").exists()


# --- the store ------------------------------------------------------------------------------------


def test_every_acknowledged_write_survives_a_power_cut_and_the_store_opens(disk):
    data_dir = _durable_dir(disk.path / "data")
    with Writer(data_dir, "writes") as writer:
        acks = writer.finish()
        _cut_power_and_restore(disk, writer)

    present, deleted = _expected(acks)
    count = len(present)
    assert count > 50 and len(deleted) > 20 and any(a["metadata"]["n"] % 5 == 4 for a in present.values())
    with closing(SqliteFaissStore(data_dir, DIM, MODEL)) as store:
        assert store.count() == count
        for item_id, ack in present.items():
            assert store.get(item_id).metadata == ack["metadata"]
            np.testing.assert_allclose(store.vector(item_id), ack["vector"], rtol=1e-6)
            assert hashlib.sha256(store.original(item_id)).hexdigest() == ack["original"]
        for item_id in deleted:
            with pytest.raises(ItemNotFoundError):
                store.get(item_id)
        some = next(iter(present.values()))
        assert store.search(np.asarray(some["vector"], np.float32), k=1)[0].id == some["id"]


def test_a_saved_ann_index_is_the_old_or_the_new_one_after_a_power_cut(lazy_disk):
    data_dir = _durable_dir(lazy_disk.path / "data")
    saved = []
    with Writer(data_dir, "ann") as writer:
        while writer.next_ack() is not None:
            saved.append(_digest(data_dir / ANN_FILE))  # what the store saved, read before the cut
        _cut_power_and_restore(lazy_disk, writer)

    assert len(set(saved)) == 2
    assert _digest(data_dir / ANN_FILE) in saved, "the saved ANN index is neither the old nor the new one"
    with closing(SqliteFaissStore(data_dir, DIM, MODEL, ANN_SPEC)) as store:
        assert store.count() == 300
        store.wait_for_index()
        assert store.index_type == "hnsw"
        assert store.search(store.vector("item-7"), k=1)[0].id == "item-7"


def test_the_store_reuses_its_saved_ann_index_after_a_power_cut(lazy_disk, caplog):
    data_dir = _durable_dir(lazy_disk.path / "data")
    with Writer(data_dir, "ann") as writer:
        writer.finish()
        _cut_power_and_restore(lazy_disk, writer)

    with (
        caplog.at_level(logging.WARNING, logger="index.store"),
        closing(SqliteFaissStore(data_dir, DIM, MODEL, ANN_SPEC)) as store,
    ):
        store.wait_for_index()
    assert not [r.getMessage() for r in caplog.records if "ignoring the saved ANN index" in r.getMessage()]


def test_writes_to_a_data_directory_the_store_created_survive_a_power_cut(strict_disk):
    with Writer(strict_disk.path / "new", "writes") as writer:
        writer.finish()
        _cut_power_and_restore(strict_disk, writer)
    assert (strict_disk.path / "new").is_dir(), "the data directory vanished"
