from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, Field, SecretStr, StringConstraints

from quarry.auth.schemas import UserOut
from quarry.models import User

Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=320)]
Password = Annotated[SecretStr, Field(description="At least 8 characters")]


class UserAdminOut(UserOut):
    """A user as administrators see them."""

    password_set: bool = Field(
        description="Whether the user has a password (false: invited, or reset with a link, "
        "and the link not used yet)"
    )
    password_link_expires_at: datetime | None = Field(
        description="When the user's outstanding set-password link stops working, if any"
    )

    @classmethod
    def of(cls, user: User) -> Self:
        return cls(
            id=user.id,
            email=user.email,
            is_active=user.is_active,
            is_admin=user.is_admin,
            created_at=user.created_at,
            password_set=user.password_hash is not None,
            password_link_expires_at=user.password_token_expires_at,
        )


class PasswordLinkOut(BaseModel):
    """A one-time set-password link: shown once, to the administrator who made it."""

    token: str = Field(description="The one-time token (shown only in this answer)")
    path: str = Field(
        description="Where the user sets their password: this path on the server's address, "
        "e.g. https://quarry.example.org/#/set-password?token=…"
    )
    expires_at: datetime


class UserWithLinkOut(UserAdminOut):
    password_link: PasswordLinkOut | None = Field(
        None,
        description="The set-password link to hand to the user (none when a password was given)",
    )


class UserCreate(BaseModel):
    email: Email
    is_admin: bool = False
    password: Password | None = Field(
        None,
        description="A first password. Leave it out to get a one-time set-password link "
        "instead (valid 7 days), so that no one but the user ever knows their password.",
    )


class UserUpdate(BaseModel):
    is_active: bool | None = Field(
        None, description="false: deactivate (their sessions end at once); true: reactivate"
    )
    is_admin: bool | None = None


class PasswordReset(BaseModel):
    password: Password | None = Field(
        None,
        description="A new password. Leave it out to get a one-time set-password link (valid "
        "24 hours). Either way the old password and every session stop working at once.",
    )


class PasswordChange(BaseModel):
    current_password: SecretStr
    new_password: Password


class PasswordSet(BaseModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="The token of a set-password link"
    )
    password: Password
