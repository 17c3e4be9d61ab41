"""JWT bearer tokens: HS256 pinned, `exp` required."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"


def issue_token(user_id: uuid.UUID, key: str, expires_in: timedelta) -> tuple[str, datetime]:
    expires_at = datetime.now(UTC) + expires_in
    payload = {"sub": str(user_id), "exp": expires_at, "iat": datetime.now(UTC), "typ": "access"}
    return jwt.encode(payload, key, algorithm=ALGORITHM), expires_at


def read_token(token: str, key: str) -> uuid.UUID | None:
    """The user id a valid token names, or None for anything expired, forged or malformed."""
    try:
        payload = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
        return uuid.UUID(str(payload["sub"]))
    except (jwt.PyJWTError, ValueError):
        return None
