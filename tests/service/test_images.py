from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from index.types import NewItem
from service.app import create_app
from service.settings import StoreSettings
from tests.fakes import fake_towers, image_bytes


def upload(client, colours, *, ids=None, metadata=None):
    files = [("files", (f"{c}.png", image_bytes(c), "image/png")) for c in colours]
    data: dict = {}
    if ids is not None:
        data["ids"] = ids
    if metadata is not None:
        data["metadata"] = [json.dumps(m) for m in metadata]
    return client.post("/v1/images", files=files, data=data)


def test_adding_images_returns_201_with_the_stored_items(client):
    response = upload(client, ["red", "blue"], ids=["r", "b"], metadata=[{"album": "a"}, {"album": "b"}])
    assert response.status_code == 201
    assert [(i["id"], i["metadata"]) for i in response.json()["items"]] == [
        ("r", {"album": "a"}),
        ("b", {"album": "b"}),
    ]
    assert client.get("/v1/stats").json()["count"] == 2


def test_images_without_ids_get_generated_ones(client):
    items = upload(client, ["red", "green"]).json()["items"]
    assert len({i["id"] for i in items}) == 2 and all(i["id"] for i in items)


def test_adding_an_existing_id_replaces_the_item(client):
    upload(client, ["red"], ids=["x"], metadata=[{"v": 1}])
    upload(client, ["blue"], ids=["x"], metadata=[{"v": 2}])
    assert client.get("/v1/images/x").json()["metadata"] == {"v": 2}
    assert client.get("/v1/stats").json()["count"] == 1
    assert client.post("/v1/search/text", json={"query": "blue", "k": 1}).json()["results"][0]["id"] == "x"


def test_ids_must_match_the_number_of_files(client):
    response = upload(client, ["red", "blue"], ids=["only-one"])
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "1 ids for 2 files: give one id per file"
    assert client.get("/v1/stats").json()["count"] == 0


def test_metadata_that_is_not_a_json_object_is_refused(client):
    cases = [("[1, 2]", "must be a JSON object"), ("{nope", "not valid JSON"), ('{"a":' * 5000, "nested too deeply")]
    for raw, message in cases:
        response = client.post(
            "/v1/images", files=[("files", ("red.png", image_bytes("red")))], data={"metadata": [raw]}
        )
        assert response.status_code == 422
        assert message in response.json()["error"]["message"]
    assert client.get("/v1/stats").json()["count"] == 0


def test_a_file_that_is_not_an_image_is_refused_naming_the_file_and_nothing_is_stored(client):
    files = [("files", ("good.png", image_bytes("red"))), ("files", ("notes.txt", b"hello"))]
    response = client.post("/v1/images", files=files)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_image",
        "message": "notes.txt: the file is not an image in a format this service reads",
    }
    assert client.get("/v1/stats").json()["count"] == 0


def test_an_id_with_path_characters_is_refused(client):
    response = upload(client, ["red"], ids=["../../etc/passwd"])
    assert response.status_code == 400
    assert "is not allowed" in response.json()["error"]["message"]


@pytest.mark.parametrize("item_id", ["café", "東京", "ümlaut"])
def test_an_id_with_a_letter_outside_ascii_is_refused_and_the_message_says_ascii(client, item_id):
    response = upload(client, ["red"], ids=[item_id])
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"id {item_id!r} is not allowed: use ASCII letters, digits and . _ : @ - (starting with a letter or digit)"
    )
    assert client.get("/v1/stats").json()["count"] == 0


def test_get_returns_an_item_and_404_for_an_unknown_id(client):
    upload(client, ["red"], ids=["r"], metadata=[{"k": "v"}])
    assert client.get("/v1/images/r").json()["metadata"] == {"k": "v"}
    missing = client.get("/v1/images/ghost")
    assert missing.status_code == 404
    assert missing.json()["error"] == {"code": "not_found", "message": "no item with id 'ghost'"}


