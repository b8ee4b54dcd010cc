from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.crash_trials import Ledger, Outcome, _writer, outcome, run_trials


@pytest.mark.e2e
def test_kill_9_under_concurrent_writes_loses_no_acknowledged_add_or_delete(tmp_path):
    report = run_trials(tmp_path / "data", trials=3, seed=1)
    assert report.failures == []
    assert report.wrong_answers == 0
    assert report.acknowledged_writes > 0 and report.checked_present > 0


@pytest.mark.parametrize(
    ("status", "delete", "expected"),
    [
        (201, False, Outcome.ACKNOWLEDGED),
        (204, True, Outcome.ACKNOWLEDGED),
        (500, False, Outcome.WRONG),
        (503, True, Outcome.WRONG),
        (507, False, Outcome.WRONG),
        (404, True, Outcome.WRONG),
        (429, False, Outcome.DOUBT),
        (429, True, Outcome.DOUBT),
    ],
)
def test_a_server_error_or_a_lost_add_is_wrong_and_only_a_refusal_is_in_doubt(status, delete, expected):
    assert outcome(status, delete) is expected


@pytest.fixture
def stub_server(request) -> Iterator[tuple[str, threading.Event]]:
    """A server answering adds and deletes with the given statuses; `stop` is set after 20 requests."""
    add_status, delete_status = request.param
    stop = threading.Event()
    answered: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            answered.append(status)
            if len(answered) >= 20:
                stop.set()

        def do_POST(self) -> None:
            self._answer(add_status)

        def do_DELETE(self) -> None:
            self._answer(delete_status)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", stop
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("stub_server", [(500, 204)], indirect=True)
def test_a_writer_files_a_5xx_to_an_add_as_wrong_not_in_doubt(stub_server):
    url, stop = stub_server
    ledger = Ledger()
    _writer(url, ledger, stop, random.Random(0), "w")
    assert ledger.acknowledged == 0 and not ledger.present
    assert len(ledger.wrong_answers) >= 20
    assert ledger.wrong_answers[0] == "add of w-0 answered 500"


@pytest.mark.parametrize("stub_server", [(201, 404)], indirect=True)
def test_a_writer_files_a_404_to_the_delete_of_an_acknowledged_add_as_wrong(stub_server):
    url, stop = stub_server
    ledger = Ledger()
    _writer(url, ledger, stop, random.Random(0), "w")
    assert ledger.acknowledged > 0
    assert ledger.wrong_answers and all(
        w.startswith("delete of w-") and w.endswith("404") for w in ledger.wrong_answers
    )
