"""No request may poison the store: each hostile request is refused with a clear 4xx
and leaves every later request (reads, filtered searches) answering as before."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.fakes import fake_towers, image_bytes

DEEP = '{"a":' * 256 + "1" + "}" * 256


def add(client: TestClient, metadata: str, item_id: str = "x"):
    return client.post(
        "/v1/images", files=[("files", ("a.png", image_bytes("red")))], data={"ids": item_id, "metadata": metadata}
    )


def reads_still_work(client: TestClient) -> None:
    assert client.get("/v1/images").status_code == 200
    for flt in ({"album": "a"}, {"n": {"in": [1, 2]}}):
        response = client.post("/v1/search/text", json={"query": "red", "filter": flt})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (DEEP, "nested more than 16 levels deep"),
        ('{"x": NaN}', "NaN is not a JSON value"),
        ('{"x": -Infinity}', "-Infinity is not a JSON value"),
        ('{"x": 1e999}', "numbers must be finite"),
        ('{"x": 123456789012345678901234567890}', "outside the 64-bit range"),
        ('{"a.b": 1}', "key 'a.b' is not allowed"),
        ('{"": 1}', "must be 1 to 64 characters long"),
        ('{"' + "k" * 65 + '": 1}', "must be 1 to 64 characters long"),
        ('{"k\\ud800": 1}', "is not allowed"),
        ('{"x": "\\udc80"}', "lone surrogate"),
    ],
)
def test_metadata_a_read_could_not_return_is_refused_before_anything_is_stored(client, metadata, message):
    add(client, '{"album": "a", "n": 1}', item_id="kept")
    response = add(client, metadata)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]
    assert [i["id"] for i in client.get("/v1/images").json()["items"]] == ["kept"]
    reads_still_work(client)


def test_metadata_at_the_depth_limit_is_stored_and_read_back(client):
    nested = '{"a":' * 15 + "1" + "}" * 15
    assert add(client, nested).status_code == 201
    assert client.get("/v1/images/x").json()["metadata"] == json.loads(nested)


def test_non_ascii_keys_are_stored_and_can_be_filtered_on(client):
    assert add(client, '{"ключ": "значение", "日付": 2024}').status_code == 201
    for flt in ({"ключ": "значение"}, {"日付": 2024}):
        results = client.post("/v1/search/text", json={"query": "red", "filter": flt}).json()["results"]
        assert [r["id"] for r in results] == ["x"]


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"big": 123456789012345678901234567890}, "outside the 64-bit range"),
        ({"k" * 10_000: 1}, "is longer than 256 characters"),
        ({"a b": 1}, "is not allowed"),
        ({"a..b": 1}, "is not allowed"),
    ],
)
def test_filters_that_cannot_match_get_400_not_500(client, flt, message):
    response = client.post("/v1/search/text", json={"query": "red", "filter": flt})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


def test_a_large_finite_number_is_a_valid_filter(client):
    add(client, '{"x": 1e308}')
    results = client.post("/v1/search/text", json={"query": "red", "filter": {"x": 1e308}}).json()["results"]
    assert [r["id"] for r in results] == ["x"]


@pytest.mark.parametrize(
    ("stored", "flt", "found"),
    [
        ('{"v": true}', {"v": True}, True),
        ('{"v": true}', {"v": 1}, False),
        ('{"v": 1}', {"v": True}, False),
        ('{"v": 1.0}', {"v": 1}, True),
        ('{"v": 1}', {"v": "1"}, False),
        ('{"v": "1"}', {"v": 1}, False),
        ('{"v": ["a", "b"]}', {"v": '["a","b"]'}, False),
        ('{"v": ["a", "b"]}', {"v": "b"}, True),
        ('{"v": ["a", "b"]}', {"v": {"in": ["c", "a"]}}, True),
        ('{"v": ["a", "b"]}', {"v": {"in": ["c", "d"]}}, False),
        ('{"v": [1, true]}', {"v": True}, True),
        ('{"v": {"w": 1}}', {"v": 1}, False),
        ('{"v": {"w": 1}}', {"v.w": 1}, True),
    ],
)
def test_filters_compare_types_strictly_and_arrays_match_any_element(client, stored, flt, found):
    add(client, stored)
    results = client.post("/v1/search/text", json={"query": "red", "filter": flt}).json()["results"]
    assert [r["id"] for r in results] == (["x"] if found else [])


def test_a_json_body_over_its_limit_gets_413_naming_the_limit(client):
    body = json.dumps({"query": "red " * 400_000})
    response = client.post("/v1/search/text", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "the limit is 1048576" in response.json()["error"]["message"]


def test_a_chunked_json_body_over_its_limit_gets_413(client):
    def chunks():
        for _ in range(40):
            yield b" " * 64 * 1024

    response = client.post("/v1/search/text", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_classify_refuses_repeated_labels(client):
    response = client.post(
        "/v1/classify", files={"file": ("q.png", image_bytes("red"))}, data={"labels": ["red", "blue", "red"]}
    )
    assert response.status_code == 422
    assert "labels must be distinct; given more than once: ['red']" in response.json()["error"]["message"]


def test_classify_refuses_a_second_image(client):
    files = [("file", ("a.png", image_bytes("red"))), ("file", ("b.png", image_bytes("blue")))]
    response = client.post("/v1/classify", files=files, data={"labels": ["red", "blue"]})
    assert response.status_code == 422
    assert "classify takes one image" in response.json()["error"]["message"]


def test_classify_over_the_label_limit_gets_our_message_not_the_parsers(client):
    labels = [f"label {i}" for i in range(1001)]
    response = client.post("/v1/classify", files={"file": ("q.png", image_bytes("red"))}, data={"labels": labels})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "1001 labels; at most 1000"


LONG = "a red circle " * 6 + "and a blue square"  # 22 words: past the fake model's 14


def test_a_query_longer_than_the_context_is_cut_and_the_response_says_so(client):
    body = client.post("/v1/search/text", json={"query": LONG}).json()
    assert body["truncated"] is True
    assert client.post("/v1/search/text", json={"query": "a red circle"}).json()["truncated"] is False


def test_a_caller_can_ask_for_long_queries_to_be_refused(client):
    response = client.post("/v1/search/text", json={"query": LONG, "truncate": False})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "text_too_long",
        "message": "the query needs 24 tokens; the model reads at most 16 (send truncate=true to embed only its start)",
    }


def test_text_embeddings_say_which_texts_were_cut(client):
    body = client.post("/v1/embed/text", json={"texts": ["red", LONG]}).json()
    assert body["truncated"] == [False, True]
    assert client.post("/v1/embed/text", json={"texts": [LONG], "truncate": False}).status_code == 422


def test_openai_token_arrays_get_one_clear_message(client):
    response = client.post("/v1/embeddings", json={"model": "fake", "input": [1, 2, 3]})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "input: Value error, input must be a text or a list of texts; token arrays are not accepted here"
    )


def test_openai_clients_can_list_the_models(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["fake", "clipsearch"]
    assert client.get("/v1/models/fake").json()["id"] == "fake"
    assert client.get("/v1/models/gpt-4").status_code == 404


def test_an_unexpected_error_is_answered_500_and_logged_once_inside_the_app(settings, caplog):
    towers = fake_towers()
    # raise_server_exceptions=True: an exception escaping the app would be raised here, as the server would log it.
    with TestClient(create_app(settings, towers=towers)) as client:
        towers.image.fail_next = True  # type: ignore[attr-defined]
        with caplog.at_level(logging.ERROR):
            response = client.post("/v1/embed/image", files=[("files", ("r.png", image_bytes("red")))])
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("service")]
    assert len(tracebacks) == 1
