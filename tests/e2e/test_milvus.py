"""`clipsearch serve --store milvus` as processes against a real Milvus server, over HTTP."""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import pytest

from demo.scenes import render, scene_set
from harness.milvus_server import MilvusServer, empty_collections
from harness.server import ServerProcess, free_port

pytestmark = pytest.mark.e2e


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    render(scene_set(seed, 1)[0], 64).save(buffer, format="PNG")
    return buffer.getvalue()


# One collection for these tests, emptied by each: Milvus takes seconds to create one.
COLLECTION = "e2e"


def milvus_server(data_dir, milvus: MilvusServer, *args: str, empty: bool = True) -> ServerProcess:
    """An API process on the demo model whose store is the e2e collection in `milvus` (emptied first)."""
    if empty:
        empty_collections(milvus.uri, COLLECTION)
    env = {"CLIPSEARCH_STORE__MILVUS_URI": milvus.uri, "CLIPSEARCH_STORE__MILVUS_COLLECTION": COLLECTION}
    return ServerProcess(data_dir, "--model", "demo", "--store", "milvus", *args, env=env)


def add(client: httpx.Client, item_id: str, seed: int, metadata: dict) -> httpx.Response:
    return client.post(
        "/v1/images",
        files=[("files", (f"{item_id}.png", png(seed), "image/png"))],
        data={"ids": [item_id], "metadata": [json.dumps(metadata)]},
    )


def text_search(client: httpx.Client, query: str, **options) -> list[dict]:
    response = client.post("/v1/search/text", json={"query": query, "k": 10, **options})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_add_search_filter_delete_and_everything_is_still_there_after_an_api_restart(tmp_path, milvus):
    captions = [s.caption() for s in scene_set(11, 6)]
    with milvus_server(tmp_path / "data", milvus) as server, server.client() as client:
        for i in range(6):
            assert add(client, f"s{i}", 11 + i, {"i": i, "album": "odd" if i % 2 else "even"}).status_code == 201
        assert client.delete("/v1/images/s5").status_code == 204
        before = text_search(client, captions[0])
        assert len(before) == 5 and "s5" not in {r["id"] for r in before}
        odd = text_search(client, captions[0], filter={"album": "odd"})
        assert sorted(r["id"] for r in odd) == ["s1", "s3"]
        assert client.get("/v1/images/s0/thumbnail").headers["content-type"] == "image/jpeg"
        similar = client.get("/v1/images/s0/similar").json()["results"]
        assert "s0" not in {r["id"] for r in similar} and len(similar) == 4

        server.restart()
        again = text_search(client, captions[0])
        assert [(r["id"], r["metadata"]) for r in again] == [(r["id"], r["metadata"]) for r in before]
        assert [r["score"] for r in again] == pytest.approx([r["score"] for r in before], abs=1e-6)
        assert client.get("/v1/images/s5").status_code == 404
        assert client.get("/v1/images/s0/thumbnail").status_code == 200
        stats = client.get("/v1/stats").json()
        assert (stats["count"], stats["index"]["type"]) == (5, "flat")


def test_milvus_lost_mid_write_answers_503_recovers_and_keeps_every_acknowledged_write(tmp_path, milvus):
    acknowledged: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()
    with milvus_server(tmp_path / "data", milvus) as server:

        def write() -> None:
            with server.client() as client:
                n = 0
                while not stop.is_set():
                    try:
                        response = add(client, f"w{n}", n, {"n": n})
                    except httpx.TransportError:
                        continue
                    statuses.append(response.status_code)
                    if response.status_code == 201:
                        acknowledged.append(f"w{n}")
                    n += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            while len(acknowledged) < 20:
                time.sleep(0.05)
            milvus.kill()  # mid-write: SIGKILL to Milvus, the writer keeps going
            with server.client() as client:
                deadline = time.monotonic() + 60
                while 503 not in statuses and time.monotonic() < deadline:
                    time.sleep(0.2)
                down = client.post("/v1/search/text", json={"query": "a red circle", "k": 3})
                assert down.status_code == 503
                assert down.json()["error"]["code"] == "store_unavailable"
                assert milvus.uri in down.json()["error"]["message"]
                assert client.get("/health").status_code == 200  # the API itself keeps running
                milvus.start()
                deadline = time.monotonic() + 120
                while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
                    time.sleep(0.5)
                stop.set()
                writer.join(60)
                assert client.get("/ready").status_code == 200
                missing = [i for i in acknowledged if client.get(f"/v1/images/{i}").status_code != 200]
                assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged writes lost"
                assert set(statuses) <= {201, 503}, statuses  # never a 500
                assert 503 in statuses
        finally:
            stop.set()
            writer.join(60)
            if milvus.process is None or milvus.process.poll() is not None:
                milvus.start()  # the session's other tests need it


def test_two_api_processes_on_one_milvus_see_each_others_writes_at_once(tmp_path, milvus):
    data = tmp_path / "data"  # shared: thumbnails and originals live there
    with (
        milvus_server(data, milvus, "--workers", "2") as workers,
        milvus_server(data, milvus, empty=False) as single,
        workers.client() as a,
        single.client() as b,
    ):
        for i in range(6):
            writer, reader = (a, b) if i % 2 else (b, a)
            assert add(writer, f"x{i}", 30 + i, {"i": i}).status_code == 201
            hits = text_search(reader, "anything", filter={"i": i})
            assert [h["id"] for h in hits] == [f"x{i}"]
            assert reader.get(f"/v1/images/x{i}/thumbnail").status_code == 200
        assert a.delete("/v1/images/x0").status_code == 204
        assert b.get("/v1/images/x0").status_code == 404
        assert b.get("/v1/stats").json()["count"] == 5


def test_milvus_unreachable_at_start_is_a_start_up_error_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {"CLIPSEARCH_STORE__MILVUS_URI": uri, "CLIPSEARCH_STORE__MILVUS_TIMEOUT_S": "2"}
    server = ServerProcess(tmp_path / "data", "--model", "demo", "--store", "milvus", env=env)
    with pytest.raises(RuntimeError, match="server exited") as failed:
        server.start()
    assert f"cannot start: Milvus at {uri} did not answer" in str(failed.value)
