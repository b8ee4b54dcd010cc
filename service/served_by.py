"""Every response names the CLIP model serving it, in the `X-Clipsearch-Model` header.

`demo` there means the bundled demo model answered: a toy trained on generated
coloured shapes, whose scores say nothing about photographs. A client can tell
from any search, classify or embed response, without asking /v1/stats, and
the search page shows a banner for it.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MODEL_HEADER = "X-Clipsearch-Model"


class _ModelHeader:
    """Pure ASGI (a header costs no extra dependency to solve per search): adds the serving model's name."""

    def __init__(self, app: ASGIApp, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = getattr(self.owner.state, "runtime", None)  # None until the lifespan has loaded the model
        if scope["type"] != "http" or runtime is None:
            await self.app(scope, receive, send)
            return
        name: str = runtime.encoder.info.name

        async def send_with_model(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[MODEL_HEADER] = name
            await send(message)

        await self.app(scope, receive, send_with_model)


def install_model_header(app: FastAPI) -> None:
    app.add_middleware(_ModelHeader, owner=app)
