from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from clipsearch.cli import cli, results_table
from harness.server import ROOT
from index.errors import ItemNotFoundError
from index.store import SqliteFaissStore
from index.types import NewItem, VectorField
from service.schemas import SearchHit

runner = CliRunner()


def message(output: str) -> str:
    """The output without rich's box drawing and line wrapping."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", output)


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_import_vectors_loads_ids_metadata_and_normalised_vectors(tmp_path):
    vectors = unit_rows(50, 64) * 3.0  # not unit length: the import normalises
    np.save(tmp_path / "x.npy", vectors)
    (tmp_path / "ids.txt").write_text("\n".join(f"img{i}" for i in range(50)))
    (tmp_path / "meta.jsonl").write_text("\n".join(json.dumps({"row": i}) for i in range(50)))
    result = runner.invoke(
        cli,
        [
            "import-vectors",
            "--vectors",
            str(tmp_path / "x.npy"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--metadata",
            str(tmp_path / "meta.jsonl"),
            "--data-dir",
            str(tmp_path / "data"),
            "--model",
            "demo",
            "--chunk",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "imported 50 vectors" in result.output
    store = SqliteFaissStore(tmp_path / "data", 64, "demo")
    hit = store.search(vectors[17], 1)[0]
    assert (hit.id, hit.metadata) == ("img17", {"row": 17})
    assert hit.score == pytest.approx(1.0, abs=1e-5)
    store.close()


def test_import_vectors_refuses_vectors_of_the_wrong_dimension(tmp_path):
    np.save(tmp_path / "x.npy", unit_rows(5, 32))
    result = runner.invoke(
        cli, ["import-vectors", "--vectors", str(tmp_path / "x.npy"), "--data-dir", str(tmp_path), "--model", "demo"]
    )
    assert result.exit_code == 2
    assert "the vectors have 32 dimensions; demo makes 64" in message(result.output)


def test_import_vectors_refuses_an_ids_file_of_another_length(tmp_path):
    np.save(tmp_path / "x.npy", unit_rows(5, 64))
    (tmp_path / "ids.txt").write_text("a\nb\n")
    result = runner.invoke(
        cli,
        [
            "import-vectors",
            "--vectors",
            str(tmp_path / "x.npy"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--data-dir",
            str(tmp_path / "data"),
            "--model",
            "demo",
        ],
    )
    assert result.exit_code == 2
    assert "has 2 lines but there are 5 vectors" in message(result.output)


@pytest.mark.parametrize(
    ("line", "said"),
    [('{"x": NaN}', "NaN is not a JSON value"), ('{"a.b": 1}', "metadata: key 'a.b' is not allowed")],
)
def test_import_vectors_refuses_metadata_the_store_could_not_read_back_and_writes_nothing(tmp_path, line, said):
    np.save(tmp_path / "x.npy", unit_rows(3, 64))
    (tmp_path / "meta.jsonl").write_text("\n".join(['{"ok": 1}', line, '{"ok": 3}']))
    args = ["--vectors", str(tmp_path / "x.npy"), "--metadata", str(tmp_path / "meta.jsonl")]
    result = runner.invoke(cli, ["import-vectors", *args, "--data-dir", str(tmp_path / "data"), "--model", "demo"])
    assert result.exit_code == 2
    assert f"line 2: {said}" in message(result.output)
    assert not (tmp_path / "data").exists()


def test_export_then_import_moves_a_collection_between_data_directories(tmp_path):
    vectors = unit_rows(30, 64, seed=3)
    source = SqliteFaissStore(tmp_path / "a", 64, "demo")
    source.upsert([NewItem(v, f"item{i}", {"i": i, "tags": ["x"]}) for i, v in enumerate(vectors)])
    source.delete("item7")
    # The source stays open, as under a running server: export reads a snapshot beside it.
    exported = runner.invoke(cli, ["export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "a")])
    source.close()
    assert exported.exit_code == 0, exported.output
    assert "exported 29 items (64-d, demo)" in exported.output
    imported = runner.invoke(cli, ["import", str(tmp_path / "out"), "--data-dir", str(tmp_path / "b")])
    assert imported.exit_code == 0, imported.output
    target = SqliteFaissStore(tmp_path / "b", 64, "demo")
    assert target.count() == 29
    assert target.get("item12").metadata == {"i": 12, "tags": ["x"]}
    np.testing.assert_allclose(target.vector("item12"), vectors[12], atol=1e-6)
    assert target.search(vectors[12], 1)[0].id == "item12"
    with pytest.raises(ItemNotFoundError):
        target.get("item7")
    target.close()


def test_export_then_import_keeps_caption_vectors_searchable(tmp_path):
    vectors = unit_rows(4, 64, seed=5)
    captions = unit_rows(4, 64, seed=6)
    source = SqliteFaissStore(tmp_path / "a", 64, "demo")
    source.upsert([NewItem(vectors[0], "captioned", {"caption": "x"}, caption_vector=captions[0])])
    source.upsert([NewItem(vectors[1], "plain")])
    source.close()
    assert runner.invoke(cli, ["export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "a")]).exit_code == 0
    imported = runner.invoke(cli, ["import", str(tmp_path / "out"), "--data-dir", str(tmp_path / "b")])
    assert imported.exit_code == 0, imported.output
    target = SqliteFaissStore(tmp_path / "b", 64, "demo")
    try:
        hits = target.search(captions[0], 5, fields=[VectorField.CAPTION])
        assert [(h.id, round(h.score, 5)) for h in hits] == [("captioned", 1.0)]
    finally:
        target.close()


def test_export_of_a_directory_without_a_store_is_refused(tmp_path):
    result = runner.invoke(cli, ["export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "no readable store" in message(result.output)


def test_a_non_json_list_in_the_environment_gets_one_clear_message_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPSEARCH_AUTH__API_KEYS", "not-a-json-list")
    result = runner.invoke(cli, ["serve", "--model", "demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    said = message(result.output)
    assert 'error parsing value for field "auth"' in said
    assert "Lists and objects in CLIPSEARCH_ variables are JSON" in said
    assert "Traceback" not in result.output


@pytest.mark.parametrize("width", [80, 64])
def test_the_search_table_prints_whole_ids_however_narrow_the_terminal(width):
    long_id = "0123456789abcdef" * 2
    hits = [
        SearchHit(id=long_id, score=0.3123, metadata={"path": "/home/someone/Pictures/2024/summer/holiday/photo.jpg"}),
        SearchHit(id="short", score=0.2, metadata={}),
    ]
    console = Console(width=width, record=True)
    console.print(results_table(hits, width))
    lines = console.export_text().splitlines()
    assert any(long_id in line for line in lines)
    assert any("│ short " in line for line in lines)
    assert all(len(line) <= width for line in lines)


def test_an_id_wider_than_the_terminal_is_folded_onto_the_next_lines_not_cut():
    long_id = "q" * 100  # a letter no header holds
    console = Console(width=60, record=True)
    console.print(results_table([SearchHit(id=long_id, score=0.5, metadata={"x": 1})], 60))
    text = console.export_text()
    assert "…" not in text
    assert "".join(re.findall(r"q+", text)) == long_id
    assert '{"x": 1}' in text and "0.5000" in text


HEAVY_MODULES = ("torch", "faiss", "open_clip", "transformers", "ray")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["embed", "--help"],
        ["search", "a red circle", "--server", "http://127.0.0.1:9"],
        ["index", "--server", "http://127.0.0.1:9", "PHOTOS"],
    ],
    ids=["help", "serve-help", "embed-help", "search", "index-to-a-server"],
)
def test_help_and_the_http_only_commands_never_import_the_model_or_index_libraries(args, tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    args = [str(tmp_path) if arg == "PHOTOS" else arg for arg in args]
    # A fresh interpreter: this test process has imported them all already.
    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from clipsearch.cli import cli\n"
        f"result = CliRunner().invoke(cli, {args!r})\n"
        f"print(json.dumps([result.exit_code, [m for m in {HEAVY_MODULES!r} if m in sys.modules]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    exit_code, loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == []
    assert exit_code == (0 if "--help" in args else 1)  # 1: the server cannot be reached, said in one line


def test_serve_with_several_workers_is_refused_on_sqlite_with_what_to_do(tmp_path):
    result = runner.invoke(cli, ["serve", "--workers", "2", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    said = message(result.output)
    assert "workers=2 needs the Milvus store" in said and "--store milvus" in said


def test_a_collection_moves_from_sqlite_to_milvus_and_back_with_its_captions(tmp_path, milvus, monkeypatch):
    from harness.milvus_server import empty_collections

    monkeypatch.setenv("CLIPSEARCH_STORE__MILVUS_URI", milvus.uri)
    monkeypatch.setenv("CLIPSEARCH_STORE__MILVUS_COLLECTION", "cli_move")
    empty_collections(milvus.uri, "cli_move")
    vectors, captions = unit_rows(30, 64, seed=3), unit_rows(30, 64, seed=4)
    source = SqliteFaissStore(tmp_path / "a", 64, "demo")
    source.upsert(
        [
            NewItem(v, f"item{i:02d}", {"i": i, "tags": ["x"]}, caption_vector=c if i % 2 else None)
            for i, (v, c) in enumerate(zip(vectors, captions, strict=True))
        ]
    )
    source.close()
    assert runner.invoke(cli, ["export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "a")]).exit_code == 0
    imported = runner.invoke(cli, ["import", str(tmp_path / "out"), "--store", "milvus", "--data-dir", str(tmp_path)])
    assert imported.exit_code == 0, imported.output
    assert "imported 30 vectors into Milvus: 30 items, flat index" in message(imported.output)

    back = runner.invoke(cli, ["export", str(tmp_path / "back"), "--store", "milvus", "--model", "demo"])
    assert back.exit_code == 0, back.output
    assert "exported 30 items (64-d, demo)" in back.output
    for name in ("ids.txt", "metadata.jsonl", "model.txt"):
        assert (tmp_path / "back" / name).read_text() == (tmp_path / "out" / name).read_text()
    for name in ("vectors.npy", "caption_vectors.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "back" / name), np.load(tmp_path / "out" / name), atol=1e-6)
