"""Captioning, caption-on-ingest, caption search and ITM rerank, with fake BLIP towers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from index.types import NewItem
from service.app import create_app
from service.settings import Settings
from tests.fakes import FakeCaptionTower, FakeMatchTower, fake_towers, image_bytes
from tests.service.test_images import upload


@pytest.fixture
def caption_tower() -> FakeCaptionTower:
    return FakeCaptionTower()


@pytest.fixture
def match_tower() -> FakeMatchTower:
    return FakeMatchTower()


@pytest.fixture
def blip_client(settings: Settings, caption_tower, match_tower) -> Iterator[TestClient]:
    app = create_app(settings, towers=fake_towers(), caption_tower=caption_tower, match_tower=match_tower)
    with TestClient(app) as test_client:
        yield test_client


def caption_files(*colours: str) -> list:
    return [("files", (f"{c}.png", image_bytes(c), "image/png")) for c in colours]


# --- POST /v1/caption ------------------------------------------------------------------------


def test_caption_returns_one_caption_per_image_in_order(blip_client):
    response = blip_client.post("/v1/caption", files=caption_files("red", "blue"))
    assert response.status_code == 200
    assert response.json() == {
        "model": "fake-captioner",
        "captions": [
            {"file": "red.png", "caption": "a red picture"},
            {"file": "blue.png", "caption": "a blue picture"},
        ],
    }


def test_caption_passes_decoding_options_and_continues_a_prompt(blip_client, caption_tower):
    data = {"prompt": "a photography of", "max_new_tokens": "2", "decoding": "sample", "temperature": "0.7"}
    response = blip_client.post("/v1/caption", files=caption_files("green"), data=data)
    assert response.json()["captions"][0]["caption"] == "a photography of a green"
    options = caption_tower.batches[-1][0]
    assert (options.decoding, options.temperature, options.max_new_tokens) == ("sample", 0.7, 2)


def test_a_prompt_too_long_for_the_captioner_is_refused_with_the_numbers(blip_client):
    response = blip_client.post(
        "/v1/caption", files=caption_files("red"), data={"prompt": "word " * 20, "max_new_tokens": "30"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "the prompt (20 tokens) and max_new_tokens (30) need 51 positions; this captioner reads at most 40"
    )


def test_caption_options_out_of_range_are_refused(blip_client):
    for data, where in [({"num_beams": "0"}, "num_beams"), ({"decoding": "greedy"}, "decoding")]:
        response = blip_client.post("/v1/caption", files=caption_files("red"), data=data)
        assert response.status_code == 422
        assert where in response.json()["error"]["message"]


def test_an_undecodable_image_is_named_in_the_error(blip_client):
    response = blip_client.post("/v1/caption", files=[("files", ("junk.png", b"not an image", "image/png"))])
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("junk.png: ")


def test_caption_without_a_captioner_answers_503_saying_how_to_enable_it(client):
    response = client.post("/v1/caption", files=caption_files("red"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "captioner_disabled"
    assert "--captioner" in response.json()["error"]["message"]


def test_stats_name_the_blip_models(blip_client):
    stats = blip_client.get("/v1/stats").json()
    assert stats["captioner"]["spec"] == "fake-captioner" and stats["itm"]["spec"] == "fake-itm"


def test_stats_show_null_blip_models_when_they_are_off(client):
    stats = client.get("/v1/stats").json()
    assert stats["captioner"] is None and stats["itm"] is None


# --- caption on ingest and caption search ----------------------------------------------------


def test_adding_images_with_caption_true_stores_the_caption_in_metadata(blip_client):
    response = blip_client.post(
        "/v1/images", files=caption_files("red"), data={"ids": ["r"], "metadata": ['{"album": "x"}'], "caption": "true"}
    )
    assert response.status_code == 201
    assert blip_client.get("/v1/images/r").json()["metadata"] == {"album": "x", "caption": "a red picture"}


def test_caption_true_without_a_captioner_answers_503_and_stores_nothing(client):
    response = client.post("/v1/images", files=caption_files("red"), data={"caption": "true"})
    assert response.status_code == 503
    assert "--captioner" in response.json()["error"]["message"]
    assert client.get("/v1/stats").json()["count"] == 0


def test_caption_true_with_a_caption_already_in_metadata_is_refused(blip_client):
    response = blip_client.post(
        "/v1/images", files=caption_files("red"), data={"metadata": ['{"caption": "mine"}'], "caption": "true"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "metadata of red.png has a caption already: send caption=false to keep it"
    )


def test_text_search_can_match_captions_and_says_which_field_matched(blip_client):
    # The image is blue but its (client-given) caption says red: only the caption field finds it for "red".
    upload(blip_client, ["blue"], ids=["b"], metadata=[{"caption": "something red"}])
    upload(blip_client, ["green"], ids=["g"])
    by_caption = blip_client.post("/v1/search/text", json={"query": "red", "k": 5, "fields": ["caption"]}).json()
    assert [(r["id"], r["matched"]) for r in by_caption["results"]] == [("b", "caption")]
    assert by_caption["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    both = blip_client.post("/v1/search/text", json={"query": "red", "k": 5, "fields": ["image", "caption"]}).json()
    assert [(r["id"], r["matched"]) for r in both["results"]] == [("b", "caption"), ("g", "image")]
    by_image = blip_client.post("/v1/search/text", json={"query": "red", "k": 5}).json()
    assert {r["matched"] for r in by_image["results"]} == {"image"}
    assert by_image["results"][0]["score"] < 0.9


def test_an_unknown_search_field_is_refused(blip_client):
    response = blip_client.post("/v1/search/text", json={"query": "red", "fields": ["exif"]})
    assert response.status_code == 422
    assert "fields" in response.json()["error"]["message"]


# --- rerank ----------------------------------------------------------------------------------


def shades(client) -> None:
    """Three red images, brightest first by CLIP; the fake ITM prefers darker ones."""
    for item_id, rgb in [("bright", (255, 0, 0)), ("mid", (200, 0, 0)), ("dark", (140, 0, 0))]:
        files = [("files", (f"{item_id}.png", image_bytes(rgb), "image/png"))]
        assert client.post("/v1/images", files=files, data={"ids": [item_id]}).status_code == 201


def test_rerank_reorders_clip_top_k_by_itm_and_returns_both_scores(blip_client, match_tower):
    shades(blip_client)
    plain = blip_client.post("/v1/search/text", json={"query": "red", "k": 3}).json()["results"]
    assert [r["id"] for r in plain] == ["bright", "mid", "dark"]
    assert all(r["itm_score"] is None for r in plain)
    reranked = blip_client.post("/v1/search/text", json={"query": "red", "k": 3, "rerank": {"top_k": 3}}).json()
    results = reranked["results"]
    assert [r["id"] for r in results] == ["dark", "mid", "bright"]
    assert [r["itm_score"] for r in results] == sorted((r["itm_score"] for r in results), reverse=True)
    assert {r["id"]: r["score"] for r in results} == {r["id"]: r["score"] for r in plain}  # CLIP's, unchanged
    assert match_tower.texts == ["red"] * 3


def test_rerank_top_k_smaller_than_k_reorders_only_the_head(blip_client):
    shades(blip_client)
    results = blip_client.post("/v1/search/text", json={"query": "red", "k": 3, "rerank": {"top_k": 2}}).json()
    assert [(r["id"], r["itm_score"] is None) for r in results["results"]] == [
        ("mid", False),
        ("bright", False),
        ("dark", True),
    ]


def test_rerank_top_k_larger_than_k_returns_k_results(blip_client):
    shades(blip_client)
    results = blip_client.post("/v1/search/text", json={"query": "red", "k": 1, "rerank": {"top_k": 3}}).json()
    assert [r["id"] for r in results["results"]] == ["dark"]


def test_items_without_an_image_follow_the_scored_ones_with_a_null_itm_score(blip_client):
    shades(blip_client)
    # An item stored from a bare vector (as import-vectors does) has no image to rerank by.
    store = blip_client.app.state.runtime.store
    store.upsert([NewItem(np.asarray(store.vector("bright")), "vector-only")])
    results = blip_client.post("/v1/search/text", json={"query": "red", "k": 4, "rerank": {"top_k": 4}}).json()
    assert [r["id"] for r in results["results"]][-1] == "vector-only"
    assert results["results"][-1]["itm_score"] is None


def test_rerank_without_an_itm_model_answers_503_saying_how_to_enable_it(client):
    response = client.post("/v1/search/text", json={"query": "red", "rerank": {"top_k": 5}})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "rerank_disabled"
    assert "--itm" in response.json()["error"]["message"]


def test_rerank_top_k_over_the_limit_is_refused(blip_client):
    response = blip_client.post("/v1/search/text", json={"query": "red", "rerank": {"top_k": 101}})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "rerank.top_k is 101; the limit is 100"
