"""Single-client text→image search latency over HTTP at 1M stored vectors (benchmark 2).

    python -m bench.search_latency [--n 1000000] [--index auto] [--requests 200]

Random unit vectors are written to a .npy file and loaded with
`clipsearch import-vectors` (timed); then the service (ViT-B-32, random
weights, query cache off) answers text searches from one client, first with the
configured index and then, as the baseline in the same run, with exact flat search.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import drive, ms, percentile, queries
from harness.server import ROOT, ServerProcess

MODEL = "ViT-B-32"


def write_vectors(path: Path, n: int, dim: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(0)
    for start in range(0, n, 100_000):
        rows = rng.normal(size=(min(100_000, n - start), dim)).astype(np.float32)
        out[start : start + len(rows)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out.flush()


def latencies(data_dir: Path, index: str, texts: list[str]) -> tuple[list[float], str, float]:
    env = {"CLIPSEARCH_MODEL__TEXT_CACHE_SIZE": "0"}
    server = ServerProcess(data_dir, "--model", MODEL, "--pretrained", "none", "--index", index, env=env)
    started = time.perf_counter()
    with server, server.client() as client:
        start_seconds = time.perf_counter() - started
        index_type = client.get("/v1/stats").json()["index_type"]
        warm = queries(20, seed=5)
        asyncio.run(drive(server.url, lambda c, i: c.post("/v1/search/text", json={"query": warm[i]}), 20, 1))
        _, lat = asyncio.run(
            drive(server.url, lambda c, i: c.post("/v1/search/text", json={"query": texts[i], "k": 10}), len(texts), 1)
        )
    return lat, index_type, start_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--index", default="auto")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    texts = queries(args.requests, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        vectors, data = Path(tmp) / "vectors.npy", Path(tmp) / "data"
        write_vectors(vectors, args.n, 512)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "clipsearch", "import-vectors", "--vectors", str(vectors),
             "--data-dir", str(data), "--model", MODEL],
            cwd=ROOT, check=True, env={**os.environ, "CLIPSEARCH_STORE__INDEX": args.index},
        )  # fmt: skip
        imported = time.perf_counter() - started
        ann, ann_type, ann_start = latencies(data, args.index, texts)
        flat, _, flat_start = latencies(data, "flat", texts)
    print(f"{args.n} random 512-d vectors; import-vectors (with the {ann_type} index build) took {imported:.0f}s")
    for name, lat, start in [(ann_type, ann, ann_start), ("flat (baseline)", flat, flat_start)]:
        print(
            f"  {name:<16} p50 {ms(percentile(lat, 50)):>9}  p99 {ms(percentile(lat, 99)):>9}"
            f"   (server start {start:.0f}s)"
        )
    speed_up = percentile(flat, 50) / percentile(ann, 50)
    print(f"  p50 speed-up over flat: {speed_up:.1f}x  (target p50 <= 20 ms, p99 <= 50 ms)")


if __name__ == "__main__":
    main()
