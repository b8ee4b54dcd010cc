"""A FUSE file system that keeps written data in memory until it is fsynced, to test durability against power loss.

The model is LazyFS's (the fault-injection file system Jepsen uses):

- A file's contents, its size included, reach "disk" only when the file is
  fsynced or fdatasynced. A write, a truncate, a close, a flush persist nothing.
- Namespace changes (create, mkdir, rename, unlink, rmdir) are durable at once,
  as LazyFS passes them straight to the file system below it.
- A power cut keeps, for every file, the contents of its last fsync; the rest is
  lost. So a file created and renamed but never fsynced survives empty, which is
  how a missing fsync before a rename shows.

`dirsync=True` is the stricter reading of POSIX: a namespace change is durable
only once its directory is fsynced, so a new file, a rename or a new directory
can vanish too.

A child process serves the file system (`python -m tests.powerloss MOUNT STATE`)
and `LossyMount` drives it: `cut_power()` saves only the synced state to STATE,
makes every further operation fail with EIO and unmounts; `power_on()` mounts a
fresh child on what was saved. Unmounting also drops the kernel's caches, so
what a reader sees after `power_on()` is what a disk would have kept.
"""

from __future__ import annotations

import argparse
import ctypes.util
import errno
import functools
import importlib.util
import os
import pickle
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")
ROOT_INO = 1


@dataclass
class Node:
    """A file or directory: what readers see now and what a power cut leaves."""

    is_dir: bool
    mode: int  # permission bits
    data: bytearray = field(default_factory=bytearray)
    synced: bytes = b""
    entries: dict[str, int] = field(default_factory=dict)  # directories: name -> inode
    synced_entries: dict[str, int] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)


