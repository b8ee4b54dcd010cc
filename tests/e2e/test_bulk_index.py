"""`clipsearch index` over a folder tree, to a running server and into a data directory."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from client import Client, ClipsearchError
from clipsearch.bulk import index_paths
from clipsearch.cli import cli
from harness.server import ServerProcess
from index.store import SqliteFaissStore
from service.app import create_app
from service.settings import ModelSettings, Settings, StoreSettings
from tests.e2e.test_server import one_object, png

# Only the tests that start a server are marked e2e.
runner = CliRunner()


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    (root / "2024" / "summer").mkdir(parents=True)
    (root / "a.png").write_bytes(png(one_object("circle", "red", 1)))
    (root / "2024" / "b.PNG").write_bytes(png(one_object("square", "blue", 2)))
    (root / "2024" / "summer" / "c.png").write_bytes(png(one_object("star", "yellow", 3)))
    shutil.copy(root / "a.png", root / "2024" / "summer" / "copy-of-a.png")  # same bytes: skipped
    (root / "2024" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    (root / "link-to-b.png").symlink_to(root / "2024" / "b.PNG")  # the same file once
    return root


def summary(output: str) -> tuple[int, int, int]:
    match = re.search(r"indexed (\d+), skipped (\d+) already indexed, failed (\d+)", output)
    assert match, output
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


@pytest.mark.e2e
def test_indexing_a_folder_through_the_server_skips_duplicates_and_resumes(photos, tmp_path):
    with ServerProcess(tmp_path / "data", "--model", "demo") as server:
        first = runner.invoke(cli, ["index", str(photos), "--server", server.url, "--batch-size", "2"])
        assert first.exit_code == 0, first.output
        assert summary(first.output) == (3, 1, 1)
        assert "broken.jpg: the file is not an image" in first.output
        again = runner.invoke(cli, ["index", str(photos), "--server", server.url])
        assert summary(again.output) == (0, 4, 1)  # a rerun resumes: nothing indexed twice
        with Client(server.url) as client:
            assert client.stats().count == 3
            hit = client.search_text("a yellow star", k=1)[0]
            assert hit.metadata["path"].endswith("summer/c.png")


def test_indexing_straight_into_a_data_directory(photos, tmp_path):
    result = runner.invoke(cli, ["index", str(photos), "--data-dir", str(tmp_path / "data"), "--model", "demo"])
    assert result.exit_code == 0, result.output
    assert summary(result.output) == (3, 1, 1)
    store = SqliteFaissStore(tmp_path / "data", 64, "demo")
    assert store.count() == 3
    # The first path met for each content wins: the link comes before the folder it points into.
    names = sorted(item.metadata["path"].rsplit("/", 1)[-1] for item in store.page(0, 10))
    assert names == ["a.png", "c.png", "link-to-b.png"]
    # Each is named by its content: the first 32 hex digits of the SHA-256 of its bytes (as the page names it).
    contents = [(photos / "a.png"), (photos / "2024" / "b.PNG"), (photos / "2024" / "summer" / "c.png")]
    expected = {hashlib.sha256(path.read_bytes()).hexdigest()[:32] for path in contents}
    assert {item.id for item in store.page(0, 10)} == expected
    store.close()


def test_index_needs_exactly_one_destination(photos):
    result = runner.invoke(cli, ["index", str(photos)])
    assert result.exit_code == 2


def test_an_item_indexed_locally_looks_the_same_through_the_api_as_one_uploaded(photos, tmp_path):
    """One way in: the local indexer stores what the HTTP route stores (0.1's stored no thumbnail)."""
    result = runner.invoke(cli, ["index", str(photos), "--data-dir", str(tmp_path / "local"), "--model", "demo"])
    assert result.exit_code == 0, result.output
    data = (photos / "a.png").read_bytes()
    settings = Settings(store=StoreSettings(data_dir=tmp_path / "local"), model=ModelSettings(name="demo"))
    with TestClient(create_app(settings)) as client:
        [local] = [i for i in client.get("/v1/images").json()["items"] if i["metadata"]["path"].endswith("/a.png")]
        uploaded = client.post("/v1/images", files=[("files", ("a.png", data))], data={"ids": "uploaded"})
        assert uploaded.status_code == 201
        local_thumbnail = client.get(f"/v1/images/{local['id']}/thumbnail")
        assert local_thumbnail.status_code == 200
        assert local_thumbnail.content == client.get("/v1/images/uploaded/thumbnail").content
        local_vector = client.get(f"/v1/images/{local['id']}/embedding").json()["embeddings"][0]
        uploaded_vector = client.get("/v1/images/uploaded/embedding").json()["embeddings"][0]
        assert local_vector == pytest.approx(uploaded_vector, abs=1e-6)
        ranked = client.post("/v1/search/text", json={"query": "a red circle", "k": 2}).json()["results"]
        assert {r["id"] for r in ranked} == {local["id"], "uploaded"}


class RefusingSink:
    """A server that answers every add with `status`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.adds = 0

    def known(self, ids):
        return set()

    def add(self, batch):
        self.adds += 1
        raise ClipsearchError(self.status, "unauthorized", "an API key is needed")


@pytest.mark.parametrize("status", [401, 403, 507])
def test_indexing_stops_at_the_first_answer_no_file_could_get_past(photos, status):
    sink = RefusingSink(status)
    with pytest.raises(ClipsearchError):
        index_paths([photos], sink, batch_size=2)
    assert sink.adds == 1  # not one refusal per file


def test_a_file_the_server_refuses_is_counted_and_the_rest_go_on(photos):
    sink = RefusingSink(400)
    summary = index_paths([photos], sink, batch_size=2)
    assert summary.indexed == 0 and len(summary.failed) == 5  # each refused on its own; the run went on
