"""Captioning, caption search and ITM rerank against a real server with the demo BLIP models."""

from __future__ import annotations

import random

import pytest

from harness.server import ServerProcess
from models.blip import DEMO_IMAGE_SIZE
from models.scenes import HELD_OUT_COMBOS, Scene, SceneObject, perturb, scene_set
from tests.e2e.test_server import add, png

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("blip") / "data"
    with ServerProcess(data, "--model", "demo", "--captioner", "demo", "--itm", "demo") as running:
        yield running


def test_caption_names_the_colour_and_shape_of_a_large_blue_square(server):
    scene = Scene((SceneObject("square", "blue", "large", "centre"),), (200, 200, 200), False, 7)
    with server.client() as client:
        response = client.post(
            "/v1/caption", files=[("files", ("square.png", png(scene, DEMO_IMAGE_SIZE), "image/png"))]
        )
    assert response.status_code == 200
    caption = response.json()["captions"][0]["caption"]
    assert "blue" in caption and "square" in caption
    assert response.json()["model"] == "demo"


def test_images_added_with_caption_true_are_found_by_their_captions(server):
    scenes = scene_set(4242, 6, exclude=HELD_OUT_COMBOS)
    with server.client() as client:
        response = client.post(
            "/v1/images",
            files=[("files", (f"c{i}.png", png(s, DEMO_IMAGE_SIZE), "image/png")) for i, s in enumerate(scenes)],
            data={"ids": [f"c{i}" for i in range(len(scenes))], "caption": "true"},
        )
        assert response.status_code == 201, response.text
        captions = {item["id"]: item["metadata"]["caption"] for item in response.json()["items"]}
        assert client.get("/v1/images/c0").json()["metadata"]["caption"] == captions["c0"]
        # Query each item by its own caption: the caption field ranks that item first, exactly.
        for caption in captions.values():
            body = {"query": caption, "k": 1, "fields": ["caption"], "filter": None}
            top = client.post("/v1/search/text", json=body).json()["results"][0]
            assert captions[top["id"]] == caption and top["matched"] == "caption"
            assert top["score"] == pytest.approx(1.0, abs=1e-3)


def test_rerank_fixes_a_clip_mistake_on_a_hard_pair(server):
    """Add a scene and its one-attribute near-copy; for the first pair CLIP ranks
    the wrong way round, the ITM rerank puts the right image first."""
    rng = random.Random(99)
    with server.client() as client:
        for i, scene in enumerate(scene_set(777, 60, exclude=HELD_OUT_COMBOS)):
            twin = perturb(scene, rng, exclude=HELD_OUT_COMBOS)
            truth, other = f"pair{i}-truth", f"pair{i}-twin"
            add(
                client,
                {truth: png(scene, DEMO_IMAGE_SIZE), other: png(twin, DEMO_IMAGE_SIZE)},
                {truth: {"pair": i}, other: {"pair": i}},
            )
            body = {"query": scene.caption(), "k": 2, "filter": {"pair": i}}
            clip = client.post("/v1/search/text", json=body).json()["results"]
            if clip[0]["id"] == truth:
                continue  # CLIP is right here; look for a pair it gets wrong
            reranked = client.post("/v1/search/text", json={**body, "rerank": {"top_k": 2}}).json()["results"]
            assert [r["id"] for r in reranked] == [truth, other], (scene.caption(), twin.caption())
            assert reranked[0]["itm_score"] > reranked[1]["itm_score"]
            assert {r["id"]: r["score"] for r in reranked} == {r["id"]: r["score"] for r in clip}
            return
    pytest.fail("CLIP ranked every one of 60 hard pairs right: no mistake to fix")


def test_without_blip_models_caption_and_rerank_answer_503_with_how_to_enable_them(tmp_path):
    with ServerProcess(tmp_path / "data", "--model", "demo") as plain, plain.client() as client:
        scene_png = png(scene_set(1, 1)[0])
        caption = client.post("/v1/caption", files=[("files", ("a.png", scene_png, "image/png"))])
        assert (caption.status_code, caption.json()["error"]["code"]) == (503, "captioner_disabled")
        ingest = client.post(
            "/v1/images", files=[("files", ("a.png", scene_png, "image/png"))], data={"caption": "true"}
        )
        assert ingest.status_code == 503 and "--captioner" in ingest.json()["error"]["message"]
        rerank = client.post("/v1/search/text", json={"query": "a red circle", "rerank": {"top_k": 5}})
        assert (rerank.status_code, rerank.json()["error"]["code"]) == (503, "rerank_disabled")
        assert "--itm" in rerank.json()["error"]["message"]
        assert client.get("/v1/stats").json()["count"] == 0
