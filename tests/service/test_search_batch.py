"""POST /v1/search/text/batch: many text searches in one request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import LimitSettings, Settings, StoreSettings
from tests.fakes import fake_towers
from tests.service.test_images import upload

QUERIES = ["a photo of something red", "blue", "green things", "yellow", "red and blue"]


@pytest.fixture
def indexed(client):
    upload(
        client,
        ["red", "yellow", "blue", "green"],
        ids=["r", "y", "b", "g"],
        metadata=[{"warm": True, "n": 1}, {"warm": True, "n": 2}, {"warm": False, "n": 3}, {"warm": False, "n": 4}],
    )
    return client


def single(client: TestClient, query: str, **options: object) -> list[dict[str, object]]:
    response = client.post("/v1/search/text", json={"query": query, **options})
    assert response.status_code == 200
    results: list[dict[str, object]] = response.json()["results"]
    return results


@pytest.mark.parametrize(
    "options",
    [{"k": 4}, {"k": 2}, {"k": 4, "filter": {"warm": False}}, {"k": 4, "min_score": 0.5}],
    ids=["k4", "k2", "filter", "min-score"],
)
def test_each_query_gets_what_a_single_text_search_gets_in_order(indexed, options):
    response = indexed.post("/v1/search/text/batch", json={"queries": QUERIES, **options})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(QUERIES) and response.json()["truncated"] == [False] * len(QUERIES)
    for query, hits in zip(QUERIES, results, strict=True):
        expected = single(indexed, query, **options)
        assert [h["id"] for h in hits] == [h["id"] for h in expected]
        assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected], abs=1e-6)
        assert [h["metadata"] for h in hits] == [h["metadata"] for h in expected]


def test_a_repeated_query_gets_the_same_answer_each_time(indexed):
    results = indexed.post("/v1/search/text/batch", json={"queries": ["red", "red"], "k": 3}).json()["results"]
    assert results[0] == results[1] and len(results[0]) == 3


def test_an_empty_collection_answers_an_empty_list_per_query(client):
    response = client.post("/v1/search/text/batch", json={"queries": ["red", "blue"]})
    assert response.status_code == 200 and response.json() == {"results": [[], []], "truncated": [False, False]}


def test_a_query_over_the_context_is_cut_and_flagged_or_refused(indexed):
    long = " ".join(["red"] * 200)
    body = {"queries": ["red", long], "k": 2}
    assert indexed.post("/v1/search/text/batch", json=body).json()["truncated"] == [False, True]
    response = indexed.post("/v1/search/text/batch", json={**body, "truncate": False})
    assert response.status_code == 422 and response.json()["error"]["code"] == "text_too_long"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"queries": []}, "queries: List should have at least 1 item"),
        ({"queries": ["red", "  "]}, "queries[1] is blank"),
        ({"queries": ["red"], "k": 100000}, "k must be between 1 and 1000"),
        ({"queries": ["red"], "filter": {"n": {"gt": 1}}}, "filter.n"),
        ({"queries": "red"}, "queries: Input should be a valid list"),
        ({"query": "red"}, "queries: Field required"),
    ],
)
def test_bad_batch_searches_get_422_naming_the_problem(indexed, body, message):
    response = indexed.post("/v1/search/text/batch", json=body)
    assert response.status_code == 422
    assert message in response.json()["error"]["message"]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store=StoreSettings(data_dir=tmp_path / "data"), limits=LimitSettings(max_batch_queries=3))
    with TestClient(create_app(settings, towers=fake_towers())) as client:
        yield client


def test_more_queries_than_the_limit_get_422_with_the_limit(limited):
    assert limited.post("/v1/search/text/batch", json={"queries": ["a", "b", "c"]}).status_code == 200
    response = limited.post("/v1/search/text/batch", json={"queries": ["a", "b", "c", "d"]})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "validation_error",
        "message": "queries holds 4 texts; the limit is 3 per request",
    }
