from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    #: None while the user has no password: invited and not yet arrived, or reset by an
    #: administrator with a link. Nobody can sign in as them then.
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    is_active: Mapped[bool] = mapped_column(default=True)
    #: An administrator manages users (create, deactivate, reset a password). The first
    #: user, made from the environment or by `quarry create-user --admin`, is one.
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: Carried by every token issued to the user; raised when their password changes or is
    #: reset and when they are deactivated, so every token issued before answers 401.
    token_version: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    #: The sha256 (hex) of the one outstanding set-password link (an invitation or a reset),
    #: never the link itself; cleared when it is used or replaced.
    password_token_hash: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    password_token_expires_at: Mapped[datetime | None] = mapped_column(default=None)
