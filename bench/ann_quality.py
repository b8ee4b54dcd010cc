"""ANN quality and speed against exact search (benchmark 3).

    python -m bench.ann_quality [--n 1000000] [--dim 512] [--queries 200]

Uniformly random unit vectors have no neighbourhood structure (every point is
about equally far from every other), which no ANN index can exploit; real CLIP
embeddings are clustered and of low intrinsic dimension. The data here is
therefore a mixture of 2,000 Gaussian clusters in a 64-d latent space, mapped
into the full dimension by a fixed random orthonormal projection, plus a little
isotropic noise, then normalised; queries are fresh draws from the same mixture.

For each index type: build time, recall@10 against exact flat search, median
latency per single query, speed-up over flat, and bytes per vector (the
serialised index over n).
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from bench.common import percentile
from index.ann import Encoding, IndexSpec, IndexType, build_ann, search_parameters
from index.batch import SEARCH_THREADS

LATENT = 64


def clustered(n: int, seed: int, centres: np.ndarray, projection: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dim = projection.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        latent = centres[rng.integers(0, len(centres), m)] + rng.normal(scale=0.5, size=(m, centres.shape[1]))
        points = latent @ projection + rng.normal(scale=0.3 / np.sqrt(dim), size=(m, dim))
        out[start : start + m] = points / np.linalg.norm(points, axis=1, keepdims=True)
    return out


def timed_search(index: faiss.Index, queries: np.ndarray, k: int, params=None) -> tuple[np.ndarray, list[float]]:
    found = np.empty((len(queries), k), dtype=np.int64)
    latencies = []
    for i, q in enumerate(queries):
        started = time.perf_counter()
        _, ids = index.search(q[None, :], k, params=params)
        latencies.append(time.perf_counter() - started)
        found[i] = ids[0]
    return found, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=None, help="names of the configurations to run")
    parser.add_argument(
        "--threads",
        type=int,
        default=SEARCH_THREADS,
        help="FAISS threads (default: as many as the server's search uses)",
    )
    args = parser.parse_args()
    # On busy cores an OpenMP team spins while it waits for them: a single query over 3,000
    # vectors took 12 ms on two threads under load, against well under 1 ms on one.
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    latent = min(LATENT, args.dim)
    centres = rng.normal(size=(2000, latent))
    projection = np.linalg.qr(rng.normal(size=(args.dim, latent)))[0].T  # (latent, dim), orthonormal rows
    data = clustered(args.n, 1, centres, projection)
    queries = clustered(args.queries, 2, centres, projection)
    seqs = np.arange(args.n, dtype=np.int64)

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(data)
    truth, flat_latencies = timed_search(flat, queries, 10)
    flat_p50 = percentile(flat_latencies, 50)
    print(f"{args.n} vectors, {args.dim}-d, {args.queries} queries, {faiss.omp_get_max_threads()} threads")
    print(f"{'index':<14}{'build s':>9}{'recall@10':>11}{'p50 ms':>9}{'speed-up':>10}{'bytes/vec':>11}")
    print(f"{'flat':<14}{0:>9.1f}{1.0:>11.3f}{flat_p50 * 1000:>9.2f}{1.0:>10.2f}{4 * args.dim:>11}")
    configs = {
        "hnsw": IndexSpec(type=IndexType.HNSW),
        "hnsw-sq8": IndexSpec(type=IndexType.HNSW, encoding=Encoding.SQ8),
        "ivf": IndexSpec(type=IndexType.IVF),
        "ivf-sq8": IndexSpec(type=IndexType.IVF, encoding=Encoding.SQ8),
        "ivf-pq": IndexSpec(type=IndexType.IVF, encoding=Encoding.PQ),
    }
    for name, spec in configs.items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        index = build_ann(spec, spec.type, data, seqs)
        build = time.perf_counter() - started
        params = search_parameters(spec, spec.type, np.empty(0, dtype=np.int64))
        found, latencies = timed_search(index, queries, 10, params)
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
        p50 = percentile(latencies, 50)
        size = len(faiss.serialize_index(index)) / args.n
        print(f"{name:<14}{build:>9.1f}{recall:>11.3f}{p50 * 1000:>9.2f}{flat_p50 / p50:>10.2f}{size:>11.0f}")
        del index


if __name__ == "__main__":
    main()
