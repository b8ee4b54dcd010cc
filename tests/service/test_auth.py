from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.settings import AuthSettings, Settings
from tests.fakes import fake_towers, image_bytes

KEY = "k" * 16 + "-first"
OTHER = "o" * 16 + "-second"


def client_with(settings: Settings, **auth) -> TestClient:
    settings.auth = AuthSettings(**auth)
    return TestClient(create_app(settings, towers=fake_towers()))


def add(client: TestClient, headers: dict[str, str] | None = None):
    return client.post("/v1/images", files=[("files", ("r.png", image_bytes("red")))], headers=headers)


def test_without_keys_configured_everything_is_open(client):
    assert add(client).status_code == 201


def test_writes_need_a_key_401_without_and_403_with_a_wrong_one(settings):
    with client_with(settings, api_keys=[KEY, OTHER]) as client:
        missing = add(client)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer <key>" in missing.json()["error"]["message"]
        wrong = add(client, {"Authorization": "Bearer " + "x" * 22})
        assert wrong.status_code == 403
        assert wrong.json()["error"] == {"code": "forbidden", "message": "the API key is not valid"}
        assert client.get("/v1/stats").json()["count"] == 0
        assert add(client, {"Authorization": f"Bearer {OTHER}"}).status_code == 201
        item = client.get("/v1/images").json()["items"][0]["id"]
        assert client.delete(f"/v1/images/{item}").status_code == 401
        assert client.delete(f"/v1/images/{item}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 204


def test_reads_stay_open_unless_protected(settings):
    with client_with(settings, api_keys=[KEY]) as client:
        assert client.post("/v1/search/text", json={"query": "red"}).status_code == 200
    with client_with(settings, api_keys=[KEY], protect_reads=True) as client:
        assert client.post("/v1/search/text", json={"query": "red"}).status_code == 401
        assert client.get("/v1/stats").status_code == 401
        search = client.post("/v1/search/text", json={"query": "red"}, headers={"Authorization": f"Bearer {KEY}"})
        assert search.status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/search/text", {"json": {"query": "red"}}),
        ("/v1/search/text/batch", {"json": {"queries": ["red", "blue"]}}),
        ("/v1/search/image", {"files": [("file", ("q.png", image_bytes("red")))]}),
    ],
    ids=["text", "text-batch", "image"],
)
def test_every_search_route_checks_the_read_key_when_reads_are_protected(settings, path, body):
    with client_with(settings, api_keys=[KEY], protect_reads=True) as client:
        assert client.post(path, **body).status_code == 401
        wrong = client.post(path, **body, headers={"Authorization": "Bearer " + "x" * 22})
        assert wrong.status_code == 403
        assert client.post(path, **body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        # The scheme stays in the OpenAPI description, so /docs offers the key for these routes too.
        assert client.get("/openapi.json").json()["paths"][path]["post"]["security"] == [{"HTTPBearer": []}]


def test_health_and_readiness_stay_open_with_keys(settings):
    with client_with(settings, api_keys=[KEY], protect_reads=True) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200


def test_keys_can_come_from_a_file(settings, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# team keys\n{KEY}\n\n")
    with client_with(settings, api_keys_file=keys) as client:
        assert add(client).status_code == 401
        assert add(client, {"Authorization": f"Bearer {KEY}"}).status_code == 201


def test_short_keys_are_refused():
    with pytest.raises(ValidationError, match="at least 16 characters"):
        AuthSettings(api_keys=["short"])


def test_keys_come_from_the_environment_as_a_json_list(monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS", f'["{KEY}"]')
    monkeypatch.setenv("CLIPSEARCH_AUTH__PROTECT_READS", "true")
    auth = Settings().auth
    assert auth.keys() == [KEY] and auth.protect_reads
