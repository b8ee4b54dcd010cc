from __future__ import annotations

import pytest

from tests.fakes import image_bytes
from tests.service.test_images import upload


@pytest.fixture
def indexed(client):
    upload(
        client,
        ["red", "yellow", "blue", "green"],
        ids=["r", "y", "b", "g"],
        metadata=[{"warm": True, "n": 1}, {"warm": True, "n": 2}, {"warm": False, "n": 3}, {"warm": False, "n": 4}],
    )
    return client


def test_text_search_ranks_images_best_first_with_cosine_scores(indexed):
    results = indexed.post("/v1/search/text", json={"query": "a photo of something red", "k": 4}).json()["results"]
    assert [r["id"] for r in results][:2] == ["r", "y"]
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert results[0]["metadata"] == {"warm": True, "n": 1}


def test_k_limits_the_number_of_results(indexed):
    assert len(indexed.post("/v1/search/text", json={"query": "red", "k": 2}).json()["results"]) == 2


def test_a_filter_keeps_only_matching_items(indexed):
    body = {"query": "yellow", "k": 4, "filter": {"warm": False}}
    assert [r["id"] for r in indexed.post("/v1/search/text", json=body).json()["results"]] == ["g", "b"]
    body = {"query": "red", "k": 4, "filter": {"n": {"in": [2, 4]}}}
    assert [r["id"] for r in indexed.post("/v1/search/text", json=body).json()["results"]] == ["y", "g"]


def test_min_score_drops_weak_results(indexed):
    results = indexed.post("/v1/search/text", json={"query": "red", "k": 4, "min_score": 0.9}).json()["results"]
    assert [r["id"] for r in results] == ["r"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "   ", "k": 3}, "query is blank"),
        ({"query": "red", "k": 0}, "k: Input should be greater than or equal to 1"),
        ({"query": "red", "k": 100000}, "k must be between 1 and 1000"),
        ({"query": "red", "filter": {"n": {"gt": 1}}}, "filter.n"),
        ({"query": "red", "filter": {"n": [1, 2]}}, "filter.n"),
        ({"k": 3}, "query: Field required"),
        ({"query": "red", "colour": "x"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_text_searches_get_422_naming_the_problem(indexed, body, message):
    response = indexed.post("/v1/search/text", json=body)
    assert response.status_code == 422
    assert message in response.json()["error"]["message"]


def test_malformed_json_gets_422(indexed):
    response = indexed.post("/v1/search/text", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_image_search_ranks_by_likeness_to_the_uploaded_image(indexed):
    response = indexed.post("/v1/search/image", files={"file": ("q.png", image_bytes("blue"))}, data={"k": "2"})
    assert response.json()["results"][0]["id"] == "b"
    assert len(response.json()["results"]) == 2


def test_image_search_takes_a_json_filter(indexed):
    response = indexed.post(
        "/v1/search/image", files={"file": ("q.png", image_bytes("blue"))}, data={"filter": '{"warm": true}'}
    )
    assert {r["id"] for r in response.json()["results"]} == {"r", "y"}


def test_image_search_with_a_broken_image_gets_400(indexed):
    response = indexed.post("/v1/search/image", files={"file": ("q.jpg", b"\xff\xd8\xff broken")})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("q.jpg: ")


def test_searching_an_empty_collection_returns_no_results(client):
    assert client.post("/v1/search/text", json={"query": "red"}).json() == {"results": [], "truncated": False}
