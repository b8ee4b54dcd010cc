"""Limits enforced around every request, before any expensive work."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response
from service.settings import LimitSettings, Settings


class _Limits:
    """Pure ASGI (cheaper than BaseHTTPMiddleware on every request): refuses a body
    over the size limit from its Content-Length (413) and cuts a request that runs
    past the timeout (503, when no answer has started yet)."""

    def __init__(self, app: ASGIApp, limits: LimitSettings) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limits.max_request_bytes:
            response = error_response(
                413,
                "request_too_large",
                f"the request body is {int(length)} bytes; the limit is {limits.max_request_bytes} "
                f"({limits.max_files} files of at most {limits.max_upload_bytes} bytes)",
            )
            await response(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(limits.request_timeout_s):
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if started:
                raise
            response = error_response(
                503, "timeout", f"the request took longer than {limits.request_timeout_s:g} s and was stopped"
            )
            await response(scope, receive, send)


def install_limits(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(_Limits, limits=settings.limits)
