"""The one table from errors to HTTP answers: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index.errors import (
    IncompatibleStoreError,
    InvalidItemError,
    ItemNotFoundError,
    StorageUnavailableError,
    StoreError,
    StoreUnreachableError,
)
from models.errors import (
    InvalidImageError,
    InvalidOptionsError,
    ModelError,
    ModelLoadError,
    OverloadedError,
    ShuttingDownError,
)
from service.schemas import ErrorResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the HTTP layer itself refuses (wrong form fields, too many files, ...)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers


class BodyTooLargeError(Exception):
    """A request body passed its limit while streaming in; service/limits.py answers 413."""


# Most specific first: the first matching class wins.
ERROR_TABLE: list[tuple[type[Exception], int, str]] = [
    (ItemNotFoundError, 404, "not_found"),
    (InvalidItemError, 400, "invalid_input"),
    (InvalidImageError, 400, "invalid_image"),
    (InvalidOptionsError, 400, "invalid_input"),
    (OverloadedError, 429, "overloaded"),
    (StorageUnavailableError, 507, "storage_unavailable"),
    (StoreUnreachableError, 503, "store_unavailable"),
    (IncompatibleStoreError, 409, "incompatible_store"),
    (ShuttingDownError, 503, "shutting_down"),
    (ModelLoadError, 503, "model_unavailable"),
    (ModelError, 500, "model_error"),
    (StoreError, 500, "store_error"),
]


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# Documented on every route, so clients (and schemathesis) know the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("bad input: the message says what was wrong"),
    401: _documented("an API key is needed"),
    403: _documented("the API key is not valid"),
    404: _documented("no such item or route"),
    413: _documented("a file, the metadata or the request is over its size limit"),
    422: _documented("the request does not match the schema: the message says where"),
    429: _documented("the inference queue is full: retry after Retry-After seconds"),
    503: _documented(
        "shutting down, timed out, the model or the vector database is unavailable, or the feature is not enabled"
    ),
    507: _documented("the disk refused the write: nothing was stored"),
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_FILTER_VALUE = 'must be a string, a number, a boolean or {"in": [values]}'


def _describe_validation(exc: RequestValidationError) -> str:
    parts: list[str] = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        kind = error.get("type", "")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            parts.append(f"the body is not valid JSON ({reason} at character {loc[-1] if loc else '?'})")
            continue
        if loc == ("body",) and kind in ("model_attributes_type", "dict_type"):
            parts.append("the body must be a JSON object")
            continue
        if loc[:2] == ("body", "filter") and len(loc) > 2:
            # A union's error per member ("str: ...; int: ...") says less than one line per field.
            parts.append(f"filter.{loc[2]}: {_FILTER_VALUE}")
            continue
        where = ".".join(str(p) for p in loc if p not in ("body",))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(dict.fromkeys(parts)) or "the request is not valid"


_INTERNAL_ERROR = "the server failed to answer this request; see its log"


class _CatchAll:
    """Pure ASGI, innermost: turns an unexpected exception into the 500 body, logged once.

    Starlette's own handler for `Exception` sits outermost and re-raises after
    answering, so the server logged every traceback a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BodyTooLargeError:
            raise  # not a failure of ours: service/limits.py answers it
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await error_response(500, "internal_error", _INTERNAL_ERROR)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the table above, validation errors and Starlette's own HTTP errors."""

    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal_error", _INTERNAL_ERROR)

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        for cls, status, code in ERROR_TABLE:
            if isinstance(exc, cls):
                if status >= 500:
                    log.error("%s: %s", code, exc)
                headers = (
                    {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, OverloadedError) else None
                )
                return error_response(status, code, str(exc), headers)
        return await unexpected_error(request, exc)

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, str(exc), exc.headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "validation_error", _describe_validation(exc))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = str(exc.detail)
        # The multipart parser's own caps, set from LimitSettings well above the checks in the routes.
        if exc.status_code == 400 and detail.startswith("Part exceeded maximum size"):
            return error_response(413, "field_too_large", f"a form field is too large: {detail}")
        if exc.status_code == 400 and detail.startswith(("Too many files", "Too many fields")):
            return error_response(400, "too_many_parts", f"the form has too many parts: {detail}")
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return error_response(exc.status_code, code, detail, dict(exc.headers or {}) or None)

    app.add_exception_handler(Exception, unexpected_error)
    app.add_exception_handler(ModelError, domain_error)
    app.add_exception_handler(StoreError, domain_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(_CatchAll)
