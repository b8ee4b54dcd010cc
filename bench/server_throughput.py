"""Serving overhead: text search over HTTP against a bare FastAPI route, both driven by wrk.

    python -m bench.server_throughput [--seconds 10] [--connections 32] [--items 10000]

One invocation measures, one after the other on the same machine:

- bare: a FastAPI app served by uvicorn with its defaults (uvloop, httptools,
  an access-log line per request, as the service writes) with one route of the
  same request and response shape as `POST /v1/search/text`: a JSON body
  `{"query": ..., "k": 10}` in, 10 results of id, score and metadata out,
  through pydantic models, with no other work;
- service: the real service (`clipsearch serve --model demo`, the query cache
  off) over `--items` stored vectors; the demo model's compute is tiny, so
  this measures what the service spends per request besides the model.

The load generator is `wrk` (closed loop, `--connections` connections), with
a Lua script that makes every query unique, so no cache answers any. Prints
requests/s, p50/p99 latency and the count of non-2xx answers of each, and the
ratio service/bare. Exits non-zero when wrk is missing (saying how to install
it) or when any answer was not a 2xx.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, Field

from bench.common import fill_store, unit_rows
from harness.server import ROOT, ServerProcess, free_port

DEMO_DIM = 64
INSTALL_WRK = "wrk is not installed: `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"

# Every request gets its own query: wrk runs one Lua state per thread, so the
# thread's number goes into the text beside the thread's own counter. done()
# prints one JSON line that the script parses (latencies in microseconds).
LUA = r"""
local threads = {}
local number = 0
function setup(thread)
  number = number + 1
  thread:set("tid", number)
  table.insert(threads, thread)
end
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local query = "a photo of thing " .. tid .. "-" .. counter .. " in the park"
  return wrk.format(nil, nil, nil, '{"query": "' .. query .. '", "k": 10}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


class BareRequest(BaseModel):
    query: str = Field(min_length=1)
    k: int = Field(10, ge=1)


class BareHit(BaseModel):
    id: str
    score: float
    metadata: dict[str, Any]


class BareResponse(BaseModel):
    results: list[BareHit]


def bare_app() -> FastAPI:
    """The baseline: the search route's shape with nothing behind it."""
    app = FastAPI()

    @app.post("/v1/search/text", response_model=BareResponse)
    async def search_text(request: BareRequest) -> BareResponse:
        return BareResponse(results=[BareHit(id=str(i), score=1.0 - i / 100, metadata={}) for i in range(request.k)])

    return app


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_wrk(url: str, seconds: float, connections: int, threads: int) -> WrkResult:
    """`wrk` against `url` for `seconds`; unique query per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    try:
        command = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            script.name,
            url,
        ]
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    finally:
        Path(script.name).unlink()
    line = next((s for s in out.splitlines() if s.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        non_2xx=raw["non_2xx"],
        socket_errors=raw["socket_errors"],
    )


def _check_shape(url: str) -> None:
    """One request by hand: the route answers 10 results of the expected shape."""
    response = httpx.post(f"{url}/v1/search/text", json={"query": "a check", "k": 10}, timeout=30)
    response.raise_for_status()
    results = response.json()["results"]
    if len(results) != 10 or not {"id", "score", "metadata"} <= set(results[0]):
        raise RuntimeError(f"{url} answered an unexpected body: {response.text[:300]}")


def measure(url: str, seconds: float, connections: int, threads: int) -> WrkResult:
    _check_shape(url)
    run_wrk(url + "/v1/search/text", min(2.0, seconds), connections, threads)  # warm-up
    return run_wrk(url + "/v1/search/text", seconds, connections, threads)


def bare(seconds: float, connections: int, threads: int, log: Path) -> WrkResult:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.server_throughput:bare_app",
        "--factory",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the bare app exited with {process.returncode}:\n{log.read_text()}")
            try:
                httpx.get(f"{url}/docs", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return measure(url, seconds, connections, threads)
    finally:
        process.terminate()
        process.wait(30)


def service(data_dir: Path, seconds: float, connections: int, threads: int, items: int, *extra: str) -> WrkResult:
    fill_store(data_dir, unit_rows(items, DEMO_DIM), "demo")
    env = {"CLIPSEARCH_MODEL__TEXT_CACHE_SIZE": "0"}
    with ServerProcess(data_dir, "--model", "demo", *extra, env=env) as server:
        return measure(server.url, seconds, connections, threads)


def row(name: str, r: WrkResult) -> str:
    return f"  {name:<8} {r.rate:9.1f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {r.non_2xx:8d} {r.socket_errors:13d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per server (after 2 s warm-up)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (one drives far more than 2 cores serve)")
    parser.add_argument("--items", type=int, default=10_000, help="vectors in the service's store")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra option for clipsearch serve")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print(INSTALL_WRK, file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as tmp:
        base = bare(args.seconds, args.connections, args.threads, Path(tmp) / "bare.log")
        served = service(Path(tmp) / "data", args.seconds, args.connections, args.threads, args.items, *args.serve_arg)
    print(
        f"text search over HTTP: wrk, {args.connections} connections, {args.threads} thread(s), "
        f"{args.seconds:g} s each, unique queries; service: demo model, {args.items} vectors, cache off"
    )
    print(f"  {'server':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'socket errors':>13}")
    print(row("bare", base))
    print(row("service", served))
    print(f"  service/bare: {served.rate / base.rate:.2f}x (target >= 0.5x)")
    raise SystemExit(1 if base.non_2xx or served.non_2xx or base.socket_errors or served.socket_errors else 0)


if __name__ == "__main__":
    main()
