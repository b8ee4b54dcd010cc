"""Text-search throughput over HTTP with concurrent clients (benchmark 1).

    python -m bench.text_throughput [--clients 32] [--requests 640] [--items 10000]

Four runs in one invocation, ViT-B-32 with random weights, the query cache off:
the service with cross-request batching, the same with --max-batch-size 1,
batching again with --precision fp32 (the default `auto` is bf16 on CPUs with
native bf16), and a naive in-process baseline (open_clip's public fp32
full-context encode_text, one query at a time, then a flat FAISS search).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import faiss
import open_clip
import torch
import torch.nn.functional as F

from bench.common import drive, fill_store, queries, unit_rows
from harness.server import ServerProcess

MODEL = "ViT-B-32"


def service_qps(data_dir: Path, texts: list[str], clients: int, *extra: str) -> float:
    env = {"CLIPSEARCH_MODEL__TEXT_CACHE_SIZE": "0"}
    server = ServerProcess(data_dir, "--model", MODEL, "--pretrained", "none", *extra, env=env)
    with server:
        warm = queries(clients * 2, seed=99)
        asyncio.run(
            drive(server.url, lambda c, i: c.post("/v1/search/text", json={"query": warm[i]}), len(warm), clients)
        )
        seconds, _ = asyncio.run(
            drive(
                server.url,
                lambda c, i: c.post("/v1/search/text", json={"query": texts[i], "k": 10}),
                len(texts),
                clients,
            )
        )
    return len(texts) / seconds


def naive_qps(vectors, texts: list[str]) -> float:
    model = open_clip.create_model(MODEL).eval()
    tokenizer = open_clip.get_tokenizer(MODEL)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    with torch.inference_mode():
        model.encode_text(tokenizer(texts[:3]))  # warm-up
        started = time.perf_counter()
        for text in texts:
            query = F.normalize(model.encode_text(tokenizer([text])), dim=-1).numpy()
            index.search(query, 10)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    vectors = unit_rows(args.items, 512)
    texts = queries(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        fill_store(data, vectors, MODEL)
        batched = service_qps(data, texts, args.clients)
        unbatched = service_qps(data, texts[: args.requests // 2], args.clients, "--max-batch-size", "1")
        fp32 = service_qps(data, texts[: args.requests // 2], args.clients, "--precision", "fp32")
    naive = naive_qps(vectors, texts[: args.requests // 4])
    print(f"text search, {MODEL} random weights, {args.items} stored vectors, {args.clients} clients")
    print(f"  service, batching on (max 32), precision auto  {batched:8.1f} queries/s")
    print(f"  service, --max-batch-size 1, precision auto    {unbatched:8.1f} queries/s")
    print(f"  service, batching on, --precision fp32         {fp32:8.1f} queries/s")
    print(f"  naive open_clip fp32 loop (no HTTP)            {naive:8.1f} queries/s")
    print(f"  batching vs batch size 1: {batched / unbatched:.2f}x   vs naive: {batched / naive:.2f}x (target >= 5x)")
    print(f"  fp32 service vs naive: {fp32 / naive:.2f}x")


if __name__ == "__main__":
    main()
