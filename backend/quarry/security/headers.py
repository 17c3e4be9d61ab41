"""Security headers on every response, and CORS only for the origins the operator lists.

The web UI is same-origin static files with no inline scripts or styles, so the policy can be
strict: everything from this origin only, images also from `data:`/`blob:` (previews),
no plugins, never framed (clickjacking), no `<base>` rewriting, forms post only here.

The interactive API docs are the exception. The /docs (Swagger UI) and /redoc pages load
their scripts and styles from this server (quarry/apidocs.py: fastapi-offline's packaged
assets, so nothing comes from a CDN) but start them with an inline script (Swagger UI), an
inline style (ReDoc) and, for ReDoc, a worker made from a `blob:`; so those two pages (and
Swagger's OAuth2 redirect page, an inline script too) get a policy that allows inline code
from this origin only. Hashes instead of 'unsafe-inline' would break whenever the boot
script changes with the OpenAPI URL, the root path or a FastAPI upgrade; the pages hold no
user content, so inline code there cannot be an injected script. Everything else —
framing, `<base>`, plugins, connections elsewhere — stays as strict as on every page.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data: blob:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
#: Only sent over HTTPS (uvicorn takes the scheme from the proxy's X-Forwarded-Proto).
HSTS = "max-age=31536000"
#: API answers hold private data: no shared or browser cache may keep them.
API_CACHE_CONTROL = "no-store"


class SecurityHeadersMiddleware:
    """Adds the headers above to every HTTP response, errors included.

    A header the route set itself (an SSE stream's Cache-Control) is left as it is.
    """

    def __init__(self, app: ASGIApp, *, docs_paths: Iterable[str], api_prefix: str) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        policy = (
            DOCS_CONTENT_SECURITY_POLICY if path in self.docs_paths else CONTENT_SECURITY_POLICY
        )
        https = scope.get("scheme") == "https"
        api = path.startswith(self.api_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", policy)
                for name, value in STATIC_HEADERS.items():
                    headers.setdefault(name, value)
                if https:
                    headers.setdefault("Strict-Transport-Security", HSTS)
                if api:
                    headers.setdefault("Cache-Control", API_CACHE_CONTROL)
            await send(message)

        await self.app(scope, receive, send_with_headers)
