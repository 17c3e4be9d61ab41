"""The static web UI, served at `/`: a thin client of the public API (DESIGN §7).

The UI is plain files under `static/` (HTML, ES modules, CSS) with no build step. It routes with
the URL hash (`#/projects/…`), so `/` is its only page; `/static` serves its files.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.staticfiles import PathLike
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"

# Browsers refuse ES modules served with a non-JavaScript type, and `mimetypes` reads the
# machine's tables (a Windows registry entry, or an old /etc/mime.types, can say text/plain).
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("image/svg+xml", ".svg")

# The page and its modules are small; revalidating each load means an upgrade is seen at once
# (StaticFiles answers 304 from its ETag when nothing changed).
NO_CACHE = {"Cache-Control": "no-cache"}


class _RevalidatedStaticFiles(StaticFiles):
    """StaticFiles whose answers say `Cache-Control: no-cache` (revalidate with the ETag)."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def mount_web(app: FastAPI) -> None:
    if (STATIC_DIR / "index.html").exists():
        app.mount("/static", _RevalidatedStaticFiles(directory=STATIC_DIR), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)

    else:

        @app.get("/", include_in_schema=False)
        async def index_redirect() -> RedirectResponse:
            return RedirectResponse("/docs")