def _op(method: Callable[Concatenate[LossyFS, _P], _R]) -> Callable[Concatenate[LossyFS, _P], _R]:
    """One operation at a time against a cut, and none once the power is off."""

    @functools.wraps(method)
    def guarded(fs: LossyFS, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with fs.mutex:
            if fs.power_off:
                raise OSError(errno.EIO, "the power is off")
            return method(fs, *args, **kwargs)

    return guarded


class LossyFS:
    """The file system's operations, for mfusepy (path based; `fh` is an open file's inode handle)."""

    use_ns = True  # times in nanoseconds (mfusepy)

    def __init__(self, nodes: dict[int, Node] | None = None, *, dirsync: bool = False) -> None:
        self.nodes = nodes or {ROOT_INO: Node(is_dir=True, mode=0o755)}
        self.dirsync = dirsync
        self.mutex = threading.Lock()  # not "lock": mfusepy would take it for the FUSE operation
        self.power_off = False
        self._handles: dict[int, int] = {}

    # --- power ---------------------------------------------------------------------------------

    def durable(self) -> dict[int, Node]:
        """What a power cut leaves: synced entries from the root down, each file with its synced contents."""
        kept: dict[int, Node] = {}
        todo = [ROOT_INO]
        while todo:
            ino = todo.pop()
            node = self.nodes[ino]
            kept[ino] = Node(
                node.is_dir,
                node.mode,
                bytearray(node.synced),
                node.synced,
                dict(node.synced_entries),
                dict(node.synced_entries),
                node.mtime_ns,
            )
            todo += [child for child in node.synced_entries.values() if child not in kept]
        return kept

    def cut(self, state: Path) -> None:
        """Lose power: save only the durable state to `state`; every later operation fails."""
        with self.mutex:
            self.power_off = True
            tmp = state.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(self.durable()))
            tmp.replace(state)

    # --- helpers -------------------------------------------------------------------------------

    def _parts(self, path: str) -> list[str]:
        return [p for p in path.split("/") if p]

    def _ino(self, path: str) -> int:
        ino = ROOT_INO
        for name in self._parts(path):
            node = self.nodes[ino]
            if not node.is_dir or name not in node.entries:
                raise OSError(errno.ENOENT, path)
            ino = node.entries[name]
        return ino

    def _parent(self, path: str) -> tuple[Node, str]:
        parts = self._parts(path)
        parent = self.nodes[self._ino("/".join(parts[:-1]))]
        if not parent.is_dir:
            raise OSError(errno.ENOTDIR, path)
        return parent, parts[-1]

    def _link(self, parent: Node, name: str, ino: int | None) -> None:
        """Point `name` in `parent` at `ino` (None: remove it); durable at once unless dirsync."""
        for entries in (parent.entries,) if self.dirsync else (parent.entries, parent.synced_entries):
            if ino is None:
                entries.pop(name, None)
            else:
                entries[name] = ino
        parent.mtime_ns = time.time_ns()

    def _new(self, path: str, node: Node) -> int:
        parent, name = self._parent(path)
        if name in parent.entries:
            raise OSError(errno.EEXIST, path)
        ino = max(self.nodes) + 1
        self.nodes[ino] = node
        self._link(parent, name, ino)
        return ino

    def _file(self, path: str, fh: int | None) -> Node:
        return self.nodes[self._handles[fh] if fh is not None else self._ino(path)]

    def _open(self, ino: int) -> int:
        fh = max(self._handles, default=0) + 1
        self._handles[fh] = ino
        return fh

    # --- operations ----------------------------------------------------------------------------

    @_op
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        node = self._file(path, fh)
        kind = stat.S_IFDIR if node.is_dir else stat.S_IFREG
        subdirs = sum(self.nodes[i].is_dir for i in node.entries.values())
        return {
            "st_mode": kind | node.mode,
            "st_nlink": 2 + subdirs if node.is_dir else 1,
            "st_size": len(node.data),
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": node.mtime_ns,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
        }

    @_op
    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *self.nodes[self._ino(path)].entries]

    @_op
    def mkdir(self, path: str, mode: int) -> int:
        self._new(path, Node(is_dir=True, mode=mode & 0o7777))
        return 0

    @_op
    def rmdir(self, path: str) -> int:
        parent, name = self._parent(path)
        if self.nodes[self._ino(path)].entries:
            raise OSError(errno.ENOTEMPTY, path)
        self._link(parent, name, None)
        return 0

    @_op
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        return self._open(self._new(path, Node(is_dir=False, mode=mode & 0o7777)))

    @_op
    def open(self, path: str, flags: int) -> int:
        return self._open(self._ino(path))

    @_op
    def release(self, path: str, fh: int) -> int:
        self._handles.pop(fh, None)
        return 0

    @_op
    def flush(self, path: str, fh: int) -> int:
        return 0  # close(2) persists nothing

    @_op
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._file(path, fh).data[offset : offset + size])

    @_op
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        node = self._file(path, fh)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.mtime_ns = time.time_ns()
        return len(data)

    @_op
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        node = self._file(path, fh)
        del node.data[length:]
        node.data.extend(bytes(length - len(node.data)))
        node.mtime_ns = time.time_ns()
        return 0

    @_op
    def unlink(self, path: str) -> int:
        parent, name = self._parent(path)
        self._ino(path)
        self._link(parent, name, None)
        return 0

    @_op
    def rename(self, old: str, new: str) -> int:
        ino = self._ino(old)
        old_parent, old_name = self._parent(old)
        new_parent, new_name = self._parent(new)
        replaced = new_parent.entries.get(new_name)
        if replaced is not None and self.nodes[replaced].entries:
            raise OSError(errno.ENOTEMPTY, new)
        self._link(old_parent, old_name, None)
        self._link(new_parent, new_name, ino)
        return 0

    @_op
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        node = self._file(path, fh)
        node.synced = bytes(node.data)
        return 0

    @_op
    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        node = self.nodes[self._ino(path)]
        node.synced_entries = dict(node.entries)
        return 0

    @_op
    def chmod(self, path: str, mode: int) -> int:
        self.nodes[self._ino(path)].mode = mode & 0o7777
        return 0

    @_op
    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    @_op
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self.nodes[self._ino(path)].mtime_ns = times[1] if times else time.time_ns()
        return 0

    @_op
    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 20, "f_bavail": 1 << 20}


