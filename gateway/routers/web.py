"""The web app at `/` and the API docs (`/docs` Swagger UI, `/redoc` ReDoc), all from local files.

WHY local: reviewers run this on closed networks; a page or a docs viewer that loads its scripts from a
CDN is blank there. The app's files live in `gateway/static/` (served at `/static/`), the docs viewers'
bundles come from the `fastapi-offline` package (served at `/docs-assets/`); nothing is fetched from
outside. The app uses the public API exactly as a frontend would (POST /v1/jobs, poll, result, evidence,
report), with the key the user types.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway import openapi
from gateway.dependencies import BaseUrl

router = APIRouter(tags=["web"])
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


ASSETS = "/docs-assets/"
# The one thing the ReDoc bundle fetches from outside: its footer logo, from Redocly's CDN. Served with
# that URL pointing at our own icon, so opening the docs contacts no other host.
REDOC_CDN_LOGO = 'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    text = (DOCS_ASSETS_DIR / "redoc.standalone.js").read_text(encoding="utf-8")
    return text.replace(REDOC_CDN_LOGO, f'src:"{ASSETS}favicon.png"').encode("utf-8")


@router.get(ASSETS + "redoc.standalone.js", include_in_schema=False)
async def redoc_bundle() -> Response:
    return Response(_redoc_bundle(), media_type="text/javascript")


OPENAPI_URL = "/openapi.json"


@router.get(OPENAPI_URL, include_in_schema=False)
async def openapi_json(request: Request, base: BaseUrl) -> JSONResponse:
    """The OpenAPI document; its `servers` is the gateway's public URL, or the one this request used."""
    return JSONResponse(openapi.for_server(request.app, base))


def _title(request: Request, viewer: str) -> str:
    return f"{request.app.title} - {viewer}"


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=_title(request, "Swagger UI"),
        swagger_js_url=ASSETS + "swagger-ui-bundle.js",
        swagger_css_url=ASSETS + "swagger-ui.css",
        swagger_favicon_url=ASSETS + "favicon.png",
    )


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    icon, js = ASSETS + "favicon.png", ASSETS + "redoc.standalone.js"
    return get_redoc_html(
        openapi_url=OPENAPI_URL,
        title=_title(request, "ReDoc"),
        redoc_js_url=js,
        redoc_favicon_url=icon,
        with_google_fonts=False,
    )


def mount_static(app: FastAPI) -> None:
    """The app's own files and the docs viewers' bundles (outside the OpenAPI schema)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
