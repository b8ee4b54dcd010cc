"""Batched exact search in the store: FAISS's default BLAS threshold against the store's, in one process.

    python -m bench.flat_batches [--n 10000] [--dims 64 512] [--batches 1 4 8 32 64] [--repeat 50]

For each dimension, `--n` random unit vectors go into a flat SQLite + FAISS
store; then `search_many` runs batches of each size (the micro-batches the
server forms from concurrent requests) on one FAISS thread, as the server's
search thread does, first with FAISS's own `distance_compute_blas_threshold`
(the baseline) and then with the one the store sets when it opens. Prints
milliseconds per batch and the speed-up of each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from bench.common import fill_store, unit_rows
from index.ann import IndexSpec
from index.options import IndexType
from index.store import SqliteFaissStore


def per_batch_ms(store: SqliteFaissStore, queries: np.ndarray, repeat: int) -> float:
    store.search_many(queries, 10)  # warm
    started = time.perf_counter()
    for _ in range(repeat):
        store.search_many(queries, 10)
    return (time.perf_counter() - started) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="stored vectors")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 32, 64])
    parser.add_argument("--repeat", type=int, default=50, help="timed batches per size and setting")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    default = faiss.cvar.distance_compute_blas_threshold
    print(f"search_many over {args.n} stored vectors, flat index, k=10, one FAISS thread; ms per batch")
    print(f"  {'dim':>4} {'queries':>7} {'FAISS default':>13} {'store':>8} {'speed-up':>8}")
    for dim in args.dims:
        with tempfile.TemporaryDirectory() as tmp:
            fill_store(Path(tmp) / "data", unit_rows(args.n, dim), "bench")
            store = SqliteFaissStore(Path(tmp) / "data", dim, "bench", IndexSpec(type=IndexType.FLAT))
            ours = faiss.cvar.distance_compute_blas_threshold
            try:
                for size in args.batches:
                    queries = unit_rows(size, dim, seed=1)
                    faiss.cvar.distance_compute_blas_threshold = default
                    base = per_batch_ms(store, queries, args.repeat)
                    faiss.cvar.distance_compute_blas_threshold = ours
                    fast = per_batch_ms(store, queries, args.repeat)
                    print(f"  {dim:>4} {size:>7} {base:>13.3f} {fast:>8.3f} {base / fast:>7.2f}x")
            finally:
                store.close()


if __name__ == "__main__":
    main()
