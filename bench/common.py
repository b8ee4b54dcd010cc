"""Helpers shared by the benchmark scripts: servers, clients, data, reports."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np

from demo.scenes import render, scene_set
from index.ann import IndexSpec, IndexType
from index.store import SqliteFaissStore
from index.types import NewItem

WORDS = ["cat", "dog", "red", "car", "tree", "house", "beach", "mountain", "city", "night", "bird", "flower"]


def queries(n: int, seed: int = 0) -> list[str]:
    """Distinct, CLIP-length queries (5-12 words), so no cache can answer them."""
    rng = np.random.default_rng(seed)
    return [f"photo {i} of a " + " ".join(rng.choice(WORDS, rng.integers(3, 10))) for i in range(n)]


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def fill_store(data_dir: Path, vectors: np.ndarray, model: str) -> None:
    """Write vectors into a flat store, as import-vectors does."""
    store = SqliteFaissStore(data_dir, vectors.shape[1], model, IndexSpec(type=IndexType.FLAT))
    for start in range(0, len(vectors), 20_000):
        chunk = vectors[start : start + 20_000]
        store.upsert([NewItem(v, str(start + i)) for i, v in enumerate(chunk)])
    store.close()


def photos(n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[bytes]:
    """JPEG photos of generated scenes at `size`, with camera-like noise."""
    out = []
    for scene in scene_set(seed, n):
        image = render(scene, size=max(size)).resize(size)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


async def drive(
    url: str, make_request: Callable[[httpx.AsyncClient, int], object], total: int, clients: int
) -> tuple[float, list[float]]:
    """Send `total` requests from `clients` concurrent clients; (seconds, per-request latencies)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            started = time.perf_counter()
            response = await make_request(client, i)  # type: ignore[misc]
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - started, latencies


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