def fuse_missing() -> str | None:
    """Why this machine cannot mount the lossy file system, or None when it can."""
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3; .ci/run installs it)"
    if ctypes.util.find_library("fuse3") is None:
        return "libfuse3 is not installed (Debian package fuse3; .ci/run installs it)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is not installed (pip install -e '.[dev]')"
    return None


class LossyMount:
    """The lossy file system mounted at `path` by a child process, its durable state kept in `state`."""

    def __init__(self, path: Path, state: Path, *, dirsync: bool = False) -> None:
        self.path = path
        self.state = state
        self.dirsync = dirsync
        self.log = state.with_name(state.name + ".log")  # a file, not a pipe: a full pipe would stall the disk
        self._child: subprocess.Popen[str] | None = None

    def power_on(self, timeout: float = 10.0) -> None:
        """Mount the file system on what survived the last cut (empty the first time)."""
        self.path.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tests.powerloss", str(self.path), str(self.state)]
        with self.log.open("a") as log:
            self._child = subprocess.Popen(
                [*command, *(["--dirsync"] if self.dirsync else [])],
                cwd=Path(__file__).resolve().parents[1],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        deadline = time.monotonic() + timeout
        while not _mounted(self.path):
            if self._child.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"the lossy file system did not mount at {self.path}: {self._stderr()}")
            time.sleep(0.02)

    def cut_power(self) -> None:
        """Lose everything not synced; the file system is unmounted afterwards.

        Kill the processes writing to it first, as a power cut would: an open
        file keeps the mount busy, and then it is detached lazily.
        """
        child = self._child
        if child is None:
            return
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("cut\n")
        child.stdin.flush()
        if child.stdout.readline().strip() != "cut":
            self._stop()
            raise RuntimeError(f"the lossy file system did not cut power: {self._stderr()}")
        self._stop()

    def close(self) -> None:
        """Unmount (losing what is not synced) and end the child; safe to call at any time."""
        if self._child is not None and self._child.poll() is None:
            self.cut_power()
        else:
            self._stop()

    def _stop(self) -> None:
        child = self._child
        # Not os.path.ismount: once the power is off, even stat fails on the mount.
        if _mounted(self.path) and subprocess.run(["fusermount3", "-u", self.path], capture_output=True).returncode:
            subprocess.run(["fusermount3", "-uz", self.path], capture_output=True)
        if child is not None:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._child = None

    def _stderr(self) -> str:
        log = self.log.read_text().strip() if self.log.exists() else ""
        return log[-2000:] or f"exit status {self._child.returncode if self._child else None}"

    def __enter__(self) -> LossyMount:
        self.power_on()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mounted(path: Path) -> bool:
    """Whether a file system is mounted at `path` (from the mount table, which needs nothing from it)."""
    with Path("/proc/self/mountinfo").open() as mounts:
        return any(line.split()[4] == str(path) for line in mounts)


def _control(fs: LossyFS, mount: Path, state: Path) -> None:
    """Cut power when the parent says so; unmount when it goes away."""
    for line in sys.stdin:
        if line.strip() == "cut":
            fs.cut(state)
            print("cut", flush=True)
    # The parent is gone (or cut power): unmounting ends the FUSE loop.
    subprocess.run(["fusermount3", "-uz", str(mount)], capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the lossy file system (see tests/powerloss.py).")
    parser.add_argument("mount", type=Path)
    parser.add_argument("state", type=Path, help="where the durable state is kept across power cuts")
    parser.add_argument("--dirsync", action="store_true", help="namespace changes need a directory fsync")
    args = parser.parse_args(argv)
    import mfusepy  # only the child needs FUSE

    nodes = pickle.loads(args.state.read_bytes()) if args.state.exists() else None
    fs = LossyFS(nodes, dirsync=args.dirsync)
    threading.Thread(target=_control, args=(fs, args.mount, args.state), daemon=True).start()
    # One thread: operations arrive in order, which keeps runs deterministic.
    mfusepy.FUSE(fs, str(args.mount), foreground=True, nothreads=True, fsname="lossyfs")


if __name__ == "__main__":
    main()
