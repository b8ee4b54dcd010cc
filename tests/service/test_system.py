from __future__ import annotations

import time
from dataclasses import replace

from fastapi.testclient import TestClient

from index.ann import IndexType
from service.app import create_app
from service.settings import BatchingSettings, LimitSettings, Settings, StoreSettings
from tests.fakes import fake_towers, image_bytes


def test_health_and_ready_answer_and_ready_names_the_model(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "fake" and ready["count"] == 0


def test_stats_report_count_model_dimension_and_index_type(client):
    client.post("/v1/images", files=[("files", ("r.png", image_bytes("red")))])
    assert client.get("/v1/stats").json() == {
        "count": 1,
        "dim": 8,
        "index_type": "flat",
        "index": {
            "type": "flat",
            "ef_search": None,
            "nprobe": None,
            "far_query_effort": None,
            "far_below": None,
            "searches": 0,
            "far_searches": 0,
            "recall": None,
        },
        "model": {
            "name": "fake",
            "pretrained": "none",
            "dim": 8,
            "device": "cpu",
            "precision": "fp32",
            "fallback_reason": None,
        },
        "captioner": None,
        "itm": None,
    }


def test_unknown_routes_get_the_error_shape(client):
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found"}}


def test_a_full_queue_answers_429_with_retry_after(settings):
    settings.batching = BatchingSettings(max_queue=1)
    with TestClient(create_app(settings, towers=fake_towers())) as client:
        files = [("files", (f"{i}.png", image_bytes("red"))) for i in range(2)]
        response = client.post("/v1/embed/image", files=files)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "overloaded"


def test_a_failing_model_answers_500_in_the_error_shape_and_the_service_recovers(settings):
    towers = fake_towers()
    with TestClient(create_app(settings, towers=towers), raise_server_exceptions=False) as client:
        towers.image.fail_next = True  # type: ignore[attr-defined]
        response = client.post("/v1/embed/image", files=[("files", ("r.png", image_bytes("red")))])
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        assert client.post("/v1/embed/image", files=[("files", ("r.png", image_bytes("red")))]).status_code == 200


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in [
        "/v1/images",
        "/v1/images/{item_id}",
        "/v1/images/{item_id}/similar",
        "/v1/search/text",
        "/v1/search/image",
        "/v1/classify",
        "/v1/embed/text",
        "/v1/embed/image",
        "/v1/stats",
    ]:
        assert path in paths


def test_the_index_setting_reaches_the_store(settings):
    settings.store = StoreSettings(data_dir=settings.store.data_dir, index=IndexType.IVF)
    with TestClient(create_app(settings, towers=fake_towers())) as client:
        files = [("files", (f"{c}.png", image_bytes(c))) for c in ["red", "green", "blue"]]
        assert client.post("/v1/images", files=files, data={"ids": ["r", "g", "b"]}).status_code == 201
        client.app.state.runtime.store.wait_for_index()  # type: ignore[attr-defined]
        assert client.get("/v1/stats").json()["index_type"] == "ivf"
        assert client.post("/v1/search/text", json={"query": "green", "k": 1}).json()["results"][0]["id"] == "g"


def test_a_body_over_the_request_limit_is_refused_from_its_length_alone(settings):
    settings.limits = LimitSettings(max_files=2, max_upload_bytes=1000)
    with TestClient(create_app(settings, towers=fake_towers())) as client:
        big = b"x" * (settings.limits.max_request_bytes + 1)
        response = client.post("/v1/images", files=[("files", ("big.png", big))])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_request_past_the_timeout_answers_503(settings):
    settings.limits = LimitSettings(request_timeout_s=0.2)
    towers = fake_towers()
    slow_encode = towers.text.encode

    def slow(batch):
        time.sleep(1)
        return slow_encode(batch)

    towers.text.encode = slow  # type: ignore[method-assign]
    with TestClient(create_app(settings, towers=towers)) as client:
        response = client.post("/v1/search/text", json={"query": "red"})
        assert response.status_code == 503
        assert response.json()["error"] == {
            "code": "timeout",
            "message": "the request took longer than 0.2 s and was stopped",
        }


def test_every_search_classify_and_embed_response_names_the_serving_model_in_a_header(client):
    client.post("/v1/images", files=[("files", ("r.png", image_bytes("red")))], data={"ids": ["r"]})
    answers = [
        client.post("/v1/search/text", json={"query": "red"}),
        client.post("/v1/search/text/batch", json={"queries": ["red", "blue"]}),
        client.post("/v1/search/image", files={"file": ("q.png", image_bytes("red"))}),
        client.get("/v1/images/r/similar"),
        client.post("/v1/classify", files={"file": ("q.png", image_bytes("red"))}, data={"labels": ["red", "blue"]}),
        client.post("/v1/embed/text", json={"texts": ["red"]}),
        client.post("/v1/embeddings", json={"model": "clipsearch", "input": "red"}),
        client.post("/v1/search/text", json={"query": ""}),  # errors too
    ]
    assert [a.headers["X-Clipsearch-Model"] for a in answers] == ["fake"] * len(answers)
    assert [a.status_code for a in answers[:-1]] == [200] * (len(answers) - 1)


def test_while_the_demo_model_serves_the_header_says_demo(settings):
    towers = fake_towers()
    demo = replace(towers, info=replace(towers.info, name="demo"))
    with TestClient(create_app(settings, towers=demo)) as client:
        answer = client.post("/v1/search/text", json={"query": "red"})
    assert answer.status_code == 200
    assert answer.headers["X-Clipsearch-Model"] == "demo"


def test_limits_tell_a_client_how_many_files_one_request_may_carry(tmp_path):
    settings = Settings(store=StoreSettings(data_dir=tmp_path / "data"), limits=LimitSettings(max_files=5))
    with TestClient(create_app(settings, towers=fake_towers())) as client:
        limits = client.get("/v1/limits").json()
        assert limits["max_files"] == 5
        assert limits["max_upload_bytes"] == 20 * 1024 * 1024 and limits["max_k"] == 1000
        six = [("files", (f"{i}.png", image_bytes("red"))) for i in range(6)]
        refused = client.post("/v1/images", files=six)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == "6 files sent; at most 5 per request"
        assert client.post("/v1/images", files=six[:5]).status_code == 201


def test_the_api_docs_page_and_its_assets_come_from_this_server_not_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text and "/docs-assets/swagger-ui.css" in page.text
    assert "https://" not in page.text
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN: off
