"""JWT bearer tokens: HS256 pinned, `exp` required, and the user's token version (`ver`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: uuid.UUID
    #: The user's `token_version` when the token was issued (0 for tokens that predate it).
    version: int


def issue_token(
    user_id: uuid.UUID, key: str, expires_in: timedelta, version: int = 0
) -> tuple[str, datetime]:
    now = datetime.now(UTC)
    expires_at = now + expires_in
    payload = {
        "sub": str(user_id),
        "exp": expires_at,
        "iat": now,
        "typ": "access",
        "ver": version,
    }
    return jwt.encode(payload, key, algorithm=ALGORITHM), expires_at


def read_claims(token: str, key: str) -> TokenClaims | None:
    """What a valid token says, or None for anything expired, forged or malformed."""
    try:
        payload = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
        version = payload.get("ver", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            return None
        return TokenClaims(uuid.UUID(str(payload["sub"])), version)
    except (jwt.PyJWTError, ValueError):
        return None


def read_token(token: str, key: str) -> uuid.UUID | None:
    """The user id a valid token names, or None for anything expired, forged or malformed."""
    claims = read_claims(token, key)
    return claims.user_id if claims else None
