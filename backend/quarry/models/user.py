from __future__ import annotations

from sqlalchemy import String, false
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    #: An administrator manages users (create, deactivate, reset a password). The first
    #: user, made from the environment or by `quarry create-user --admin`, is one.
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
