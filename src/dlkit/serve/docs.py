"""/docs (Swagger UI) and /redoc (ReDoc) from files served by the app itself, so they work on a machine offline.

FastAPI's own pages load their scripts from a CDN and are blank without internet; FastAPI documents self-hosting
them (docs_url=None, then get_swagger_ui_html / get_redoc_html pointed at local files). The files come from the
fastapi-offline package (a serve extra), which ships Swagger UI's and ReDoc's builds.
"""
from __future__ import annotations

from importlib import resources

from fastapi import Request  # at module level: FastAPI resolves the endpoints' annotations from here
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response

ASSETS = "/docs-assets"
ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
               "redoc.standalone.js": "text/javascript; charset=utf-8", "favicon.png": "image/png"}


def add_offline_docs(app) -> None:
    """GET /docs, /docs/oauth2-redirect and /redoc on an app made with docs_url=None and redoc_url=None, their
    scripts under /docs-assets/; a page that names nothing outside this server."""
    folder = resources.files("fastapi_offline").joinpath("static")
    for name, kind in ASSET_TYPES.items():  # four fixed files, read once: no request names a file
        app.add_api_route(f"{ASSETS}/{name}", _file(folder.joinpath(name).read_bytes(), kind), methods=["GET"],
                          include_in_schema=False)
    redirect = "/docs/oauth2-redirect"

    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        # validatorUrl None: Swagger UI would otherwise send the spec to its online validator for a badge
        return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=root + redirect,
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None})

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=root + app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS}/favicon.png", with_google_fonts=False)

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_api_route("/docs", swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route(redirect, oauth2_redirect, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


def _file(body: bytes, kind: str):
    async def serve_file():
        # a day's cache: the files change only with the installed package
        return Response(body, media_type=kind, headers={"Cache-Control": "max-age=86400"})
    return serve_file
