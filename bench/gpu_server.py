"""The real server on one GPU, loaded over HTTP from several client processes (benchmark 6).

    python -m bench.gpu_server                        # CUDA, ViT-B-32 random weights, under 4 minutes
    python -m bench.gpu_server --device cpu --smoke   # the demo model, tiny counts (the test suite runs this)

Starts `clipsearch serve --model ViT-B-32 --pretrained none --device cuda` on a
temporary data directory holding 10,000 random unit vectors (query cache off,
batches up to 256, log level warning so access logs do not tax the server),
and drives it from `--processes` spawned client processes, each an asyncio
httpx client with its share of the connections (one Python process cannot load
a fast server; wrk is not on the GPU host). Each phase warms up with the same
load first, then runs for a fixed time; a request counts when its answer
arrives. Prints one table: ingest img/s from 640x480 JPEGs in multipart
batches of 32, text search q/s at 1, 64 and 256 connections, batch text search
(64 queries a request) at 16, image search q/s
at 64, each with p50/p99 latency and failed requests, then the in-process
tower figures (from `--tower-figures`, bench.gpu's --json, or measured here
before the server starts). Heavy imports stay inside main(): the client
processes import only httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

REQUEST_IMAGES = 32
BATCH_QUERIES = 64  # queries per POST /v1/search/text/batch
IMAGE_SIZE = (640, 480)


@dataclass(frozen=True)
class Job:
    """One client process's share of a phase."""

    url: str
    kind: str  # ingest | text | batch | image
    connections: int
    start_at: float  # wall clock (time.time()), the same for every process of a phase
    seconds: float
    seed: int
    jpegs: list[bytes]


@dataclass
class Result:
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None
    finished_at: float = 0.0


def client_process(job: Job) -> Result:
    """Runs in a spawned process: `job.connections` connections, each sending requests back to back."""
    try:
        import uvloop

        return uvloop.run(_drive(job))
    except ImportError:
        return asyncio.run(_drive(job))


async def _drive(job: Job) -> Result:
    result = Result()
    limits = httpx.Limits(max_connections=job.connections, max_keepalive_connections=job.connections)
    async with httpx.AsyncClient(base_url=job.url, timeout=120, limits=limits) as client:
        send = _request(client, job)
        await asyncio.sleep(max(0.0, job.start_at - time.time()))
        end = job.start_at + job.seconds
        counter = iter(range(10**12))

        async def connection() -> None:
            while time.time() < end:
                started = time.perf_counter()
                try:
                    response = await send(next(counter))
                    if response.status_code >= 300:
                        raise RuntimeError(f"{response.status_code} {response.text[:200]}")
                except Exception as exc:
                    result.failed += 1
                    result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.ok += 1

        await asyncio.gather(*(connection() for _ in range(job.connections)))
    result.finished_at = time.time()
    return result


def _request(client: httpx.AsyncClient, job: Job) -> Callable[[int], Awaitable[httpx.Response]]:
    jpegs = job.jpegs

    def text(i: int) -> Awaitable[httpx.Response]:
        # Unique queries: with the cache off every one reaches the text tower anyway.
        return client.post("/v1/search/text", json={"query": f"photo {job.seed}-{i} of a red car at night", "k": 10})

    def batch(i: int) -> Awaitable[httpx.Response]:
        texts = [f"photo {job.seed}-{i}-{j} of a red car at night" for j in range(BATCH_QUERIES)]
        return client.post("/v1/search/text/batch", json={"queries": texts, "k": 10})

    def image(i: int) -> Awaitable[httpx.Response]:
        return client.post("/v1/search/image", files={"file": ("q.jpg", jpegs[i % len(jpegs)], "image/jpeg")})

    def ingest(i: int) -> Awaitable[httpx.Response]:
        files = [
            ("files", (f"{j}.jpg", jpegs[(i * REQUEST_IMAGES + j) % len(jpegs)], "image/jpeg"))
            for j in range(REQUEST_IMAGES)
        ]
        return client.post("/v1/images", files=files)

    return {"text": text, "batch": batch, "image": image, "ingest": ingest}[job.kind]


