"""The Python client and `clipsearch search` against a real server."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from typer.testing import CliRunner

from client import AsyncClient, Client, ClipsearchError
from clipsearch.cli import cli
from harness.server import ServerProcess
from tests.e2e.test_server import one_object, png

# Only the tests that start a server are marked e2e.


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("client") / "data", "--model", "demo") as running:
        yield running


@pytest.mark.e2e
def test_the_client_adds_searches_classifies_and_deletes(server, tmp_path):
    circle = tmp_path / "red-circle.png"
    circle.write_bytes(png(one_object("circle", "red", 1)))
    with Client(server.url) as client:
        added = client.add_images(
            [circle, ("blue.png", png(one_object("square", "blue", 2))), png(one_object("star", "yellow", 3))],
            ids=["red-circle", "blue-square", "yellow-star"],
            metadata=[{"colour": "red"}, {"colour": "blue"}, {"colour": "yellow"}],
        )
        assert [item.id for item in added] == ["red-circle", "blue-square", "yellow-star"]
        assert client.search_text("a red circle", k=3)[0].id == "red-circle"
        assert [h.id for h in client.search_text("a red circle", filter={"colour": "blue"})] == ["blue-square"]
        assert client.search_image(circle, k=1)[0].id == "red-circle"
        assert {h.id for h in client.similar("red-circle")} == {"blue-square", "yellow-star"}
        assert client.get("yellow-star").metadata == {"colour": "yellow"}
        labels = client.classify(
            png(one_object("star", "yellow", 4)), ["circle", "square", "star"], template="a yellow {}"
        )
        assert labels[0].label == "star"
        assert client.stats().count == 3
        client.delete("yellow-star")
        with pytest.raises(ClipsearchError) as caught:
            client.get("yellow-star")
        assert (caught.value.status, caught.value.code) == (404, "not_found")


@pytest.mark.e2e
def test_the_async_client_has_the_same_calls(server):
    async def scenario():
        async with AsyncClient(server.url) as client:
            before = (await client.stats()).count
            await client.add_images([png(one_object("triangle", "green", 5))], ids=["green-triangle-async"])
            hits = await client.search_text("a green triangle", k=1)
            after = (await client.stats()).count
            return hits, before, after

    hits, before, after = asyncio.run(scenario())
    assert hits[0].id == "green-triangle-async"
    assert after == before + 1  # the shared server may hold other tests' items; this one added exactly one


@pytest.mark.e2e
def test_the_clients_search_many_texts_in_one_request(server):
    with Client(server.url) as client:
        client.add_images(
            [png(one_object("circle", "red", 7)), png(one_object("square", "blue", 8))],
            ids=["batch-red", "batch-blue"],
            metadata=[{"set": "batch"}, {"set": "batch"}],
        )
        results = client.search_texts(["a red circle", "a blue square"], k=2, filter={"set": "batch"})

    async def scenario():
        async with AsyncClient(server.url) as client:
            return await client.search_texts(["a blue square"], k=1, filter={"set": "batch"})

    assert [[h.id for h in hits] for hits in results] == [["batch-red", "batch-blue"], ["batch-blue", "batch-red"]]
    assert [[h.id for h in hits] for hits in asyncio.run(scenario())] == [["batch-blue"]]


@pytest.mark.e2e
def test_clipsearch_search_prints_a_table_of_results_with_whole_ids(server):
    image = png(one_object("circle", "purple", 6))
    content_id = hashlib.sha256(image).hexdigest()[:32]  # as `clipsearch index` names it
    long_path = "/home/someone/Pictures/2024/summer/a-rather-long-folder-name/purple-circle.png"
    with Client(server.url) as client:
        client.add_images([image], ids=[content_id], metadata=[{"path": long_path}])
    result = CliRunner().invoke(
        cli, ["search", "a purple circle", "--k", "2", "--server", server.url], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "score" in result.output
    # The id on one line, whole, ready to copy; the long metadata is folded instead.
    assert any(f"│ {content_id} │" in line for line in result.output.splitlines()), result.output
    assert "…" not in result.output


def test_clipsearch_search_says_when_the_server_cannot_be_reached():
    result = CliRunner().invoke(cli, ["search", "anything", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output
