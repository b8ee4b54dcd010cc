from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from service.app import YOUNG_GC_THRESHOLD, create_app
from service.settings import Settings
from tests.fakes import fake_towers


def test_serving_leaves_the_loaded_objects_out_of_garbage_collection_and_restores_it_after(settings: Settings):
    settings.freeze_heap = True  # the default; the fixture turns it off for speed
    before = gc.get_threshold()
    with TestClient(create_app(settings, towers=fake_towers())) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_with_freeze_heap_off_the_garbage_collector_is_left_as_it_is(settings: Settings):
    before = gc.get_threshold()
    with TestClient(create_app(settings, towers=fake_towers())) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
