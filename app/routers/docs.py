"""``/docs``: the OpenAPI page, working with no network.

FastAPI's default page loads Swagger UI from a CDN, at a floating version, with no
integrity check: blank on an offline host, and whatever the CDN serves on a connected
one. Here the assets come from a pinned, maintained package (``fastapi-offline``) and
are served by this process under ``/docs/assets``; the page's one script is a file
(``static/docs.js``), so the Content-Security-Policy needs no inline exceptions.
"""
from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)
SWAGGER_ASSETS = str(files("fastapi_offline") / "static")
ASSETS_URL = "/docs/assets"
PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>poseserve - API docs</title>
<link rel="icon" href="{ASSETS_URL}/favicon.png">
<link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return HTMLResponse(PAGE)


def assets() -> StaticFiles:
    """The Swagger UI bundle, mounted at ``ASSETS_URL`` by ``app.main``."""
    return StaticFiles(directory=SWAGGER_ASSETS)
