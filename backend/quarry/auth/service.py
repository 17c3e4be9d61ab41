"""Users, sign-in, passwords and the admin bootstrap.

A password exists only as an argon2id hash. A user can be without one (`password_hash` is
None): invited by an administrator, or reset by one, they get in with a one-time
set-password link. Every token carries the user's `token_version`; changing or resetting the
password, and deactivating the account, raise it, so every token issued before answers 401
on its next request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.auth import repository
from quarry.auth.passwords import password_hashing
from quarry.auth.tokens import issue_token, read_claims
from quarry.errors import BadRequest, Conflict, Unauthorized
from quarry.models import User
from quarry.models.base import utcnow
from quarry.settings import Settings

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8
#: argon2 would hash a megabyte as happily; a request body that size is not a password.
MAX_PASSWORD_LENGTH = 1024
#: How long a link stays good: an invitation waits for someone to read their messages; a
#: reset of a password someone forgot (or that leaked) should not linger.
INVITATION_VALID_FOR = timedelta(days=7)
RESET_VALID_FOR = timedelta(hours=24)

INVALID_LINK = (
    "This set-password link does not work any more: it was used already, has expired or was "
    "replaced by a newer one. Ask an administrator for a new link."
)
SESSION_ENDED = (
    "Your session has ended: your password was changed or reset, or your account was "
    "deactivated, since you signed in. Please sign in again."
)
DEACTIVATED = "This account has been deactivated. An administrator can reactivate it."


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_email(email: str) -> str:
    """The normalised address, or 400 saying it is not one."""
    email = normalise_email(email)
    if not _EMAIL.match(email) or len(email) > 320:
        raise BadRequest(f"'{email}' is not a valid email address.")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadRequest(f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.")


async def create_user(
    session: AsyncSession,
    settings: Settings,
    email: str,
    password: str | None,
    *,
    is_admin: bool = False,
) -> User:
    """A new active user, its password hashed with the configured parameters (in a thread).

    Without a password the user cannot sign in until they set one with a link
    (`new_password_link`)."""
    email = check_email(email)
    if password is not None:
        check_password(password)
    if await repository.get_user_by_email(session, email) is not None:
        raise Conflict(f"A user with email {email} already exists.")
    password_hash = await password_hashing(settings).hash(password) if password else None
    user = User(email=email, password_hash=password_hash, is_admin=is_admin)
    session.add(user)
    await session.flush()
    return user


async def has_active_admin(session: AsyncSession) -> bool:
    return await repository.count_active_admins(session) > 0


async def ensure_admin(session: AsyncSession, settings: Settings) -> User | None:
    """Create the administrator named by QUARRY_ADMIN_EMAIL / _PASSWORD if it does not exist
    yet (an existing user of that email is made an administrator)."""
    if not settings.admin_email or not settings.admin_password:
        return None
    existing = await repository.get_user_by_email(session, normalise_email(settings.admin_email))
    if existing is not None:
        if not existing.is_admin:
            existing.is_admin = True
            await session.flush()
        return existing
    return await create_user(
        session,
        settings,
        settings.admin_email,
        settings.admin_password.get_secret_value(),
        is_admin=True,
    )


class SignInFailed(Unauthorized):
    """Wrong email, wrong password or a deactivated account: one answer for all three.

    `user_id` (the account aimed at, if it exists) and `reason` are for the audit log only.
    """

    def __init__(self, user_id: uuid.UUID | None, reason: str) -> None:
        super().__init__("Incorrect email or password.")
        self.user_id = user_id
        self.reason = reason


def access_token(settings: Settings, user: User) -> tuple[str, datetime]:
    """A fresh bearer token for `user` and when it expires."""
    return issue_token(
        user.id,
        settings.signing_key(),
        timedelta(minutes=settings.token_expire_minutes),
        version=user.token_version,
    )


async def sign_in(
    session: AsyncSession, settings: Settings, email: str, password: str
) -> tuple[User, str, datetime]:
    """The user and a fresh token for them; `SignInFailed` (a 401) otherwise.

    A password hash made with other parameters than the configured ones (older, weaker
    defaults) is re-made with the configured ones, now that the password is known.
    """
    hashing = password_hashing(settings)
    user = await repository.get_user_by_email(session, normalise_email(email))
    # A user without a password is verified against the dummy hash: as slow, never a match.
    ok = await hashing.verify(user.password_hash if user else None, password)
    if user is None:
        raise SignInFailed(None, "unknown_email")
    if user.password_hash is None:
        raise SignInFailed(user.id, "no_password")
    if not ok:
        raise SignInFailed(user.id, "wrong_password")
    if not user.is_active:
        raise SignInFailed(user.id, "inactive_user")
    if hashing.needs_rehash(user.password_hash):
        user.password_hash = await hashing.hash(password)
        await session.flush()
    token, expires_at = access_token(settings, user)
    return user, token, expires_at


async def user_for_token(session: AsyncSession, settings: Settings, token: str) -> User:
    """The active user a token names, issued since their last password change; else 401."""
    claims = read_claims(token, settings.signing_key())
    user = await repository.get_user(session, claims.user_id) if claims else None
    if claims is None or user is None:
        raise Unauthorized()
    # Only a token we signed gets this far, so saying why it ended tells its holder nothing
    # they could not have learnt by signing in.
    if not user.is_active:
        raise Unauthorized(DEACTIVATED)
    if claims.version != user.token_version:
        raise Unauthorized(SESSION_ENDED)
    return user


def end_sessions(user: User) -> None:
    """Make every token issued to `user` so far answer 401 (flushed by the caller)."""
    user.token_version += 1


async def set_password(
    session: AsyncSession, settings: Settings, user: User, password: str
) -> None:
    """Give `user` a new password; their other sessions end and any set-password link
    stops working."""
    check_password(password)
    user.password_hash = await password_hashing(settings).hash(password)
    user.password_token_hash = None
    user.password_token_expires_at = None
    end_sessions(user)
    await session.flush()


def _hash_link_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def new_password_link(
    session: AsyncSession, user: User, valid_for: timedelta
) -> tuple[str, datetime]:
    """A one-time set-password token for `user` (replacing any earlier one) and its expiry.

    Only its sha256 is stored: the token itself is in the answer to the administrator who
    asked, once, and nowhere else. 32 random bytes: a lookup by its hash needs no
    constant-time comparison, guessing one is hopeless."""
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + valid_for
    user.password_token_hash = _hash_link_token(token)
    user.password_token_expires_at = expires_at
    await session.flush()
    return token, expires_at


async def set_password_with_link(
    session: AsyncSession, settings: Settings, token: str, password: str
) -> User:
    """Set the password of the user a set-password link belongs to and use the link up."""
    check_password(password)
    user = await repository.get_user_by_password_token(session, _hash_link_token(token))
    if (
        user is None
        or not user.is_active
        or user.password_token_expires_at is None
        or user.password_token_expires_at <= utcnow()
    ):
        raise BadRequest(INVALID_LINK)
    await set_password(session, settings, user, password)
    return user


async def change_own_password(
    session: AsyncSession, settings: Settings, user: User, current: str, new: str
) -> tuple[str, datetime]:
    """Change a signed-in user's password, given the current one; a fresh token for this
    session comes back (every other session ends)."""
    if not await password_hashing(settings).verify(user.password_hash, current):
        raise BadRequest("The current password is not right; your password was not changed.")
    if current == new:
        raise BadRequest("The new password is the same as the current one.")
    await set_password(session, settings, user, new)
    return access_token(settings, user)
