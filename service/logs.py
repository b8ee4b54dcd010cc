"""Logging: text or JSON lines, each carrying the id of the request it belongs to."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from fastapi import FastAPI
from pythonjsonlogger.json import JsonFormatter
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_request_id: ContextVar[str] = ContextVar("request_id", default="-")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def configure_logging(level: str, fmt: str) -> None:
    """One handler on the root logger (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s", rename_fields={"levelname": "level"}
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class _RequestIds:
    """Pure ASGI: gives each request an id (the client's X-Request-ID when it is
    sane) and echoes it in the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        value = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex
        # Not reset afterwards: the server's access-log line comes after the
        # answer, and each request runs in its own task, so its own context.
        _request_id.set(value)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = value
            await send(message)

        await self.app(scope, receive, send_with_id)


def install_request_ids(app: FastAPI) -> None:
    app.add_middleware(_RequestIds)