@dataclass(frozen=True)
class Phase:
    kind: str  # ingest | text | batch | image
    connections: int

    @property
    def per_request(self) -> int:
        """Items per request: the ingest rate counts images, the batch rate queries."""
        return {"ingest": REQUEST_IMAGES, "batch": BATCH_QUERIES}.get(self.kind, 1)

    @property
    def name(self) -> str:
        what = {
            "ingest": f"ingest, {REQUEST_IMAGES} JPEGs/request",
            "text": "text search",
            "batch": f"batch text search, {BATCH_QUERIES} queries/request",
            "image": "image search",
        }
        return f"{what[self.kind]}, {self.connections} connection{'s' * (self.connections > 1)}"


@dataclass
class Row:
    name: str
    rate: float
    unit: str
    p50_ms: float
    p99_ms: float
    failed: int
    error: str | None = None


def run_phase(
    pool: multiprocessing.pool.Pool,
    url: str,
    phase: Phase,
    processes: int,
    timing: tuple[float, float],
    jpegs: list[bytes],
) -> Row:
    """Warm up, then measure one phase from `processes` client processes sharing the connections.

    `timing` is (warm-up seconds, measured seconds).
    """
    warm_s, seconds = timing
    procs = min(processes, phase.connections)
    shares = [phase.connections // procs + (1 if i < phase.connections % procs else 0) for i in range(procs)]

    def jobs(duration: float, seed: int) -> list[Job]:
        start_at = time.time() + 0.5  # every process starts together
        return [Job(url, phase.kind, n, start_at, duration, seed + i, jpegs) for i, n in enumerate(shares)]

    pool.map(client_process, jobs(warm_s, 1000))
    measured = jobs(seconds, 2000)
    results = pool.map(client_process, measured)
    ok = sum(r.ok for r in results)
    failed = sum(r.failed for r in results)
    latencies = sorted(x for r in results for x in r.latencies)
    # A request counts when its answer arrives: the span runs from the common start to the last answer.
    span = max(r.finished_at for r in results) - measured[0].start_at
    unit = "img/s" if phase.kind == "ingest" else "q/s"
    return Row(
        phase.name,
        ok * phase.per_request / span,
        unit,
        _percentile(latencies, 50) * 1000,
        _percentile(latencies, 99) * 1000,
        failed,
        next((r.first_error for r in results if r.first_error), None),
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


PHASES = [
    Phase("ingest", 16),
    Phase("text", 1),
    Phase("text", 64),
    Phase("text", 256),
    Phase("batch", 16),
    Phase("image", 64),
]


def tower_figures(model: str, device: str, smoke: bool) -> dict[str, dict[str, float | str | None]]:
    """The new path's in-process figures, measured here before the server takes the GPU."""

    from bench.common import photos, queries
    from bench.gpu import FULL, MAX_PIXELS, SMOKE, median_ms, new_towers, timed

    sizes = SMOKE if smoke else FULL
    towers = new_towers(device, model)
    jpegs = photos(8)
    raw = [towers.image.prepare(jpegs[i % len(jpegs)], max_pixels=MAX_PIXELS) for i in range(sizes.tower_batch)]
    image_rate = sizes.tower_batch / timed(lambda: towers.image.encode(raw), sizes.tower_batches)
    texts = queries(sizes.texts, seed=3)
    counter = iter(range(10**9))
    one_ms = median_ms(lambda: towers.text.encode([f"{texts[0]} {next(counter)}"]), sizes.text_calls)
    b = sizes.text_batch
    text_rate = b / timed(lambda: towers.text.encode(texts[:b]), max(1, sizes.texts // b))
    return {
        f"image tower img/s, preprocessed batch {sizes.tower_batch}": {"old": None, "new": image_rate, "unit": "img/s"},
        "text tower latency, batch 1": {"old": None, "new": one_ms, "unit": "ms"},
        f"texts/s, batch {b}": {"old": None, "new": text_rate, "unit": "texts/s"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="the demo model, tiny counts and durations")
    parser.add_argument("--model", help="default ViT-B-32 (smoke: demo)")
    parser.add_argument("--processes", type=int, default=min(8, os.cpu_count() or 1), help="client processes")
    parser.add_argument("--items", type=int, help="stored vectors (default 10,000; smoke 200)")
    parser.add_argument("--seconds", type=float, help="measured seconds per phase (default 10; smoke 1)")
    parser.add_argument("--tower-figures", type=Path, help="bench.gpu --json output to show; unset: measured here")
    parser.add_argument("--json", type=Path, help="also write the table here")
    parser.add_argument("--log-level", default="warning", help="the server's log level")
    args = parser.parse_args()
    model = args.model or ("demo" if args.smoke else "ViT-B-32")
    items = args.items or (200 if args.smoke else 10_000)
    seconds = args.seconds or (0.5 if args.smoke else 10.0)
    warm_s = seconds / 3

    from bench.common import fill_store, photos, unit_rows
    from harness.server import ServerProcess
    from models.clip import model_dim

    started = time.perf_counter()
    towers: dict[str, dict[str, float | str | None]] = {}
    errors: list[str] = []
    if args.tower_figures is not None and args.tower_figures.exists():
        loaded = json.loads(args.tower_figures.read_text())
        towers, errors = loaded["figures"], [f"bench.gpu: {e}" for e in loaded["errors"]]
    else:
        try:
            towers = tower_figures(model, args.device, args.smoke)
            _free_gpu_memory()  # the towers measured here are gone; the server gets the GPU
        except Exception as exc:
            errors.append(f"in-process towers: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    jpegs = photos(2 * REQUEST_IMAGES if not args.smoke else 8, size=IMAGE_SIZE)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        fill_store(data_dir, unit_rows(items, model_dim(model)), model)
        env = {"CLIPSEARCH_MODEL__TEXT_CACHE_SIZE": "0", "CLIPSEARCH_LOG_LEVEL": args.log_level}
        serve = ("--model", model, "--pretrained", "none", "--device", args.device, "--max-batch-size", "256")
        server = ServerProcess(data_dir, *serve, env=env)
        try:
            server.start(timeout=300)
        except (RuntimeError, TimeoutError) as exc:
            # The old path's figures are still worth having: open_clip's transform, fp32 weights.
            errors.append(f"the server did not start with the fast path; measured the reference fp32 path: {exc}")
            print(errors[-1][-3000:], flush=True)
            reference = {**env, "CLIPSEARCH_MODEL__PIPELINE": "reference", "CLIPSEARCH_MODEL__PRECISION": "fp32"}
            server = ServerProcess(data_dir, *serve, env=reference)
            server.start(timeout=300)
        device_name = server.client().get("/ready").json().get("model", {}).get("device", args.device)
        context = multiprocessing.get_context("spawn")
        try:
            with context.Pool(args.processes) as pool:
                for phase in PHASES:
                    if args.smoke:
                        phase = Phase(phase.kind, min(phase.connections, 4))
                    try:
                        row = run_phase(pool, server.url, phase, args.processes, (warm_s, seconds), jpegs)
                    except Exception as exc:
                        errors.append(f"{phase.name}: {type(exc).__name__}: {exc}")
                        traceback.print_exc()
                        continue
                    rows.append(row)
                    print(_line(row), flush=True)
        finally:
            code = server.stop()
            if code not in (0, -signal.SIGTERM):  # uvicorn re-raises the SIGTERM it handled
                errors.append(f"the server exited with {code}; its log ends:\n{server.log()[-3000:]}")

    gpu = _gpu_name() if args.device.startswith("cuda") else "cpu"
    print()
    print(
        f"clipsearch over HTTP: {model} random weights on {device_name} ({gpu}), {items:,} stored vectors, "
        f"query cache off, {args.processes} client processes (httpx + asyncio), {seconds:g} s per phase"
    )
    print(f"  {'figure':<44} {'rate':>14} {'p50':>10} {'p99':>10} {'failed':>7}")
    for row in rows:
        print(_line(row))
    print("in-process (new path):")
    for figure, values in towers.items():
        new = values.get("new")
        old = values.get("old")
        old_text = f"   (old {old:,.2f})" if isinstance(old, float) else ""
        new_text = f"{new:,.2f}" if isinstance(new, float) else "-"
        print(f"  {figure:<44} {new_text:>14} {values.get('unit') or ''}{old_text}")
    print(f"total {time.perf_counter() - started:.0f} s")
    for error in errors:
        print(f"ERROR {error}")
    for row in rows:
        if row.error:
            print(f"ERROR {row.name}: {row.failed} failed, first: {row.error}")
    if args.json is not None:
        table = {"rows": [asdict(r) for r in rows], "towers": towers, "errors": errors, "device": device_name}
        args.json.write_text(json.dumps(table, indent=1))


def _line(row: Row) -> str:
    rate = f"{row.rate:,.0f} {row.unit}"
    return f"  {row.name:<44} {rate:>14} {row.p50_ms:>7.1f} ms {row.p99_ms:>7.1f} ms {row.failed:>7}"


def _free_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"


if __name__ == "__main__":
    main()
