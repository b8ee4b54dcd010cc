"""The benchmark scripts still run (tiny sizes; the figures come from full runs, see docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys

from tests.server import ROOT


def run_module(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_ann_benchmark_reports_every_index_type():
    # ivf-pq is left out: PQ training takes half a minute even at this size on 2 cores.
    names = ["hnsw", "hnsw-sq8", "ivf", "ivf-sq8"]
    out = run_module("bench.ann_quality", "--n", "3000", "--dim", "32", "--queries", "20", "--only", *names)
    for name in ["flat", *names]:
        assert f"\n{name} " in out


def test_the_gpu_benchmark_runs_on_the_cpu_in_smoke_mode():
    out = run_module("bench.gpu", "--device", "cpu", "--images", "4", "--texts", "8", "--batches", "4")
    assert "images/s from 640x480 JPEG bytes" in out and "text queries/s" in out
