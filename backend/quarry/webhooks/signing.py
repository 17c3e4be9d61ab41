"""The `Quarry-Signature` header: HMAC-SHA256 over the timestamp and the body.

    Quarry-Signature: t=1767225600,v1=5257a869e7ec…8d8bd  (64 hex digits)

`v1` is the hex HMAC-SHA256, keyed with the webhook's secret, of `f"{t}.".encode() + body`
(the raw bytes of the request body). `t` is when the attempt was signed (Unix seconds): a
receiver that refuses signatures older than a few minutes cannot be fed a recorded request
again, and one that remembers `Quarry-Delivery` ids drops the repeats of at-least-once
delivery. README "Webhooks" has the receiver's side.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Quarry-Signature"
#: How old a signature a receiver should still accept (the README's snippet uses it).
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for `body`, signed now (or at `timestamp`)."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},v1={signature(secret, moment, body)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `header` signs `body` with `secret` and is at most `tolerance` seconds old."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        moment = int(parts["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - moment) > tolerance:
        return False
    expected = signature(secret, moment, body)
    return hmac.compare_digest(expected, parts.get("v1", ""))
