"""The 1M-vector benchmark on both stores in one run, through the API (issue #14).

    python -m bench.milvus [--n 1000000] [--requests 200] [--recall-queries 50] [--images 256]

For each store, SQLite + FAISS and then Milvus (the embedded standalone server
of harness/milvus_server.py, with Milvus's default settings: a 200 ms time tick,
its interim index on): n clustered 512-d unit vectors (bench.ann_quality's
mixture of 2,000 clusters), each with a `bucket` 0-9 in its metadata, are
loaded with `clipsearch import-vectors` (timed, index build included), and the
service (ViT-B-32, random weights, query cache off) answers from one client, with
and without a filter matching a tenth of the items, text searches (the text
tower, then the store: queries far from the data) and similar-by-id searches
(a stored vector: queries like the data, no model): p50/p99 latency, and
recall@10 against the same request with `"exact": true`. Both stores serve an IVF index searched with the same nprobe,
each with its own default lists: SQLite builds one index over everything
(about 4 x sqrt(n) lists), Milvus one per sealed segment of ~60,000 vectors
(1,024 lists). Milvus is measured with strong consistency (the default) and
with session consistency. Last, ingestion
through the API (640x480 JPEGs in batches) on Milvus with one API process and
with two (`--workers 2`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from bench.ann_quality import LATENT, clustered
from bench.common import drive, ms, percentile, photos, queries
from harness.milvus_server import MilvusServer, empty_collections
from harness.server import ROOT, ServerProcess

MODEL = "ViT-B-32"
BUCKETS = 10
FILTER = {"bucket": 3}


def write_vectors(path: Path, n: int, dim: int) -> None:
    """n clustered unit vectors into a .npy file, 100,000 rows at a time."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, LATENT))
    projection = np.linalg.qr(rng.normal(size=(dim, LATENT)))[0].T
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        out[start : start + m] = clustered(m, 1 + start, centres, projection)
    out.flush()


