"""`clipsearch index` over a folder tree, to a running server and into a data directory."""

from __future__ import annotations

import re
import shutil

import pytest
from typer.testing import CliRunner

from client import Client
from index.store import SqliteFaissStore
from service.cli import cli
from tests.e2e.test_server import one_object, png
from tests.server import ServerProcess

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
    store.close()


def test_index_needs_exactly_one_destination(photos):
    result = runner.invoke(cli, ["index", str(photos)])
    assert result.exit_code == 2
