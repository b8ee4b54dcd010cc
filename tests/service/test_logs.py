from __future__ import annotations

import io
import json
import logging

from service.logs import REQUEST_ID_HEADER, RequestIdFilter, configure_logging


def test_a_sane_client_request_id_is_echoed(client):
    response = client.get("/health", headers={REQUEST_ID_HEADER: "trace-42.a_b"})
    assert response.headers[REQUEST_ID_HEADER] == "trace-42.a_b"


def test_a_missing_or_odd_request_id_is_replaced_by_a_fresh_one(client):
    first = client.get("/health").headers[REQUEST_ID_HEADER]
    odd = client.get("/health", headers={REQUEST_ID_HEADER: "no spaces\tor tabs; please"}).headers[REQUEST_ID_HEADER]
    assert len(first) == 32 and len(odd) == 32 and first != odd


def test_json_logs_are_one_object_per_line_with_the_request_id():
    configure_logging("info", "json")
    handler = logging.getLogger().handlers[0]
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        logging.getLogger("clipsearch.test").info("hello %s", "world")
    finally:
        configure_logging("warning", "text")
    line = json.loads(stream.getvalue().strip())
    assert line["message"] == "hello world" and line["request_id"] == "-" and line["level"] == "INFO"


def test_the_filter_gives_every_record_a_request_id():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RequestIdFilter().filter(record) and record.request_id == "-"  # type: ignore[attr-defined]
