"""A real Milvus standalone server on this machine, for the tests and the benchmarks.

PyPI's `milvus` package embeds one (with etcd and rocksmq; no object store):
`milvus-server --data DIR`. Its ports are fixed (gRPC 19530, health 9091), it
writes a pid file under /run/milvus, and after a restart its first query waits
~20 s while it recovers: `start` returns only once a query has been answered.

Its wrapper quietly moves to the next free port when one cannot be bound, and
it probes without SO_REUSEADDR, so a port left in TIME_WAIT by the previous
server (any restart) counted as taken and the server came up on 19531. Run as a
script, this file is `milvus-server` with probes that allow TIME_WAIT; a port
that something listens on is refused before starting instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

PORT = 19530
HEALTH_PORT = 9091
# Where Milvus writes (and locks) its pid file: /run/milvus as root, else /tmp/milvus.
PID_DIR = Path("/run/milvus") if os.geteuid() == 0 else Path("/tmp/milvus")
URI = f"http://127.0.0.1:{PORT}"
# A time tick every 20 ms instead of 200: a strongly consistent read waits for the next
# tick, so the tests (hundreds of reads) run ten times faster; nothing else changes.
# No interim index on growing segments: with it, Milvus 2.3 searches the newest writes
# of an IVF or HNSW collection through an IVF index of its own (nlist 128, nprobe 16)
# whatever the request asks, so an `exact` search is not exact (docs/design.md).
TEST_CONFIG = {
    "proxy.timeTickInterval": "20",
    "queryNode.segcore.interimIndex.enableIndex": "false",
}


def milvus_installed() -> bool:
    """Whether the `milvus` package (the embedded server) is installed in this Python environment."""
    return importlib.util.find_spec("milvus") is not None


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _healthy(timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HEALTH_PORT}/healthz", timeout=timeout) as response:
            return b"OK" in response.read()
    except (urllib.error.URLError, OSError):
        return False


class MilvusServer:
    """`milvus-server --data DIR`, started and stopped by its process id."""

    def __init__(self, data_dir: Path, config: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.config = TEST_CONFIG if config is None else config
        self.log_path = data_dir.parent / f"milvus-{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return URI

    def start(self, timeout: float = 240) -> MilvusServer:
        """Start the server and return once it answers queries (warm-up included)."""
        if not milvus_installed():
            raise RuntimeError("the milvus package is not installed (pip install milvus)")
        for port in (PORT, HEALTH_PORT):
            if _port_taken(port):
                raise RuntimeError(
                    f"port {port} is in use: is another Milvus running (see {PID_DIR})? Stop it first: "
                    "this server would quietly take other ports."
                )
        extra = [arg for key, value in self.config.items() for arg in ("--extra-config", f"{key}={value}")]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Its own process group: a crash test kills the wrapper and the server together.
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--data", str(self.data_dir), *extra],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        try:
            while not _healthy():
                if self.process.poll() is not None:
                    raise RuntimeError(f"milvus-server exited with {self.process.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Milvus not healthy after {timeout:.0f}s:\n{self.log()}")
                time.sleep(0.2)
            self._warm_up(deadline)
        except BaseException:
            self.kill()
            raise
        return self

    def _warm_up(self, deadline: float) -> None:
        """Query every collection (and search a scratch one) until Milvus answers: it is slow after a restart."""
        from pymilvus import DataType, MilvusClient
        from pymilvus.exceptions import MilvusException

        while True:
            try:
                client = MilvusClient(uri=self.uri, timeout=30)
                for name in client.list_collections():
                    client.load_collection(name, timeout=120)
                    client.query(name, filter="", output_fields=["count(*)"], timeout=120)
                if not client.has_collection("warm_up"):
                    schema = MilvusClient.create_schema(auto_id=False)
                    schema.add_field("id", DataType.INT64, is_primary=True)
                    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
                    index = client.prepare_index_params()
                    index.add_index("vector", index_type="FLAT", metric_type="IP")
                    client.create_collection("warm_up", schema=schema, index_params=index)
                client.search("warm_up", data=[[1.0, 0.0]], limit=1, timeout=120)
                client.close()
                return
            except MilvusException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20_000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL to the wrapper and the server: no shutdown code runs, as in a crash."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._wait_for_ports()

    def stop(self) -> None:
        """SIGINT to the wrapper (which stops the server), by its process id, and wait."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(60)
        # The wrapper kills the server after a second; anything left in the group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._wait_for_ports()

    def _wait_for_ports(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (_port_taken(PORT) or _port_taken(HEALTH_PORT)) and time.monotonic() < deadline:
            time.sleep(0.2)
        (PID_DIR / "standalone.pid").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            PID_DIR.rmdir()  # only if nothing else is there

    def restart(self) -> MilvusServer:
        self.stop()
        return self.start()

    def remove(self) -> None:
        """Stop the server and delete its data (hundreds of MB: its binaries are unpacked there)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.remove()


def _main() -> None:
    """`milvus-server`, whose port probes allow a port in TIME_WAIT, as the server itself does."""
    from milvus import MilvusServerConfig, main

    def try_bind_port(self: MilvusServerConfig, port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            sock.close()
            return None
        return sock

    MilvusServerConfig.try_bind_port = try_bind_port
    main()


if __name__ == "__main__":
    _main()


def empty_collections(uri: str, name: str) -> None:
    """Delete every row of a contract-test collection and its captions."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    for collection in (name, name + "_captions"):
        if client.has_collection(collection):
            client.delete(collection, filter='id != ""')
    client.close()
