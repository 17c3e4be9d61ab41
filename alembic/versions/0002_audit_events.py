"""audit events

The `audit_events` table (quarry.models.audit_events): sign-ins, failed sign-ins, deletions
and exports, each with the acting user, the target, the client IP and the request id.
`user_id` and `target_id` have no foreign keys on purpose — the record of who deleted what
must outlive both the user and the object.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:30:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=True),
        sa.Column("target_id", sa.Uuid(), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    # A user reads their own events, newest first.
    op.create_index(
        op.f("ix_audit_events_user_id_created_at"), "audit_events", ["user_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("audit_events")
