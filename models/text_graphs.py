"""The trimmed text forward pass replayed from CUDA graphs, one per (batch, length) bucket.

A one-query text forward pass is a few hundred small kernels: on a fast GPU
their launch costs more than their work. A CUDA graph launches them all at
once. Graphs need fixed shapes, so token batches are padded up to a bucket:
rows of zeros (their output is dropped) and zero columns after the last
end-of-text token (which no real token attends to under the causal mask, so
the pooled rows do not change; tests/models/test_clip.py checks `pad_tokens`
on the CPU). Graphs are captured lazily, once per bucket, and share one memory
pool; replays are serialised by a lock, and each result is copied out before
the next replay.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LENGTH_BUCKETS = (8, 16, 24, 32, 48, 64, 77)


def bucket(value: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket >= value, or None when value is larger than every bucket."""
    i = bisect_left(buckets, value)
    return buckets[i] if i < len(buckets) else None


def pad_tokens(tokens: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    """`tokens` (n, L) in the top-left corner of a (rows, length) block of zeros (padding id)."""
    padded = tokens.new_zeros((rows, length))
    padded[: tokens.shape[0], : tokens.shape[1]] = tokens
    return padded


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor  # the static input the graph reads
    features: torch.Tensor  # the static output it writes


class TextGraphs:
    """`forward(tokens, length)` run from CUDA graphs for token batches that fit a bucket."""

    def __init__(
        self, forward: Callable[[torch.Tensor, int], torch.Tensor], device: torch.device, context: int
    ) -> None:
        self._forward = forward
        self._device = device
        self._lengths = (*(n for n in LENGTH_BUCKETS if n < context), context)
        self._graphs: dict[tuple[int, int], _Graph] = {}
        self._pool: _POOL_HANDLE | None = None  # one memory pool for every bucket's graph
        self._lock = threading.Lock()
        self.failed: str | None = None  # why capture failed; graphs are then off for good

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Features of host `tokens` (n, L), trimmed to the batch's last end-of-text token; None: run eagerly."""
        rows, length = bucket(tokens.shape[0], BATCH_BUCKETS), bucket(tokens.shape[1], self._lengths)
        if rows is None or length is None or self.failed is not None:
            return None
        with self._lock:
            graph = self._graphs.get((rows, length)) or self._capture(rows, length)
            if graph is None:
                return None
            graph.tokens.copy_(pad_tokens(tokens, rows, length), non_blocking=True)
            graph.graph.replay()
            return graph.features[: tokens.shape[0]].clone()

    def _capture(self, rows: int, length: int) -> _Graph | None:
        try:
            tokens = torch.zeros((rows, length), dtype=torch.long, device=self._device)
            side = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS picks its kernels here
                for _ in range(2):
                    self._forward(tokens, length)
            torch.cuda.current_stream(self._device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            # thread_local: the image tower may run in another thread while this one captures.
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                features = self._forward(tokens, length)
        except Exception as exc:  # a capture failure must not take the text tower down with it
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning("CUDA graph capture failed (%s); the text tower runs eagerly", self.failed)
            return None
        captured = self._graphs[(rows, length)] = _Graph(graph, tokens, features)
        return captured
