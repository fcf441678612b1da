"""``/docs`` (Swagger UI) and ``/redoc`` served from installed files, so they work offline.

FastAPI's own pages load their JavaScript and CSS from a CDN (and ReDoc its fonts from Google),
which leaves them blank on a machine without internet. The assets here come from the
``fastapi-offline`` wheel (Swagger UI, Apache-2.0; ReDoc, MIT; their licence headers stay in the
files) and are mounted under ``/docs-assets``; a Content-Security-Policy keeps the pages to this
origin.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-assets"
#: Nothing but this origin: a reference to another host (ReDoc's "powered by" logo sits on a CDN)
#: is blocked instead of hanging offline. The pages' own init scripts are inline; ReDoc's search
#: runs in a blob: worker.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)
_HIDE_REDOCLY_LOGO = "<style>a[href*='redocly'] img, a[href*='redoc.ly'] img { display: none; }</style></head>"


def _with_csp(page: HTMLResponse, extra_head: str = "") -> HTMLResponse:
    body = bytes(page.body).decode()
    if extra_head:
        body = body.replace("</head>", extra_head, 1)
    return HTMLResponse(body, headers={"Content-Security-Policy": CSP})


def install(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add the two pages and their assets; build the app with ``docs_url=None, redoc_url=None``."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        return _with_csp(page)

    @app.get(oauth2_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        return _with_csp(page, _HIDE_REDOCLY_LOGO)
