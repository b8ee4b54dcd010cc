"""Limits enforced around every request, before any expensive work."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLargeError, error_response
from service.settings import LimitSettings, Settings


class _Limits:
    """Pure ASGI (cheaper than BaseHTTPMiddleware on every request).

    Refuses a body over its limit (413) without reading the rest: from the
    Content-Length when there is one, else by counting the bytes as they stream
    in (chunked bodies). Multipart uploads may be as large as their files allow;
    every other body (JSON) has its own, much smaller limit. Also cuts a request
    that runs past the timeout (503, when no answer has started yet).
    """

    def __init__(self, app: ASGIApp, limits: LimitSettings) -> None:
        self.app = app
        self.limits = limits

    def _body_limit(self, headers: dict[bytes, bytes]) -> tuple[int, str]:
        limits = self.limits
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data"):
            return limits.max_request_bytes, (
                f"{limits.max_files} files of at most {limits.max_upload_bytes} bytes, with their form fields"
            )
        return limits.max_json_bytes, "a JSON body (CLIPSEARCH_LIMITS__MAX_JSON_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit, what = self._body_limit(headers)

        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._refuse(scope, receive, send, f"the request body is {int(length)} bytes", limit, what)
            return
        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # whatever the app made of a cut body, the answer is the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                await self.app(scope, counting_receive, tracking_send)
        except TimeoutError:
            if started:
                raise
            response = error_response(
                503, "timeout", f"the request took longer than {self.limits.request_timeout_s:g} s and was stopped"
            )
            await response(scope, receive, send)
            return
        except BodyTooLargeError:
            pass  # answered below
        if over and not started:
            await self._refuse(scope, receive, send, f"the request body passed {limit} bytes", limit, what)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, said: str, limit: int, what: str) -> None:
        # The rest of the body stays unread, so the connection cannot carry another request.
        response = error_response(
            413, "request_too_large", f"{said}; the limit is {limit} ({what})", headers={"Connection": "close"}
        )
        await response(scope, receive, send)


def install_limits(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(_Limits, limits=settings.limits)
