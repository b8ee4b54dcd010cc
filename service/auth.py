"""API keys: `Authorization: Bearer <key>` on writes (and reads, when configured)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.deps import Runtime, RuntimeDep, runtime_of
from service.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="an API key, when the service is configured with keys")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authorize(keys: tuple[str, ...], credentials: HTTPAuthorizationCredentials | None) -> None:
    if not keys:
        return
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "this endpoint needs an API key: send the header Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = credentials.credentials.encode()
    # Compare with every key, each in constant time, so timing tells nothing.
    valid = False
    for key in keys:
        valid |= hmac.compare_digest(given, key.encode())
    if not valid:
        raise ApiError(403, "forbidden", "the API key is not valid")


async def require_write_key(runtime: RuntimeDep, credentials: Credentials) -> None:
    _authorize(runtime.api_keys, credentials)


def _authorize_read(runtime: Runtime, credentials: HTTPAuthorizationCredentials | None) -> None:
    if runtime.settings.auth.protect_reads:
        _authorize(runtime.api_keys, credentials)


async def require_read_key(runtime: RuntimeDep, credentials: Credentials) -> None:
    _authorize_read(runtime, credentials)


async def read_runtime(request: Request, credentials: Credentials) -> Runtime:
    """ReadKey and RuntimeDep in one dependency, for the search routes: FastAPI solves each
    dependency per request, and solving five (ReadKey, its two, the route's runtime) was the
    largest single part of a text search's event-loop time in cProfile (docs/benchmarks.md, section 6)."""
    runtime = runtime_of(request)
    _authorize_read(runtime, credentials)
    return runtime


# async: a plain `def` dependency would cost a thread hop per request (see service/deps.py).
WriteKey = Depends(require_write_key)
ReadKey = Depends(require_read_key)
ReadRuntime = Annotated[Runtime, Depends(read_runtime)]