def test_listing_pages_through_items_in_insertion_order(client):
    upload(client, ["red", "green", "blue"], ids=["a", "b", "c"])
    page = client.get("/v1/images", params={"offset": 1, "limit": 1}).json()
    assert [i["id"] for i in page["items"]] == ["b"]
    assert page["total"] == 3


def test_delete_removes_the_item_from_search_and_answers_404_the_second_time(client):
    upload(client, ["red", "blue"], ids=["r", "b"])
    assert client.delete("/v1/images/r").status_code == 204
    results = client.post("/v1/search/text", json={"query": "red", "k": 5}).json()["results"]
    assert [r["id"] for r in results] == ["b"]
    assert client.delete("/v1/images/r").status_code == 404


def test_similar_ranks_other_items_by_likeness_leaving_the_item_out(client):
    upload(client, ["red", "yellow", "blue"], ids=["r", "y", "b"])
    results = client.get("/v1/images/r/similar", params={"k": 5}).json()["results"]
    assert [r["id"] for r in results] == ["y", "b"]
    assert client.get("/v1/images/ghost/similar").status_code == 404


def test_similar_takes_a_json_filter(client):
    upload(client, ["red", "yellow", "blue"], ids=["r", "y", "b"], metadata=[{}, {"t": 1}, {"t": 2}])
    results = client.get("/v1/images/r/similar", params={"filter": '{"t": 2}'}).json()["results"]
    assert [r["id"] for r in results] == ["b"]
    bad = client.get("/v1/images/r/similar", params={"filter": "{oops"})
    assert bad.status_code == 422 and "filter is not valid JSON" in bad.json()["error"]["message"]


def test_the_stored_embedding_can_be_fetched(client):
    upload(client, ["red"], ids=["r"])
    body = client.get("/v1/images/r/embedding").json()
    assert body["dim"] == 8 and len(body["embeddings"][0]) == 8
    assert sum(x * x for x in body["embeddings"][0]) == __import__("pytest").approx(1.0, abs=1e-5)


def test_too_many_files_in_one_request_are_refused(client, settings):
    files = [("files", (f"{i}.png", image_bytes("red"))) for i in range(settings.limits.max_files + 1)]
    response = client.post("/v1/images", files=files)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_files"


def test_a_thumbnail_is_kept_for_every_added_image_and_goes_with_it(client):
    files = [("files", ("big.png", image_bytes("red", size=(800, 400))))]
    client.post("/v1/images", files=files, data={"ids": ["big"]})
    response = client.get("/v1/images/big/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(response.content))
    assert thumbnail.size == (256, 128)
    client.delete("/v1/images/big")
    assert client.get("/v1/images/big/thumbnail").status_code == 404


def test_an_item_without_a_thumbnail_says_so(client):
    store = client.app.state.runtime.store
    store.upsert([NewItem(np.ones(8, dtype=np.float32), "vector-only")])
    response = client.get("/v1/images/vector-only/thumbnail")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "item 'vector-only' has no thumbnail"


def test_originals_are_kept_only_where_configured(settings):
    data = image_bytes("green", size=(40, 30))
    for keep in (True, False):
        settings.store = StoreSettings(data_dir=settings.store.data_dir.with_name(f"keep-{keep}"), keep_originals=keep)
        with TestClient(create_app(settings, towers=fake_towers())) as client:
            client.post("/v1/images", files=[("files", ("g.png", data))], data={"ids": ["g"]})
            response = client.get("/v1/images/g/original")
            if keep:
                assert response.status_code == 200 and response.content == data
            else:
                assert response.status_code == 404
                assert response.json()["error"]["message"] == "item 'g' has no stored original"


def test_an_upsert_replaces_the_thumbnail(client):
    client.post("/v1/images", files=[("files", ("a.png", image_bytes("red")))], data={"ids": ["x"]})
    client.post("/v1/images", files=[("files", ("b.png", image_bytes("blue")))], data={"ids": ["x"]})
    thumbnail = Image.open(io.BytesIO(client.get("/v1/images/x/thumbnail").content)).convert("RGB")
    red, _, blue = np.asarray(thumbnail)[8, 8]
    assert blue > 200 and red < 60
