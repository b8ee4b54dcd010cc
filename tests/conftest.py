from __future__ import annotations

import os

# No test may reach the network; with this the hub fails at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from harness.milvus_server import MilvusServer, milvus_installed
from service.app import create_app
from service.settings import Settings, StoreSettings
from tests.fakes import fake_towers
from tests.prerequisites import require_or_skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # freeze_heap off: its one full collection per start (~0.4 s) would add minutes over the
    # suite's hundreds of apps; tests/service/test_app.py and the servers of tests/e2e keep it on.
    return Settings(store=StoreSettings(data_dir=tmp_path / "data"), freeze_heap=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app over a fresh data directory, with the fake towers."""
    with TestClient(create_app(settings, towers=fake_towers())) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """A real Milvus standalone server for the session (harness/milvus_server.py), removed at the end."""
    if not milvus_installed():
        require_or_skip("the milvus package is not installed (pip install -e '.[dev]' installs it)")
    server = MilvusServer(tmp_path_factory.mktemp("milvus") / "server")
    try:
        server.start()
    except RuntimeError as exc:
        if "is in use" in str(exc):
            require_or_skip(str(exc))
        raise
    try:
        yield server
    finally:
        server.remove()
