"""Security headers on every response, and CORS only for the origins the operator lists.

The web UI is same-origin static files with no inline scripts or styles, so the policy can be
strict: everything from this origin only, images also from `data:`/`blob:` (previews),
no plugins, never framed (clickjacking), no `<base>` rewriting, forms post only here.

The interactive API docs are the exception. FastAPI's /docs (Swagger UI) and /redoc pages
load their script and styles from a CDN and start them with an inline script, so those two
pages (and Swagger's OAuth2 redirect page) get a policy that allows exactly that CDN and
inline code. The pages hold no user content, so inline code there cannot be an injected
script; everything else — framing, `<base>`, plugins — stays as strict as elsewhere. The
alternative, self-hosting the Swagger assets, would mean vendoring a JavaScript bundle.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_DOCS_CDN = "https://cdn.jsdelivr.net"
DOCS_CONTENT_SECURITY_POLICY = (
    f"default-src 'self'; script-src 'self' 'unsafe-inline' {_DOCS_CDN}; "
    f"style-src 'self' 'unsafe-inline' {_DOCS_CDN} https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com; "
    "img-src 'self' data: blob: https://fastapi.tiangolo.com; "
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
