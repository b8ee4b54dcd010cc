"""Cross-modal ANN recall: text queries among image vectors, against exact search (benchmark 7).

    python -m bench.cross_modal [--set demo|clustered] [--n 1000000] [--queries 300] [--http]

A CLIP text query is not drawn from the distribution of the image vectors it
searches (the modality gap), which is the case a graph index handles worst.
Two sets stand for it:

- `demo`: the demo CLIP's image embeddings of `n` generated scenes (rendered
  and embedded in batches, cached under artifacts/cross_modal/), queried with
  the demo CLIP's text embeddings of other scenes' captions (text→image) and
  with those scenes' own images (image→image).
- `clustered`: the clustered 512-d vectors of bench.ann_quality, queried with
  ViT-B-32 text embeddings from random weights (seeded) and with fresh draws
  from the clusters: the set issue #16 measured (recall@10 0.42 at 1M).

In-process (the default), each index is built once and searched one query at
a time on one thread, as the server's search thread does, with each search
setting; recall@10 is against exact flat search. With `--http`, the vectors
are loaded with `clipsearch import-vectors`, the real server answers text
searches from one client (and similar-by-id searches for image→image), and
the reference is the same request with `"exact": true`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from bench.ann_quality import LATENT, clustered
from bench.common import percentile, queries
from demo.scenes import random_scene, render
from harness.server import ROOT, ServerProcess
from index.ann import IndexSpec, IndexType, build_ann, far_threshold, search_ann
from models.clip import DEMO_CHECKPOINT, DEMO_MODEL, load_clip

DEFAULT_CACHE = ROOT / "artifacts" / "cross_modal"
K = 10


@dataclass
class QuerySet:
    """Stored vectors, query vectors per kind, and (for --http) the query texts the server embeds itself."""

    data: np.ndarray
    text: np.ndarray
    image: np.ndarray
    texts: list[str]
    model_args: tuple[str, ...]


def demo_set(n: int, count: int, cache: Path) -> QuerySet:
    towers = load_clip(DEMO_MODEL, str(DEMO_CHECKPOINT), "cpu", fallback_to_demo=False)
    # The cache is keyed by the weights: a retrained demo model makes a new set.
    digest = hashlib.sha256(DEMO_CHECKPOINT.read_bytes()).hexdigest()[:12]
    path = cache / f"demo-{digest}-{n}.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32,
                                        shape=(n, towers.info.dim))  # fmt: skip
        rng = random.Random(0)
        started = time.perf_counter()
        for start in range(0, n, 1000):
            scenes = [random_scene(rng) for _ in range(min(1000, n - start))]
            out[start : start + len(scenes)] = towers.image.encode([towers.image.preprocess(render(s)) for s in scenes])
            if start % 50_000 == 0:
                print(f"  embedded {start:,} of {n:,} scenes ({time.perf_counter() - started:.0f}s)", flush=True)
        out.flush()
        del out
        path.with_suffix(".tmp.npy").rename(path)
    rng = random.Random(7)  # other scenes than the stored ones
    scenes = [random_scene(rng) for _ in range(count)]
    texts = [s.caption() for s in scenes]
    return QuerySet(
        data=np.load(path, mmap_mode="r"),
        text=towers.text.encode(texts),
        image=towers.image.encode([towers.image.preprocess(render(s)) for s in scenes]),
        texts=texts,
        model_args=("--model", DEMO_MODEL),
    )


def clustered_set(n: int, count: int, cache: Path) -> QuerySet:
    path = cache / f"clustered-{n}.npy"
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, LATENT))
    projection = np.linalg.qr(rng.normal(size=(512, LATENT)))[0].T
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, clustered(n, 1, centres, projection))
    torch.manual_seed(0)
    towers = load_clip("ViT-B-32", "none", "cpu", fallback_to_demo=False)
    texts = queries(count, seed=5)
    return QuerySet(
        data=np.load(path, mmap_mode="r"),
        text=towers.text.encode(texts),
        image=clustered(count, 2, centres, projection),
        texts=texts,
        model_args=("--model", "ViT-B-32", "--pretrained", "none"),
    )


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]))


def in_process(qs: QuerySet) -> None:
    faiss.omp_set_num_threads(1)  # as the server's search thread on this machine (index.batch)
    data = np.ascontiguousarray(qs.data)
    flat = faiss.IndexFlatIP(data.shape[1])
    flat.add(data)
    seqs = np.arange(len(data), dtype=np.int64)
    kinds: dict[str, np.ndarray] = {"text": qs.text, "image": qs.image}
    truth = {name: flat.search(q, K)[1] for name, q in kinds.items()}
    print(f"{len(data):,} vectors, {data.shape[1]}-d; {len(qs.text)} text and {len(qs.image)} image queries; 1 thread")
    print(f"{'index':<8}{'setting':<28}{'text R@10':>10}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'image R@10':>11}{'p50 ms':>8}{'p99 ms':>8}{'far %':>7}")  # fmt: skip
    row("flat", "exact", {name: timed(lambda q: flat.search(q, K)[1][0], q, truth[name]) for name, q in kinds.items()})
    settings: dict[IndexType, list[tuple[str, IndexSpec]]] = {
        IndexType.HNSW: [
            ("ef 96 (before)", IndexSpec(type=IndexType.HNSW, far_query_effort=1)),
            ("ef 1536 for every query", IndexSpec(type=IndexType.HNSW, hnsw_ef_search=1536, far_query_effort=1)),
            ("ef 96, far x8", IndexSpec(type=IndexType.HNSW, far_query_effort=8)),
            ("ef 96, far x16 (default)", IndexSpec(type=IndexType.HNSW)),
        ],
        IndexType.IVF: [
            ("nprobe 32 (before)", IndexSpec(type=IndexType.IVF, far_query_effort=1)),
            ("nprobe 64 for every query", IndexSpec(type=IndexType.IVF, ivf_nprobe=64, far_query_effort=1)),
            ("nprobe 32, far x2 (default)", IndexSpec(type=IndexType.IVF)),
        ],
    }
    for kind, specs in settings.items():
        started = time.perf_counter()
        index = build_ann(specs[0][1], kind, data, seqs)
        built = time.perf_counter() - started
        sample = data[np.random.default_rng(0).choice(len(data), 1000, replace=False)]
        for name, spec in specs:
            below = far_threshold(spec, kind, index, sample)
            far: list[int] = []
            search = ann_searcher(spec, kind, index, below, far)
            results = {n: timed(search, q, truth[n]) for n, q in kinds.items()}
            row(str(kind), name, results, far=100 * sum(far) / (len(qs.text) + len(qs.image)))
        print(f"  ({kind} built in {built:.0f}s)")
        del index


def ann_searcher(
    spec: IndexSpec, kind: IndexType, index: faiss.Index, below: float, far: list[int]
) -> Callable[[np.ndarray], np.ndarray]:
    """One query's top-K seqs, as the store's ANN search finds them; appends how many were far to `far`."""
    none = np.empty(0, dtype=np.int64)

    def search(query: np.ndarray) -> np.ndarray:
        _, found, n_far = search_ann(spec, kind, index, query, K, below, none)
        far.append(n_far)
        return found[0]

    return search


def timed(search: Callable[[np.ndarray], np.ndarray], queries_: np.ndarray, truth: np.ndarray) -> tuple[float, ...]:
    found, latencies = [], []
    for q in queries_:
        started = time.perf_counter()
        found.append(search(q[None, :]))
        latencies.append(time.perf_counter() - started)
    return recall(np.stack(found), truth), percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000


def row(index: str, setting: str, results: dict[str, tuple[float, ...]], far: float | None = None) -> None:
    (tr, t50, t99), (ir, i50, i99) = results["text"], results["image"]
    tail = f"{far:>7.0f}" if far is not None else f"{'':>7}"
    print(
        f"{index:<8}{setting:<28}{tr:>10.3f}{t50:>8.2f}{t99:>8.2f}{ir:>11.3f}{i50:>8.2f}{i99:>8.2f}{tail}", flush=True
    )


def over_http(qs: QuerySet, index: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vectors, data_dir = Path(tmp) / "vectors.npy", Path(tmp) / "data"
        np.save(vectors, np.asarray(qs.data))
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "clipsearch", "import-vectors", "--vectors", str(vectors),
             "--data-dir", str(data_dir), *qs.model_args[:2]],
            cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "CLIPSEARCH_STORE__INDEX": index},
        )  # fmt: skip
        print(f"import-vectors of {len(qs.data):,} vectors with the {index} index build: "
              f"{time.perf_counter() - started:.0f}s")  # fmt: skip
        vectors.unlink()
        env = {"CLIPSEARCH_MODEL__TEXT_CACHE_SIZE": "0", "CLIPSEARCH_STORE__INDEX": index}
        server = ServerProcess(data_dir, *qs.model_args, env=env)
        server.start(timeout=1800)
        try:
            with server.client() as client:
                client.timeout = 300
                status = client.get("/v1/stats").json()["index"]
                print(f"serving {status['type']} (ef_search {status['ef_search']}, nprobe {status['nprobe']}, "
                      f"far x{status['far_query_effort']} below {status['far_below']})")  # fmt: skip
                for text in qs.texts[:10]:  # warm up
                    client.post("/v1/search/text", json={"query": text, "k": K})

                def text_search(i: int, exact: bool) -> list[str]:
                    body = {"query": qs.texts[i], "k": K, "exact": exact}
                    return [h["id"] for h in client.post("/v1/search/text", json=body).json()["results"]]

                ids = [str(i) for i in np.random.default_rng(3).choice(len(qs.data), len(qs.texts), replace=False)]

                def similar(i: int, exact: bool) -> list[str]:
                    params = {"k": str(K), "exact": str(exact).lower()}
                    return [
                        h["id"] for h in client.get(f"/v1/images/{ids[i]}/similar", params=params).json()["results"]
                    ]

                for name, search in [("text->image (text search)", text_search), ("image->image (similar)", similar)]:
                    latencies, shares = [], []
                    for i in range(len(qs.texts)):
                        began = time.perf_counter()
                        found = search(i, False)
                        latencies.append(time.perf_counter() - began)
                        truth = search(i, True)
                        shares.append(len(set(found) & set(truth)) / max(1, len(truth)))
                    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
                    print(f"  {name:<28} recall@10 {np.mean(shares):.3f}  p50 {p50:.1f} ms  p99 {p99:.1f} ms"
                          f"  ({len(latencies)} requests, 1 client)")  # fmt: skip
                print(f"  server's own recall self-check: {client.get('/v1/stats').json()['index']['recall']}")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=["demo", "clustered"], default="demo")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--http", action="store_true", help="measure through the real server instead")
    parser.add_argument("--index", default="auto", help="with --http: the server's index setting")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the generated vectors are kept")
    args = parser.parse_args()
    qs = (demo_set if args.set == "demo" else clustered_set)(args.n, args.queries, args.cache)
    if args.http:
        over_http(qs, args.index)
    else:
        in_process(qs)


if __name__ == "__main__":
    main()
