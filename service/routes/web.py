"""The search page and the API docs: static files, served by the app itself (no CDN, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Swagger UI's own dist files (swagger-ui-bundle-v2, Apache-2.0): /docs works on a host without network.
SWAGGER_UI_DIR = Path(str(swagger_ui_path))
DOCS_ASSETS = "/docs-assets"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, its script and style from this server (FastAPI's own recipe)."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="clipsearch API",
        swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
        # No request to the public validator either.
        swagger_ui_parameters={"validatorUrl": None},
    )