def load(vectors: Path, metadata: Path, data_dir: Path, env: dict[str, str], *args: str) -> float:
    """Seconds `clipsearch import-vectors` takes, the index build included."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "clipsearch", "import-vectors", "--vectors", str(vectors),
         "--metadata", str(metadata), "--data-dir", str(data_dir), "--model", MODEL, *args],
        cwd=ROOT, check=True, env={**os.environ, **env},
    )  # fmt: skip
    return time.perf_counter() - started


@contextmanager
def serving(data_dir: Path, env: dict[str, str], *args: str) -> Iterator[tuple[ServerProcess, float]]:
    server = ServerProcess(
        data_dir, "--model", MODEL, "--pretrained", "none", *args, env={"CLIPSEARCH_MODEL__TEXT_CACHE_SIZE": "0", **env}
    )
    started = time.perf_counter()
    with server:
        yield server, time.perf_counter() - started


def text_request(text: str, extra: dict) -> tuple[str, str, dict]:
    return "POST", "/v1/search/text", {"json": {"query": text, "k": 10, **extra}}


def similar_request(item_id: str, extra: dict) -> tuple[str, str, dict]:
    params = {"k": "10", **{k: json.dumps(v) if k == "filter" else str(v).lower() for k, v in extra.items()}}
    return "GET", f"/v1/images/{item_id}/similar", {"params": params}


def searches(server: ServerProcess, kind: str, subjects: list[str], recall_subjects: list[str]) -> dict[str, float]:
    """p50/p99 and recall@10 against exact, without and with the filter, for text or similar-by-id searches."""
    make = text_request if kind == "text" else similar_request

    def send(client, subject: str, extra: dict):
        """One request; an awaitable with httpx.AsyncClient (drive), the response with httpx.Client."""
        method, url, options = make(subject, extra)
        return client.request(method, url, **options)

    def timed(extra: dict, count: int) -> list[float]:
        _, latencies = asyncio.run(drive(server.url, lambda c, i: send(c, subjects[i], extra), count, 1))
        return latencies

    timed({}, min(20, len(subjects)))  # warm-up
    figures: dict[str, float] = {}
    with httpx.Client(base_url=server.url, timeout=600) as client:
        for name, extra in (("all", {}), ("filtered", {"filter": FILTER})):
            latencies = timed(extra, len(subjects))
            figures[f"{name} p50"], figures[f"{name} p99"] = percentile(latencies, 50), percentile(latencies, 99)
            shares = []
            for subject in recall_subjects:
                found = {r["id"] for r in send(client, subject, extra).json()["results"]}
                truth = {r["id"] for r in send(client, subject, {**extra, "exact": True}).json()["results"]}
                shares.append(len(found & truth) / max(1, len(truth)))
            figures[f"{name} recall"] = sum(shares) / len(shares)
    return figures


def ingest_rate(data_dir: Path, env: dict[str, str], jpegs: list[bytes], *args: str) -> float:
    batches = [jpegs[i : i + 8] for i in range(0, len(jpegs), 8)]

    def send(client, i):
        files = [("files", (f"{i}-{j}.jpg", data, "image/jpeg")) for j, data in enumerate(batches[i])]
        return client.post("/v1/images", files=files)

    with serving(data_dir, env, "--store", "milvus", *args) as (server, _):
        asyncio.run(drive(server.url, send, 1, 1))  # warm-up
        seconds, _ = asyncio.run(drive(server.url, send, len(batches), 4))
    return len(jpegs) / seconds


def row(name: str, kind: str, f: dict[str, float]) -> str:
    return (
        f"| {name} | {kind} | {ms(f['all p50'])} / {ms(f['all p99'])} | {f['all recall']:.3f} "
        f"| {ms(f['filtered p50'])} / {ms(f['filtered p99'])} | {f['filtered recall']:.3f} |"
    )


def measure(server: ServerProcess, name: str, texts: list[str], recall_texts: list[str], n: int) -> list[str]:
    rng = np.random.default_rng(7)
    ids = [str(i) for i in rng.integers(0, n, len(texts))]
    recall_ids = [str(i) for i in rng.integers(0, n, len(recall_texts))]
    return [
        row(name, "text", searches(server, "text", texts, recall_texts)),
        row(name, "similar by id", searches(server, "similar", ids, recall_ids)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--nprobe", type=int, default=32)
    args = parser.parse_args()
    texts, recall_texts = queries(args.requests, seed=3), queries(args.recall_queries, seed=4)
    index = {"CLIPSEARCH_STORE__INDEX": "ivf", "CLIPSEARCH_STORE__IVF_NPROBE": str(args.nprobe)}
    loads = [os.getloadavg()[0]]
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        vectors, metadata = Path(tmp) / "vectors.npy", Path(tmp) / "metadata.jsonl"
        write_vectors(vectors, args.n, 512)
        metadata.write_text("".join(json.dumps({"bucket": i % BUCKETS}) + "\n" for i in range(args.n)))

        sqlite_dir = Path(tmp) / "sqlite"
        timings = {"SQLite + FAISS": load(vectors, metadata, sqlite_dir, index)}
        with serving(sqlite_dir, index) as (server, start_s):
            starts = {"SQLite + FAISS": start_s}
            rows += measure(server, "SQLite + FAISS", texts, recall_texts, args.n)
        loads.append(os.getloadavg()[0])

        with MilvusServer(Path(tmp) / "milvus", config={}) as milvus:
            env = {
                **index,
                "CLIPSEARCH_STORE__BACKEND": "milvus",
                "CLIPSEARCH_STORE__MILVUS_URI": milvus.uri,
                "CLIPSEARCH_STORE__MILVUS_COLLECTION": f"bench_{args.n}",
                "CLIPSEARCH_STORE__MILVUS_TIMEOUT_S": "600",
            }
            empty_collections(milvus.uri, f"bench_{args.n}")
            files = Path(tmp) / "files"
            timings["Milvus"] = load(vectors, metadata, files, env)
            for consistency in ("strong", "session"):
                name = f"Milvus, {consistency}"
                with serving(files, {**env, "CLIPSEARCH_STORE__MILVUS_CONSISTENCY": consistency}) as (server, start_s):
                    starts[name] = start_s
                    rows += measure(server, name, texts, recall_texts, args.n)
            loads.append(os.getloadavg()[0])

            jpegs = photos(args.images)
            ingest_env = {**env, "CLIPSEARCH_STORE__MILVUS_COLLECTION": "bench_ingest"}
            empty_collections(milvus.uri, "bench_ingest")
            one = ingest_rate(Path(tmp) / "ingest1", ingest_env, jpegs)
            empty_collections(milvus.uri, "bench_ingest")
            two = ingest_rate(Path(tmp) / "ingest2", ingest_env, jpegs, "--workers", "2")
            loads.append(os.getloadavg()[0])

    print(
        f"{args.n} clustered 512-d vectors, IVF nprobe {args.nprobe}; {MODEL} random weights; "
        f"{args.requests} single-client searches of each kind (k 10), recall on {args.recall_queries}; "
        f"filter {FILTER} (1 in {BUCKETS}); {os.cpu_count()} cores, "
        f"1-min load average {', '.join(f'{x:.1f}' for x in loads)}"
    )
    for name, seconds in timings.items():
        print(f"  load into {name} (import-vectors, index build included): {seconds:.0f} s")
    for name, seconds in starts.items():
        print(f"  server start on {name}: {seconds:.0f} s")
    print("| store | query | p50 / p99 | recall@10 | filtered p50 / p99 | filtered recall@10 |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"ingest on Milvus, {args.images} 640x480 JPEGs, batches of 8 from 4 clients:")
    print(f"  1 API process   {one:6.1f} images/s")
    print(f"  2 API processes {two:6.1f} images/s  ({two / one:.2f}x)")


if __name__ == "__main__":
    main()
