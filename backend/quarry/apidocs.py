"""The interactive API docs, /docs (Swagger UI) and /redoc, served without a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without internet
(a hospital network, a laptop on a train) they are blank. fastapi-offline ships those assets
in its package and serves them from this app under :data:`DOCS_ASSETS_URL`; its public
constructor builds the app with the same /docs, /redoc and /docs/oauth2-redirect routes
pointing at them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
#: Where the Swagger UI and ReDoc scripts, styles and favicon are served from.
DOCS_ASSETS_URL = "/docs-assets"


def create_documented_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc pages use only this server's own assets."""
    return FastAPIOffline(
        docs_url=DOCS_URL, redoc_url=REDOC_URL, static_url=DOCS_ASSETS_URL, **kwargs
    )


def docs_page_paths(app: FastAPI) -> list[str]:
    """The paths of the docs' HTML pages (FastAPI's own docs_url and redoc_url stay None:
    fastapi-offline serves the pages itself)."""
    return [DOCS_URL, REDOC_URL, *filter(None, [app.swagger_ui_oauth2_redirect_url])]
