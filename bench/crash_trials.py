"""Crash trials: concurrent adds and deletes, `kill -9` at a random moment, restart, check.

    python -m bench.crash_trials [--trials 20] [--seed 0]

Each trial starts the server (demo model) on the same data directory, runs
writers that add new images and delete acknowledged ones, kills the process
with SIGKILL after a random 0.2-1.5 s, restarts it and checks that every
acknowledged add is present, every acknowledged delete is absent, the store
opens and search answers. Requests cut off by the kill are in doubt: either
outcome is correct for them. A 5xx answer is a failure, and so is a 404 to the
delete of an acknowledged add (the add was lost); other refusals (a 429, say)
leave the item in doubt.
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx
from PIL import Image

from harness.server import ServerProcess


@dataclass
class Ledger:
    """What the server acknowledged, kept by the writers."""

    present: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    doubt: set[str] = field(default_factory=set)
    wrong_answers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: int = 0


@dataclass
class TrialReport:
    trials: int
    acknowledged_writes: int
    checked_present: int
    checked_absent: int
    failures: list[str]
    wrong_answers: int  # 5xx answers, and 404s to deletes of acknowledged adds; each is also a failure


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(buffer, format="PNG")
    return buffer.getvalue()


class Outcome(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    DOUBT = "doubt"  # refused without a fault (a 429, say): either state is correct
    WRONG = "wrong"  # a server error, or an acknowledged add that is gone


def outcome(status: int, delete: bool) -> Outcome:
    """What an answer to an add (201 expected) or to the delete of an acknowledged add (204 expected) means."""
    if status == (204 if delete else 201):
        return Outcome.ACKNOWLEDGED
    if status >= 500 or (delete and status == 404):
        return Outcome.WRONG
    return Outcome.DOUBT


def _writer(url: str, ledger: Ledger, stop: threading.Event, rng: random.Random, prefix: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        n = 0
        while not stop.is_set():
            victim = None
            with ledger.lock:
                if ledger.present and rng.random() < 0.3:
                    victim = rng.choice(sorted(ledger.present))
                    ledger.present.discard(victim)
            item = victim or f"{prefix}-{n}"
            n += 1
            try:
                if victim:
                    status = client.delete(f"/v1/images/{victim}").status_code
                else:
                    files = [("files", (f"{item}.png", _png(n)))]
                    status = client.post("/v1/images", files=files, data={"ids": [item]}).status_code
            except httpx.HTTPError:
                with ledger.lock:
                    ledger.doubt.add(item)  # cut off by the kill: either outcome is fine
                return
            answer = outcome(status, delete=victim is not None)
            with ledger.lock:
                if answer is Outcome.ACKNOWLEDGED:
                    ledger.acknowledged += 1
                    (ledger.deleted if victim else ledger.present).add(item)
                    continue
                ledger.doubt.add(item)  # its state is unknown either way; the restart settles it
                if answer is Outcome.WRONG:
                    ledger.wrong_answers.append(f"{'delete' if victim else 'add'} of {item} answered {status}")


def run_trials(data_dir: Path, trials: int, seed: int = 0, writers: int = 4) -> TrialReport:
    rng = random.Random(seed)
    ledger = Ledger()
    failures: list[str] = []
    wrong_answers = 0
    checked_present = checked_absent = 0
    server = ServerProcess(data_dir, "--model", "demo")
    for trial in range(trials):
        server.start()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_writer, args=(server.url, ledger, stop, random.Random(rng.random()), f"t{trial}w{w}")
            )
            for w in range(writers)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.2, 1.5))
        server.kill()
        stop.set()
        for t in threads:
            t.join(30)
        with ledger.lock:
            failures += [f"trial {trial}: {wrong}" for wrong in ledger.wrong_answers]
            wrong_answers += len(ledger.wrong_answers)
            ledger.wrong_answers.clear()
        server.start()
        with server.client() as client:
            present = ledger.present - ledger.doubt
            absent = ledger.deleted - ledger.doubt
            for item in present:
                if client.get(f"/v1/images/{item}").status_code != 200:
                    failures.append(f"trial {trial}: acknowledged add {item} is missing")
            for item in absent:
                if client.get(f"/v1/images/{item}").status_code != 404:
                    failures.append(f"trial {trial}: acknowledged delete {item} is back")
            if client.post("/v1/search/text", json={"query": "a red square", "k": 5}).status_code != 200:
                failures.append(f"trial {trial}: search failed after restart")
            checked_present += len(present)
            checked_absent += len(absent)
            # Items in doubt are settled now: whatever the store says is their state.
            for item in list(ledger.doubt):
                (ledger.present if client.get(f"/v1/images/{item}").status_code == 200 else ledger.deleted).add(item)
            ledger.doubt.clear()
        server.kill()
    return TrialReport(trials, ledger.acknowledged, checked_present, checked_absent, failures, wrong_answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_trials(Path(tmp) / "data", args.trials, args.seed)
    print(
        f"{report.trials} crash trials (kill -9 under concurrent adds and deletes): "
        f"{report.acknowledged_writes} acknowledged writes; checked {report.checked_present} present "
        f"and {report.checked_absent} deleted after restarts; {report.wrong_answers} server errors or lost adds "
        f"answered; {len(report.failures)} failures"
    )
    for failure in report.failures:
        print("  " + failure)
    raise SystemExit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
