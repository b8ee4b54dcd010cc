"""Limits enforced around every request, before any expensive work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from service.errors import error_response
from service.settings import Settings


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Refuse bodies over the size limit from their Content-Length (413) and cut
    requests that run past the timeout (503), as one middleware."""
    limits = settings.limits

    @app.middleware("http")
    async def enforce(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_request_bytes:
            return error_response(
                413,
                "request_too_large",
                f"the request body is {length} bytes; the limit is {limits.max_request_bytes} "
                f"({limits.max_files} files of at most {limits.max_upload_bytes} bytes)",
            )
        try:
            async with asyncio.timeout(limits.request_timeout_s):
                return await call_next(request)
        except TimeoutError:
            return error_response(
                503, "timeout", f"the request took longer than {limits.request_timeout_s:g} s and was stopped"
            )
