"""user administration: set-password links, tokens that a password change ends; project audit

- `users.password_hash` may be NULL: a user invited with a one-time link (or whose password
  an administrator reset with one) has no password until they set theirs.
- `users.token_version`: carried by every token; raised on a password change or reset and on
  deactivation, so tokens issued before answer 401.
- `users.password_token_hash` / `password_token_expires_at`: the sha256 of the user's one
  outstanding set-password link (never the link) and when it stops working.
- `audit_events.project_id`: the project an audited action was taken in, so that a project's
  owner can read its events (`ix_audit_events_project_id_created_at`);
  `ix_audit_events_action_created_at` for administrators reading the `user.*` events.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 14:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.alter_column("password_hash", existing_type=sa.String(length=255), nullable=True)
        batch.add_column(
            sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("password_token_hash", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("password_token_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_unique_constraint(
            batch.f("uq_users_password_token_hash"), ["password_token_hash"]
        )
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("project_id", sa.Uuid(), nullable=True))
    op.create_index(
        "ix_audit_events_project_id_created_at",
        "audit_events",
        ["project_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_audit_events_action_created_at",
        "audit_events",
        ["action", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_action_created_at", table_name="audit_events")
    op.drop_index("ix_audit_events_project_id_created_at", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("project_id")
    users = sa.table("users", sa.column("password_hash", sa.String(length=255)))
    # A user without a password keeps having none: an unusable hash, not an empty one.
    op.execute(users.update().where(users.c.password_hash.is_(None)).values(password_hash="!"))
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(batch.f("uq_users_password_token_hash"), type_="unique")
        batch.drop_column("password_token_expires_at")
        batch.drop_column("password_token_hash")
        batch.drop_column("token_version")
        batch.alter_column("password_hash", existing_type=sa.String(length=255), nullable=False)
