"""A full disk and a read-only data directory, on real (tmpfs) mounts: clear errors, nothing lost."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.scenes import scene_set
from harness.server import ServerProcess
from tests.e2e.test_server import png
from tests.prerequisites import require_or_skip

pytestmark = pytest.mark.e2e


def _mount(path: Path, *options: str) -> bool:
    result = subprocess.run(["mount", *options, path], capture_output=True, check=False)
    return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 3 MiB tmpfs; where this machine may not mount one (not root), a skip, or a failure in CI."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if not _mount(mount_point, "-t", "tmpfs", "-o", "size=3m", "tmpfs"):
        require_or_skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", mount_point], check=False)


def test_a_full_disk_answers_507_and_keeps_every_acknowledged_write(small_disk):
    image = png(scene_set(2, 1)[0])
    padding = json.dumps({"note": "x" * 12_000})
    acknowledged: list[str] = []
    server = ServerProcess(small_disk / "data", "--model", "demo")
    server.log_path = small_disk.parent / "full-disk.log"  # not on the disk being filled
    with server, server.client() as client:
        refused = None
        for i in range(1000):
            response = client.post(
                "/v1/images", files=[("files", ("x.png", image))], data={"ids": [f"i{i}"], "metadata": [padding]}
            )
            if response.status_code != 201:
                refused = response
                break
            acknowledged.append(f"i{i}")
        assert refused is not None, "the disk never filled up"
        assert refused.status_code == 507
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert "the write was not stored" in refused.json()["error"]["message"]
        assert client.get("/v1/stats").json()["count"] == len(acknowledged)
        assert client.post("/v1/search/text", json={"query": "a red circle"}).status_code == 200
        for item in acknowledged[-5:]:
            assert client.get(f"/v1/images/{item}").status_code == 200


def test_a_read_only_data_directory_stops_start_up_with_a_clear_message(small_disk):
    with ServerProcess(small_disk / "data", "--model", "demo") as server, server.client() as client:
        assert client.post("/v1/images", files=[("files", ("x.png", png(scene_set(3, 1)[0])))]).status_code == 201
    assert _mount(small_disk, "-o", "remount,ro")
    server = ServerProcess(small_disk / "data", "--model", "demo")
    server.log_path = small_disk.parent / "read-only.log"
    with pytest.raises(RuntimeError, match="server exited"):
        server.start()
    assert "cannot start: cannot use the data directory" in server.log()
    assert "Read-only file system" in server.log()
