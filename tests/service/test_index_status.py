"""The recall knob (`exact`) on every search route, and what /v1/stats and /metrics say about the index."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from index.ann import IndexType
from service.app import create_app
from service.settings import Settings, StoreSettings
from tests.fakes import fake_towers, image_bytes
from tests.service.test_images import upload
from tests.service.test_metrics import sample

COLOURS = ["red", "yellow", "blue", "green"]


def hnsw_client(settings: Settings, **store: object) -> TestClient:
    settings.store = StoreSettings(data_dir=settings.store.data_dir, index=IndexType.HNSW, **store)
    return TestClient(create_app(settings, towers=fake_towers()))


@pytest.fixture
def hnsw(settings: Settings) -> Iterator[TestClient]:
    with hnsw_client(settings, recall_check_interval_s=0) as client:
        upload(client, COLOURS, ids=["r", "y", "b", "g"])
        client.app.state.runtime.store.wait_for_index()  # type: ignore[attr-defined]
        yield client


def ann_searches(client: TestClient) -> int:
    return int(client.get("/v1/stats").json()["index"]["searches"])


def test_an_exact_text_search_ranks_like_the_index_and_bypasses_it(hnsw):
    approximate = hnsw.post("/v1/search/text", json={"query": "green", "k": 4}).json()["results"]
    before = ann_searches(hnsw)
    exact = hnsw.post("/v1/search/text", json={"query": "green", "k": 4, "exact": True}).json()["results"]
    assert [h["id"] for h in exact] == [h["id"] for h in approximate]
    assert exact[0]["id"] == "g" and exact[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert ann_searches(hnsw) == before


def test_exact_is_taken_by_the_batch_the_image_and_the_similar_routes(hnsw):
    before = ann_searches(hnsw)
    batch = hnsw.post("/v1/search/text/batch", json={"queries": ["red", "blue"], "k": 1, "exact": True}).json()
    assert [r[0]["id"] for r in batch["results"]] == ["r", "b"]
    image = hnsw.post(
        "/v1/search/image", files={"file": ("q.png", image_bytes("yellow"))}, data={"k": "1", "exact": "true"}
    ).json()
    assert image["results"][0]["id"] == "y"
    similar = hnsw.get("/v1/images/r/similar", params={"k": 3, "exact": "true"}).json()
    assert "r" not in [h["id"] for h in similar["results"]] and len(similar["results"]) == 3
    assert ann_searches(hnsw) == before


def test_exact_must_be_a_boolean(hnsw):
    response = hnsw.post("/v1/search/text", json={"query": "red", "exact": "maybe"})
    assert response.status_code == 422
    assert "exact" in response.json()["error"]["message"]


def test_stats_name_the_index_its_breadth_and_how_many_searches_went_wider(hnsw):
    hnsw.post("/v1/search/text", json={"query": "red", "k": 2})
    index = hnsw.get("/v1/stats").json()["index"]
    assert index["type"] == "hnsw"
    assert (index["ef_search"], index["nprobe"], index["far_query_effort"]) == (96, None, 16)
    assert index["searches"] == 1 and 0 <= index["far_searches"] <= 1
    assert isinstance(index["far_below"], float)
    assert index["recall"] is None  # the self-check is off here


def test_a_flat_index_reports_exact_search_and_a_recall_gauge_of_1(client):
    upload(client, ["red"], ids=["r"])
    index = client.get("/v1/stats").json()["index"]
    assert (index["type"], index["recall"], index["ef_search"]) == ("flat", None, None)
    assert sample(client.get("/metrics").text, "clipsearch_ann_recall") == 1.0


def test_the_recall_self_check_reports_in_stats_and_metrics(settings):
    with hnsw_client(settings, recall_check_interval_s=0.05) as client:
        upload(client, COLOURS, ids=["r", "y", "b", "g"])
        client.app.state.runtime.store.wait_for_index()  # type: ignore[attr-defined]
        assert math.isnan(sample(client.get("/metrics").text, "clipsearch_ann_recall"))  # nothing measured yet
        for colour in COLOURS:
            client.post("/v1/search/text", json={"query": colour, "k": 3})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until a check has seen all four queries
            recall = client.get("/v1/stats").json()["index"]["recall"]
            if recall is not None and recall["queries"] == 4:
                break
            time.sleep(0.05)
        assert recall is not None and recall["queries"] == 4
        assert (recall["recall"], recall["k"]) == (1.0, 4)  # four items: a top 4, which any index finds
        assert sample(client.get("/metrics").text, "clipsearch_ann_recall") == 1.0
