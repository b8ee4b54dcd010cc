"""The real service as a process, driven over HTTP with httpx."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import open_clip
import openai
import pytest
import torch
import torch.nn.functional as F

from demo.scenes import Scene, SceneObject, render, scene_set
from harness.server import ServerProcess, free_port
from models.clip import DEMO_MODEL, register_bundled_configs

pytestmark = pytest.mark.e2e


def png(scene: Scene, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    render(scene, size).save(buffer, format="PNG")
    return buffer.getvalue()


def one_object(shape: str, colour: str, seed: int) -> Scene:
    return Scene((SceneObject(shape, colour, "large", "centre"),), (128, 128, 128), False, seed)


def add(client, files: dict[str, bytes], metadata: dict[str, dict] | None = None):
    response = client.post(
        "/v1/images",
        files=[("files", (f"{name}.png", data, "image/png")) for name, data in files.items()],
        data={"ids": list(files), "metadata": [json.dumps((metadata or {}).get(n, {})) for n in files]},
    )
    assert response.status_code == 201, response.text
    return response


def test_add_search_delete_and_everything_is_still_there_after_a_restart(tmp_path):
    scenes = scene_set(11, 6)
    with ServerProcess(tmp_path / "data", "--model", "demo") as server, server.client() as client:
        add(client, {f"s{i}": png(s) for i, s in enumerate(scenes)}, {f"s{i}": {"i": i} for i in range(6)})
        assert client.delete("/v1/images/s5").status_code == 204
        before = client.post("/v1/search/text", json={"query": scenes[0].caption(), "k": 10}).json()["results"]
        assert len(before) == 5 and "s5" not in {r["id"] for r in before}

        server.restart()
        again = client.post("/v1/search/text", json={"query": scenes[0].caption(), "k": 10}).json()["results"]
        assert [(r["id"], r["metadata"]) for r in again] == [(r["id"], r["metadata"]) for r in before]
        assert [r["score"] for r in again] == pytest.approx([r["score"] for r in before], abs=1e-6)
        assert client.get("/v1/images/s5").status_code == 404
        assert client.get("/v1/stats").json()["count"] == 5


def test_an_add_acknowledged_just_before_kill_9_is_there_after_restart(tmp_path):
    server = ServerProcess(tmp_path / "data", "--model", "demo").start()
    try:
        with server.client() as client:
            add(client, {"kept": png(scene_set(3, 1)[0])}, {"kept": {"note": "acknowledged"}})
            server.kill()
            server.start()
            assert client.get("/v1/images/kept").json()["metadata"] == {"note": "acknowledged"}
            assert client.get("/v1/images/kept/similar").status_code == 200
    finally:
        server.stop()


def no_network(cache: Path) -> dict[str, str]:
    """A host without network, as a newcomer's may be: HF_HUB_OFFLINE unset, the hub at a port where
    nothing listens, an empty weights cache."""
    return {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HUB_CACHE": str(cache)}


@pytest.fixture(scope="module")
def fallback_server(tmp_path_factory) -> Iterator[ServerProcess]:
    """One server for the tests that need no fresh one: started without --model, so the default
    weights cannot be fetched and it serves the demo model (which the fallback test checks)."""
    folder = tmp_path_factory.mktemp("fallback")
    with ServerProcess(folder / "data", env=no_network(folder / "hub-cache")) as server:
        yield server


def test_the_demo_model_finds_the_red_circle_by_text(fallback_server):
    shapes = {
        "red-circle": one_object("circle", "red", 1),
        "blue-circle": one_object("circle", "blue", 2),
        "red-square": one_object("square", "red", 3),
        "green-triangle": one_object("triangle", "green", 4),
        "yellow-star": one_object("star", "yellow", 5),
        "red-star": one_object("star", "red", 6),
    }
    with fallback_server.client() as client:
        add(client, {name: png(scene) for name, scene in shapes.items()})
        results = client.post("/v1/search/text", json={"query": "a red circle", "k": 3}).json()["results"]
        assert results[0]["id"] == "red-circle"
        # The same picture at twice the size: a near-duplicate search.
        by_image = client.post(
            "/v1/search/image", files={"file": ("q.png", png(shapes["red-circle"], size=128))}
        ).json()["results"]
        assert by_image[0]["id"] == "red-circle"
        labels = client.post(
            "/v1/classify",
            files={"file": ("q.png", png(one_object("triangle", "green", 7)))},
            data={"labels": ["circle", "square", "triangle", "star"], "template": "a green {}"},
        ).json()["labels"]
        assert labels[0]["label"] == "triangle"


def test_default_weights_that_cannot_be_fetched_fall_back_to_the_demo_model(fallback_server):
    with fallback_server.client() as client:
        model = client.get("/ready").json()["model"]
        assert model["name"] == "demo"
        assert "laion2b_s34b_b79k" in model["fallback_reason"]
        assert client.get("/v1/stats").json()["model"] == model
    log = fallback_server.log()
    fallback_lines = [line for line in log.splitlines() if "serving the bundled demo model instead" in line]
    assert len(fallback_lines) == 1
    # A host without network, as a newcomer's: one warning, not a minute of the hub's retries.
    start_up = log.split("Application startup complete")[0]
    assert [line for line in start_up.splitlines() if " WARNING " in line or " ERROR " in line] == fallback_lines
    assert "Retrying" not in log
    assert "cannot be reached" in fallback_lines[0] and "trained on generated coloured shapes" in fallback_lines[0]


def test_with_the_fallback_off_start_up_fails_with_a_clear_message(tmp_path):
    env = {**no_network(tmp_path / "hub-cache"), "CLIPSEARCH_MODEL__FALLBACK_TO_DEMO": "false"}
    server = ServerProcess(tmp_path / "data", env=env)
    with pytest.raises(RuntimeError, match="server exited"):
        server.start()
    assert "cannot load ViT-B-32 with weights laion2b_s34b_b79k" in server.log()


def test_a_checkpoint_path_serves_the_same_embeddings_as_open_clips_reference(tmp_path):
    register_bundled_configs()
    torch.manual_seed(7)
    reference = open_clip.create_model(DEMO_MODEL)
    checkpoint = tmp_path / "my-clip.pt"
    torch.save(reference.state_dict(), checkpoint)
    model, _, preprocess = open_clip.create_model_and_transforms(DEMO_MODEL, pretrained=str(checkpoint))
    model.eval()
    scenes = scene_set(21, 3)
    texts = [s.caption() for s in scenes]
    with torch.no_grad():
        ref_images = F.normalize(model.encode_image(torch.stack([preprocess(render(s)) for s in scenes])), dim=-1)
        ref_texts = F.normalize(model.encode_text(open_clip.get_tokenizer(DEMO_MODEL)(texts)), dim=-1)

    args = ("--model", "demo", "--pretrained", str(checkpoint), "--precision", "fp32")
    with ServerProcess(tmp_path / "data", *args) as server, server.client() as client:
        assert client.get("/ready").json()["model"]["pretrained"] == str(checkpoint)
        served_texts = client.post("/v1/embed/text", json={"texts": texts}).json()["embeddings"]
        served_images = client.post(
            "/v1/embed/image", files=[("files", (f"{i}.png", png(s))) for i, s in enumerate(scenes)]
        ).json()["embeddings"]
    np.testing.assert_allclose(np.array(served_texts), ref_texts.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.array(served_images), ref_images.numpy(), atol=1e-5)


def test_sigterm_lets_requests_in_flight_finish_and_loses_nothing_acknowledged(tmp_path):
    server = ServerProcess(tmp_path / "data", "--model", "demo").start()
    statuses: list[int] = []
    acknowledged: list[str] = []
    image = png(scene_set(4, 1)[0])

    def writer(w: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(1000):
                item = f"w{w}-{i}"
                try:
                    response = client.post("/v1/images", files=[("files", ("x.png", image))], data={"ids": [item]})
                except httpx.HTTPError:
                    return  # the server stopped taking connections
                statuses.append(response.status_code)
                if response.status_code == 201:
                    acknowledged.append(item)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped.
    assert server.stop() == -signal.SIGTERM
    assert "Application shutdown complete" in server.log()
    for t in threads:
        t.join(30)
    assert acknowledged
    assert set(statuses) <= {201, 503}  # answered, or refused cleanly while shutting down
    with server, server.client() as client:
        assert client.get("/v1/stats").json()["count"] == len(acknowledged)
        for item in acknowledged[-20:]:
            assert client.get(f"/v1/images/{item}").status_code == 200


def test_the_official_openai_client_gets_clip_text_embeddings(fallback_server):
    with fallback_server.client() as client:
        oai = openai.OpenAI(base_url=f"{fallback_server.url}/v1", api_key="unused")
        result = oai.embeddings.create(model="demo", input=["a red circle", "a blue square"])
        ours = client.post("/v1/embed/text", json={"texts": ["a red circle", "a blue square"]}).json()["embeddings"]
    assert [d.index for d in result.data] == [0, 1]
    assert result.model == "demo" and result.usage.prompt_tokens > 0
    np.testing.assert_allclose([d.embedding for d in result.data], ours, atol=1e-6)


def test_under_the_demo_fallback_the_readmes_openai_example_works_and_the_configured_name_is_refused(fallback_server):
    oai = openai.OpenAI(base_url=f"{fallback_server.url}/v1", api_key="unused")
    assert [m.id for m in oai.models.list()] == ["demo", "clipsearch"]
    assert len(oai.embeddings.create(model="clipsearch", input=["a cat on a sofa"]).data[0].embedding) == 64
    with pytest.raises(openai.NotFoundError, match="model 'ViT-B-32' is not served here; use 'demo'"):
        oai.embeddings.create(model="ViT-B-32", input=["a cat on a sofa"])


SECRET = "a-secret-key-0123456789"


def test_json_logs_carry_the_request_id_and_never_an_api_key(tmp_path):
    env = {
        "CLIPSEARCH_LOG_FORMAT": "json",
        "CLIPSEARCH_LOG_LEVEL": "debug",  # the most the server ever logs
        "CLIPSEARCH_AUTH__API_KEYS": json.dumps([SECRET]),
    }
    server = ServerProcess(tmp_path / "data", "--model", "demo", env=env)
    with server, server.client() as client:
        response = client.get("/v1/stats", headers={"X-Request-ID": "trace-42"})
        assert response.headers["X-Request-ID"] == "trace-42"
        added = client.post(
            "/v1/images",
            files=[("files", ("r.png", png(one_object("circle", "red", 1))))],
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        assert added.status_code == 201
        wrong = client.delete("/v1/images/x", headers={"Authorization": "Bearer wrong-key-9876543210xyz"})
        assert wrong.status_code == 403
    log = server.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == "trace-42" and "/v1/stats" in line["message"] for line in lines)
    assert any("POST /v1/images" in line["message"] for line in lines)  # the requests were logged...
    assert SECRET not in log and "wrong-key-9876543210xyz" not in log  # ...and no key with them
