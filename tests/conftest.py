from __future__ import annotations

import os

# No test may reach the network; with this the hub fails at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings, StoreSettings
from tests.fakes import fake_towers


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store=StoreSettings(data_dir=tmp_path / "data"))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app over a fresh data directory, with the fake towers."""
    with TestClient(create_app(settings, towers=fake_towers())) as test_client:
        yield test_client
