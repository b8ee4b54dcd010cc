"""`clipsearch embed` on a local Ray against the single-process `clipsearch index`."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from clipsearch.cli import cli
from index.store import SqliteFaissStore
from models.clip import load_clip
from tests.e2e.test_server import one_object, png

runner = CliRunner()

SCENES = [
    ("circle", "red"),
    ("square", "blue"),
    ("star", "yellow"),
    ("triangle", "green"),
    ("circle", "blue"),
    ("square", "yellow"),
    ("star", "red"),
    ("triangle", "blue"),
    ("circle", "green"),
    ("square", "red"),
]


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    for i, (shape, colour) in enumerate(SCENES):
        folder = [root, root / "a", root / "a" / "b"][i % 3]
        (folder / f"{colour}-{shape}.png").write_bytes(png(one_object(shape, colour, i)))
    shutil.copy(root / "red-circle.png", root / "a" / "copy-of-red-circle.png")  # same bytes: one item
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def embed_summary(output: str) -> tuple[int, int, int]:
    match = re.search(r"embedded (\d+), skipped (\d+) already done, failed (\d+)", output)
    assert match, output
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def shard_rows(out):
    ids, paths, vectors = [], [], []
    for shard in sorted(out.glob("shard-*")):
        ids += (shard / "ids.txt").read_text().split()
        paths += [json.loads(line)["path"] for line in (shard / "metadata.jsonl").read_text().splitlines()]
        vectors.append(np.load(shard / "vectors.npy"))
        assert (shard / "model.txt").read_text().strip() == "demo"
    return ids, paths, np.concatenate(vectors)


def test_embedding_on_ray_gives_the_single_process_ids_and_vectors(local_ray, photos, tmp_path):
    out = tmp_path / "shards"
    result = runner.invoke(
        cli, ["embed", str(photos), "--out", str(out), "--model", "demo", "--batch-size", "4", "--shard-size", "4"]
    )
    assert result.exit_code == 0, result.output
    assert embed_summary(result.output) == (10, 1, 1)  # the copy is skipped, the broken file listed
    assert re.search(r"[\d.]+ images/s on 1 actor", result.output)
    assert re.search(r"failed: \S+/a/broken\.jpg: the file is not an image", result.output)
    ids, paths, vectors = shard_rows(out)
    assert len(list(out.glob("shard-*"))) == 3  # 10 vectors, 4 a shard
    assert len(ids) == len(set(ids)) == 10

    single = runner.invoke(cli, ["index", str(photos), "--data-dir", str(tmp_path / "data"), "--model", "demo"])
    assert single.exit_code == 0, single.output
    store = SqliteFaissStore(tmp_path / "data", 64, "demo")
    try:
        assert {item.id for item in store.page(0, 100)} == set(ids)
        for item_id, path, vector in zip(ids, paths, vectors, strict=True):
            assert item_id == hashlib.sha256((photos.parent / path).read_bytes()).hexdigest()[:32]
            assert float(vector @ store.vector(item_id)) >= 0.9999
    finally:
        store.close()


def test_a_rerun_skips_what_the_shards_hold_and_embeds_only_new_files(local_ray, photos, tmp_path):
    out = tmp_path / "shards"
    args = ["embed", str(photos), "--out", str(out), "--model", "demo", "--batch-size", "4"]
    assert runner.invoke(cli, args).exit_code == 0
    (photos / "new-star.png").write_bytes(png(one_object("star", "green", 99)))
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert embed_summary(again.output) == (1, 11, 1)
    ids, paths, _ = shard_rows(out)
    assert len(ids) == len(set(ids)) == 11
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000", "shard-00001"]
    assert paths[-1].endswith("new-star.png")


def test_a_list_of_paths_in_csv_is_read_and_a_missing_file_is_listed(local_ray, photos, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path\nphotos/red-circle.png\nphotos/missing.png\n" + f"{photos / 'a' / 'broken.jpg'}\n")
    result = runner.invoke(cli, ["embed", str(listing), "--out", str(tmp_path / "shards"), "--model", "demo"])
    assert result.exit_code == 0, result.output
    assert embed_summary(result.output) == (1, 0, 2)
    assert re.search(r"failed: photos/missing\.png: cannot read: No such file", result.output)


def test_the_shards_load_with_import_and_a_text_search_finds_the_right_image(local_ray, photos, tmp_path):
    out = tmp_path / "shards"
    result = runner.invoke(cli, ["embed", str(photos), "--out", str(out), "--model", "demo", "--shard-size", "3"])
    assert result.exit_code == 0, result.output
    loaded = runner.invoke(cli, ["import", str(out), "--data-dir", str(tmp_path / "data")])
    assert loaded.exit_code == 0, loaded.output
    towers = load_clip("demo", None, "cpu", fallback_to_demo=False)
    store = SqliteFaissStore(tmp_path / "data", 64, "demo")
    try:
        assert store.count() == 10
        for shape, colour in [("star", "yellow"), ("triangle", "blue"), ("square", "red")]:
            query = towers.text.encode([f"a {colour} {shape}"])[0]
            best = store.search(query, 1)[0]
            assert best.metadata["path"].endswith(f"{colour}-{shape}.png"), (shape, colour, best.metadata)
    finally:
        store.close()


def test_embed_refuses_the_sqlite_store_and_needs_one_destination(photos):
    both = runner.invoke(cli, ["embed", str(photos)])
    assert both.exit_code == 2
    assert "exactly one of --out and --store" in both.output
    sqlite = runner.invoke(cli, ["embed", str(photos), "--store", "sqlite"])
    assert sqlite.exit_code == 2
    assert "embed with --out DIR, then clipsearch import DIR" in re.sub(r"[\s│╭╮╰╯─]+", " ", sqlite.output)


def test_embedding_into_milvus_upserts_from_the_actors_and_a_rerun_skips(
    local_ray, photos, tmp_path, milvus, monkeypatch
):
    from harness.milvus_server import empty_collections
    from index.milvus import MilvusStore

    monkeypatch.setenv("CLIPSEARCH_STORE__MILVUS_URI", milvus.uri)
    monkeypatch.setenv("CLIPSEARCH_STORE__MILVUS_COLLECTION", "ray_embed")
    monkeypatch.setenv("CLIPSEARCH_STORE__DATA_DIR", str(tmp_path / "data"))
    empty_collections(milvus.uri, "ray_embed")
    args = ["embed", str(photos), "--store", "milvus", "--model", "demo", "--batch-size", "4"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert embed_summary(first.output) == (10, 1, 1)
    again = runner.invoke(cli, args)
    assert embed_summary(again.output) == (0, 11, 1)
    store = MilvusStore(milvus.uri, 64, "demo", files_dir=tmp_path / "data" / "files", collection="ray_embed")
    towers = load_clip("demo", None, "cpu", fallback_to_demo=False)
    try:
        assert store.count() == 10
        red_circle = hashlib.sha256((photos / "red-circle.png").read_bytes()).hexdigest()[:32]
        assert store.known_ids([red_circle]) == {red_circle}
        best = store.search(towers.text.encode(["a yellow star"])[0], 1)[0]
        assert best.metadata["path"].endswith("yellow-star.png")
    finally:
        store.close()
