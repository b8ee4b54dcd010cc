"""Where the real server's time goes under load: py-spy samples it during each phase (a diagnosis tool).

    python -m bench.gpu_profile --out DIR                 # CUDA, ViT-B-32 random weights, ~2 minutes
    python -m bench.gpu_profile --device cpu --smoke --out DIR

Starts the server as bench.gpu_server does, drives each phase from spawned
client processes, and meanwhile records the server with `py-spy record
--format raw` (collapsed stacks, one file per phase): once with `--gil` (only
the thread holding the GIL: what serialises the server) and once over all
threads. `python -m bench.gpu_profile --summary FILE` prints the frames that
take the most samples.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


def summary(path: Path, top: int = 30) -> None:
    """The frames with the most samples, by own time and by time below them."""
    own: Counter[str] = Counter()
    below: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            below[frame] += n
    print(f"{path.name}: {total} samples")
    for title, counter in (("own", own), ("inclusive", below)):
        print(f"  top {top} by {title} samples")
        for frame, n in counter.most_common(top):
            print(f"    {100 * n / max(total, 1):5.1f}%  {frame[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("profile-out"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--summary", type=Path, nargs="*", help="only print the summary of these raw files")
    args = parser.parse_args()
    if args.summary:
        for path in args.summary:
            summary(path)
        return

    from bench.common import fill_store, photos, unit_rows
    from bench.gpu_server import IMAGE_SIZE, REQUEST_IMAGES, Phase, run_phase
    from harness.server import ServerProcess
    from models.clip import model_dim

    beside = Path(sys.executable).with_name("py-spy")
    pyspy = shutil.which("py-spy") or next((str(p) for p in Path("/tmp").glob("site*/bin/py-spy")), str(beside))
    model = "demo" if args.smoke else "ViT-B-32"
    args.out.mkdir(parents=True, exist_ok=True)
    jpegs = photos(8 if args.smoke else 2 * REQUEST_IMAGES, size=IMAGE_SIZE)
    phases = [("text-1", Phase("text", 1), True), ("text-64", Phase("text", 64), True)]
    phases += [("batch-16", Phase("batch", 16), True), ("text-64-all", Phase("text", 64), False)]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        fill_store(data_dir, unit_rows(200 if args.smoke else 10_000, model_dim(model)), model)
        env = {"CLIPSEARCH_MODEL__TEXT_CACHE_SIZE": "0", "CLIPSEARCH_LOG_LEVEL": "warning"}
        serve = ("--model", model, "--pretrained", "none", "--device", args.device, "--max-batch-size", "256")
        with ServerProcess(data_dir, *serve, env=env) as server, multiprocessing.get_context("spawn").Pool(8) as pool:
            assert server.process is not None
            pid = server.process.pid
            for name, phase, gil in phases:
                warm = args.seconds / 3

                def record(name: str = name, gil: bool = gil, warm: float = warm) -> None:
                    time.sleep(warm + 1.5)  # the measured part, after the warm-up
                    command = [pyspy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
                    command += ["--duration", str(max(1, int(args.seconds) - 2)), "--nonblocking", "--threads"]
                    command += ["-o", str(args.out / f"{name}.txt"), *(["--gil"] if gil else [])]
                    done = subprocess.run(command, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        print(f"py-spy {name}: {done.stderr[-500:]}", flush=True)

                recorder = threading.Thread(target=record)
                recorder.start()
                row = run_phase(pool, server.url, phase, 8, (warm, args.seconds), jpegs)
                recorder.join()
                figures = f"{row.rate:,.0f} {row.unit}, p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms"
                print(f"{name}: {figures}", flush=True)
    for path in sorted(args.out.glob("*.txt")):
        summary(path, top=25)
    print(f"cpu count {os.cpu_count()}")


if __name__ == "__main__":
    main()
