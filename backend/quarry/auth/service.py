"""Users, sign-in and the admin bootstrap."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.auth import repository
from quarry.auth.passwords import password_hashing
from quarry.auth.tokens import issue_token, read_token
from quarry.errors import BadRequest, Conflict, Unauthorized
from quarry.models import User
from quarry.settings import Settings

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def create_user(
    session: AsyncSession, settings: Settings, email: str, password: str, *, is_admin: bool = False
) -> User:
    """A new active user, its password hashed with the configured parameters (in a thread)."""
    email = normalise_email(email)
    if not _EMAIL.match(email) or len(email) > 320:
        raise BadRequest(f"'{email}' is not a valid email address.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.")
    if await repository.get_user_by_email(session, email) is not None:
        raise Conflict(f"A user with email {email} already exists.")
    password_hash = await password_hashing(settings).hash(password)
    user = User(email=email, password_hash=password_hash, is_admin=is_admin)
    session.add(user)
    await session.flush()
    return user


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


async def sign_in(
    session: AsyncSession, settings: Settings, email: str, password: str
) -> tuple[User, str, datetime]:
    """The user and a fresh token for them; `SignInFailed` (a 401) otherwise.

    A password hash made with other parameters than the configured ones (older, weaker
    defaults) is re-made with the configured ones, now that the password is known.
    """
    hashing = password_hashing(settings)
    user = await repository.get_user_by_email(session, normalise_email(email))
    ok = await hashing.verify(user.password_hash if user else None, password)
    if user is None:
        raise SignInFailed(None, "unknown_email")
    if not ok:
        raise SignInFailed(user.id, "wrong_password")
    if not user.is_active:
        raise SignInFailed(user.id, "inactive_user")
    if hashing.needs_rehash(user.password_hash):
        user.password_hash = await hashing.hash(password)
        await session.flush()
    token, expires_at = issue_token(
        user.id, settings.signing_key(), timedelta(minutes=settings.token_expire_minutes)
    )
    return user, token, expires_at


async def user_for_token(session: AsyncSession, settings: Settings, token: str) -> User:
    user_id = read_token(token, settings.signing_key())
    user = await repository.get_user(session, user_id) if user_id else None
    if user is None or not user.is_active:
        raise Unauthorized()
    return user
