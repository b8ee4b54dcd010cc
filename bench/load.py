"""A bounded load run against a real server: mixed traffic for a fixed time.

    python -m bench.load [--seconds 600] [--clients 16] [--model demo]

Text searches (50%), image searches (20%), adds (20%) and deletes of earlier
adds (10%) from concurrent clients on this machine's loopback. Reports
requests/s, p50/p99 latency, answers by status, lost writes (acknowledged adds
missing or acknowledged deletes still present at the end) and the server's
resident memory after warm-up and at the end. Exits non-zero on any 5xx or
lost write.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from bench.common import percentile
from harness.server import ServerProcess

QUERIES = ["a red circle", "a small blue square on the left", "a green star", "a large yellow triangle at the top"]


@dataclass
class LoadReport:
    seconds: float
    requests: int
    latencies: list[float]
    statuses: Counter[int]
    lost_writes: int
    rss_start_kb: int
    rss_end_kb: int
    added: set[str] = field(default_factory=set)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def client_errors(self) -> int:
        """4xx answers: the load sends only valid requests, so any is a bug (429 included: the queue is large)."""
        return sum(n for status, n in self.statuses.items() if 400 <= status < 500)

    @property
    def memory_growth(self) -> float:
        """Resident memory at the end over that after warm-up, minus one (0.042: +4.2%)."""
        return (self.rss_end_kb - self.rss_start_kb) / max(self.rss_start_kb, 1)


def _png(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    Image.new("RGB", (48, 48), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _client(url: str, until: float, rng: random.Random, name: str, report: LoadReport, deleted: set[str]) -> None:
    mine: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        n = 0
        while time.monotonic() < until:
            roll = rng.random()
            started = time.perf_counter()
            if roll < 0.5:
                response = await client.post("/v1/search/text", json={"query": rng.choice(QUERIES), "k": 10})
            elif roll < 0.7:
                response = await client.post("/v1/search/image", files={"file": ("q.png", _png(rng))})
            elif roll < 0.9 or not mine:
                item = f"{name}-{n}"
                n += 1
                upload = [("files", (f"{item}.png", _png(rng)))]
                response = await client.post("/v1/images", files=upload, data={"ids": [item]})
                if response.status_code == 201:
                    mine.append(item)
                    report.added.add(item)
            else:
                item = mine.pop(rng.randrange(len(mine)))
                response = await client.delete(f"/v1/images/{item}")
                if response.status_code == 204:
                    deleted.add(item)
            report.latencies.append(time.perf_counter() - started)
            report.statuses[response.status_code] += 1


async def _drive(url: str, seconds: float, clients: int, seed: int, report: LoadReport, deleted: set[str]) -> None:
    until = time.monotonic() + seconds
    rng = random.Random(seed)
    await asyncio.gather(
        *(_client(url, until, random.Random(rng.random()), f"c{i}", report, deleted) for i in range(clients))
    )


def run_load(data_dir: Path, seconds: float, clients: int, model: str = "demo", seed: int = 0) -> LoadReport:
    report = LoadReport(0, 0, [], Counter(), 0, 0, 0)
    deleted: set[str] = set()
    with ServerProcess(data_dir, "--model", model) as server, server.client() as client:
        assert server.process is not None
        asyncio.run(
            _drive(
                server.url, min(5.0, seconds / 10), clients, seed + 1, LoadReport(0, 0, [], Counter(), 0, 0, 0), set()
            )
        )
        report.rss_start_kb = rss_kb(server.process.pid)
        started = time.monotonic()
        asyncio.run(_drive(server.url, seconds, clients, seed, report, deleted))
        report.seconds = time.monotonic() - started
        report.rss_end_kb = rss_kb(server.process.pid)
        report.requests = len(report.latencies)
        for item in report.added - deleted:
            report.lost_writes += client.get(f"/v1/images/{item}").status_code != 200
        for item in deleted:
            report.lost_writes += client.get(f"/v1/images/{item}").status_code != 404
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model", default="demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = run_load(Path(tmp) / "data", args.seconds, args.clients, args.model)
    growth = 100 * (r.rss_end_kb - r.rss_start_kb) / max(r.rss_start_kb, 1)
    print(f"load run: {args.clients} clients for {r.seconds:.0f}s against the {args.model} model")
    print(f"  {r.requests} requests, {r.requests / r.seconds:.1f} requests/s")
    print(f"  latency p50 {percentile(r.latencies, 50) * 1000:.1f} ms, p99 {percentile(r.latencies, 99) * 1000:.1f} ms")
    print(f"  answers by status: {dict(sorted(r.statuses.items()))}; 5xx: {r.server_errors}")
    print(f"  lost writes: {r.lost_writes} (of {len(r.added)} acknowledged adds)")
    start, end = r.rss_start_kb / 1024, r.rss_end_kb / 1024
    print(f"  resident memory: {start:.0f} MiB after warm-up, {end:.0f} MiB at the end ({growth:+.1f}%)")
    raise SystemExit(1 if r.server_errors or r.lost_writes else 0)


if __name__ == "__main__":
    main()
