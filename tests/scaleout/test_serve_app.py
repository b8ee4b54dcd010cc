"""`clipsearch serve --ray`'s Serve application on a local Ray, over HTTP, with the session's Milvus server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from demo.scenes import scene_set
from harness.milvus_server import MilvusServer, empty_collections
from harness.server import free_port
from index.options import StoreBackend
from models.clip import load_clip
from service.settings import ModelSettings, Settings, StoreSettings
from tests.e2e.test_milvus import add, png, text_search

COLLECTION = "ray_serve"


@pytest.fixture(scope="module", params=[StoreBackend.MILVUS, StoreBackend.SQLITE])
def served(request, local_ray, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The app with 2 replicas of each tower (a quarter CPU each) and 1 API replica; Serve shut down after.

    On Milvus (what `clipsearch serve --ray` takes) and on SQLite (one API replica may open it).
    """
    from ray import serve

    from scaleout.serve_app import Replicas, start

    data_dir = tmp_path_factory.mktemp("serve") / "data"
    store = StoreSettings(data_dir=data_dir)
    if request.param is StoreBackend.MILVUS:
        milvus: MilvusServer = request.getfixturevalue("milvus")
        empty_collections(milvus.uri, COLLECTION)
        store = StoreSettings(
            backend=StoreBackend.MILVUS, milvus_uri=milvus.uri, milvus_collection=COLLECTION, data_dir=data_dir
        )
    settings = Settings(port=free_port(), model=ModelSettings(name="demo"), store=store)
    start(settings, Replicas(towers=2, api=1, cpus_per_tower=0.25))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=60) as client:
            yield client
    finally:
        serve.shutdown()


def test_the_serve_app_adds_searches_filters_and_deletes_over_http(served):
    assert served.get("/health").status_code == 200
    ready = served.get("/ready").json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "demo"
    scenes = scene_set(11, 6)
    for i in range(6):
        response = add(served, f"s{i}", 11 + i, {"i": i, "album": "odd" if i % 2 else "even"})
        assert response.status_code == 201, response.text
    # The same ranking and scores as the towers give in this process.
    towers = load_clip("demo", None, "auto", fallback_to_demo=False)
    images = towers.image.encode([towers.image.prepare(png(11 + i), max_pixels=10**6) for i in range(6)])
    for i in (0, 3):
        query = scenes[i].caption()
        scores = images @ towers.text.encode([query])[0]
        hits = text_search(served, query)
        assert [h["id"] for h in hits] == [f"s{j}" for j in np.argsort(-scores)]
        assert [h["score"] for h in hits] == pytest.approx(sorted(scores, reverse=True), abs=1e-3)
    by_image = served.post("/v1/search/image", files={"file": ("q.png", png(13), "image/png")}, data={"k": "3"})
    assert by_image.status_code == 200, by_image.text
    assert by_image.json()["results"][0]["id"] == "s2"
    odd = text_search(served, scenes[0].caption(), filter={"album": "odd"})
    assert sorted(r["id"] for r in odd) == ["s1", "s3", "s5"]
    assert served.delete("/v1/images/s5").status_code == 204
    after = text_search(served, scenes[0].caption())
    assert len(after) == 5 and "s5" not in {r["id"] for r in after}
    assert served.get("/v1/images/s5").status_code == 404
    assert served.get("/v1/images/s0/thumbnail").headers["content-type"] == "image/jpeg"


def test_the_serve_app_answers_errors_in_the_service_shape(served):
    empty = served.post("/v1/search/text", json={"query": "", "k": 3})
    assert empty.status_code == 422
    assert set(empty.json()["error"]) >= {"code", "message"}
    broken = served.post(
        "/v1/images", files=[("files", ("bad.png", b"not an image", "image/png"))], data={"ids": ["bad"]}
    )
    assert broken.status_code in (400, 415, 422), broken.text
    assert "bad.png" in broken.json()["error"]["message"]


def tower_replicas(name: str) -> list[str]:
    import ray

    return [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(f"SERVE_REPLICA::clipsearch#{name}#")
    ]


def test_an_image_tower_replica_killed_mid_load_is_replaced_and_no_acknowledged_write_is_lost(served):
    import ray
    from ray import serve

    before = tower_replicas("ImageTower")
    assert len(before) == 2
    answers: dict[str, int] = {}

    def load(writer: int) -> None:
        with httpx.Client(base_url=served.base_url, timeout=60) as client:
            for i in range(8):
                item_id = f"k{writer}-{i}"
                answers[item_id] = add(client, item_id, 100 + 8 * writer + i, {"load": True}).status_code

    # Three writers at once, so that calls are in flight on the replica when it is killed.
    writers = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    for writer in writers:
        writer.start()
    while len(answers) < 4:
        time.sleep(0.02)
    ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
    for writer in writers:
        writer.join(timeout=300)
        assert not writer.is_alive()
    acknowledged = [item_id for item_id, status in answers.items() if status == 201]
    # The call on the dead replica is sent again to the live one: every write is acknowledged.
    assert len(acknowledged) == 24, answers
    for item_id in acknowledged:
        assert served.get(f"/v1/images/{item_id}").status_code == 200
    deadline = time.monotonic() + 120
    while True:
        states = serve.status().applications["clipsearch"].deployments["ImageTower"].replica_states
        now = tower_replicas("ImageTower")
        running = sum(count for state, count in states.items() if state == "RUNNING")
        if running == 2 and before[0] not in now and len(now) == 2:
            break
        assert time.monotonic() < deadline, (states, now)
        time.sleep(0.5)


def test_serve_on_ray_needs_the_milvus_store(tmp_path):
    from typer.testing import CliRunner

    from clipsearch.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--ray", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert "--ray needs --store milvus" in result.output


class FlakyTower:
    """A stand-in deployment handle whose first call loses its replica, as a killed one does."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.encode = self

    def remote(self, items):
        from ray.exceptions import ActorDiedError

        self.calls.append(items)
        first = len(self.calls) == 1

        class Response:
            def result(self):
                if first:
                    raise ActorDiedError()
                return np.eye(len(items), 3, dtype=np.float32)

        return Response()


def test_a_call_whose_tower_replica_died_is_sent_again_once_and_answers():
    from scaleout.serve_app import _gather

    tower = FlakyTower()
    rows = _gather(tower, ["a", "b"])  # type: ignore[arg-type]  # a stand-in for the handle
    assert tower.calls == [["a", "b"], ["a", "b"]]
    assert rows.shape == (2, 3)
