"""Searches from many callers answered together: one `search_many` per set of parameters."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from index.errors import StoreError
from index.types import FieldFilter, Hit, VectorField, VectorStore


@dataclass(frozen=True)
class SearchQuery:
    """One caller's search: what `VectorStore.search` takes, with hashable parameters."""

    vector: np.ndarray
    k: int
    filters: tuple[FieldFilter, ...] = ()
    min_score: float | None = None
    fields: tuple[VectorField, ...] = (VectorField.IMAGE,)
    exact: bool = False

    def parameters(self) -> tuple[int, tuple[FieldFilter, ...], float | None, tuple[VectorField, ...], bool]:
        """Everything but the vector: queries that share these share one index call."""
        return self.k, self.filters, self.min_score, self.fields, self.exact


SEARCH_THREADS = max(1, (os.cpu_count() or 1) // 4)


def search_each(store: VectorStore, queries: Sequence[SearchQuery]) -> list[list[Hit] | StoreError]:
    """Each query's hits, as `store.search` would give them, in order.

    Queries with equal parameters are searched with one `search_many` call. A
    group the store refuses (a bad filter, say) gets the error in place of its
    hits, so one caller's mistake never fails another caller's search.
    """
    # A quarter of the cores for FAISS in this (worker) thread (the setting is
    # per thread). These searches run beside the forward passes and the event
    # loop, and spinning OpenMP teams fight them for the cores: on 2 busy cores
    # a 30-query flat search over 10k vectors took 2.1 ms on one thread and
    # 12-22 ms on two, so small machines get one. On a 16-core GPU host one
    # thread was the server's largest single cost (38% of its samples under 64
    # connections, docs/gpu.md), so big machines get several.
    faiss.omp_set_num_threads(SEARCH_THREADS)
    groups: dict[tuple[int, tuple[FieldFilter, ...], float | None, tuple[VectorField, ...], bool], list[int]] = {}
    for i, query in enumerate(queries):
        groups.setdefault(query.parameters(), []).append(i)
    results: list[list[Hit] | StoreError] = [[] for _ in queries]
    for (k, filters, min_score, fields, exact), members in groups.items():
        matrix = np.stack([queries[i].vector for i in members])
        try:
            found: Sequence[list[Hit] | StoreError] = store.search_many(
                matrix, k, filters=filters, min_score=min_score, fields=fields, exact=exact
            )
        except StoreError as exc:
            found = [exc] * len(members)
        for i, hits in zip(members, found, strict=True):
            results[i] = hits
    return results
