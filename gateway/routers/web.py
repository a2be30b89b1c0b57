"""The web app at `/` and the API docs (`/docs` Swagger UI, `/redoc` ReDoc), all from local files.

WHY local: reviewers run this on closed networks; a page or a docs viewer that loads its scripts from a
CDN is blank there. The app's files live in `gateway/static/` (served at `/static/`), the docs viewers'
bundles come from the `fastapi-offline` package (served at `/docs-assets/`); nothing is fetched from
outside. The app uses the public API exactly as a frontend would (POST /v1/jobs, poll, result, evidence,
report), with the key the user types.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(tags=["web"])
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon.png",
    )


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url="/docs-assets/redoc.standalone.js",
        redoc_favicon_url="/docs-assets/favicon.png",
        with_google_fonts=False,
    )


def mount_static(app: FastAPI) -> None:
    """The app's own files and the docs viewers' bundles (outside the OpenAPI schema)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
