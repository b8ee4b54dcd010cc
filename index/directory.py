"""A data directory: taken by one process at a time, and durable file writes in it.

Shared by the SQLite store (its lock, the saved ANN index) and the Milvus store
(thumbnails and originals kept as files).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from index.errors import StorageUnavailableError

LOCK_FILE = ".lock"


def take_directory(data_dir: Path) -> IO[bytes]:
    """Create `data_dir` if need be and lock it for this process; close the returned file to let go.

    Raises:
        StorageUnavailableError: the directory cannot be used, or another process holds it.
    """
    try:
        created = not data_dir.exists()
        data_dir.mkdir(parents=True, exist_ok=True)
        if created:
            # A new directory entry is durable only once its parent is fsynced (POSIX).
            fsync_directory(data_dir.parent)
        lock_file = (data_dir / LOCK_FILE).open("ab")
    except OSError as exc:
        raise StorageUnavailableError(f"cannot use the data directory {data_dir}: {exc}") from exc
    try:
        # Two processes writing one directory would each hold a stale index.
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.close()
        raise StorageUnavailableError(
            f"the data directory {data_dir} is in use by another process (a running server?)"
        ) from None
    return lock_file


def replace_durably(path: Path, write: Callable[[Path], object]) -> None:
    """Make `path` the file `write(temporary path)` writes: after a power cut, the old file or the new one, whole.

    The temporary file is fsynced, renamed over `path`, and the directory fsynced.
    Raises OSError as the file system does.
    """
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Make the entries of directory `path` (new, renamed, removed files) durable, where the file system allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; nothing more can be done there
    finally:
        os.close(fd)
