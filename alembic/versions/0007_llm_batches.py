"""batch mode: provider batches a run's calls were submitted as

- `llm_batches`: per provider batch of a run — the provider's batch and file ids, its status
  and request counts as last polled, who polls it and when next (backoff), its tasks' lease
  deadline, the tokens of its answers ingested (billed at the batch price), and when it was
  ingested. Deleted with its run.
- `model_profiles.batch` (submit a run's calls as provider batches) and
  `model_profiles.batch_discount` (the share of the price batch calls are not billed; 0.5).

One table and two profile columns.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_batch_id", sa.String(length=200), nullable=True),
        sa.Column("input_file_id", sa.String(length=200), nullable=True),
        sa.Column("output_file_id", sa.String(length=200), nullable=True),
        sa.Column("error_file_id", sa.String(length=200), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("completed_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.BigInteger(), nullable=False),
        sa.Column("tokens_out", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("poll_owner", sa.String(length=64), nullable=True),
        sa.Column("poll_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("poll_interval", sa.Double(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_llm_batches_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_batches")),
    )
    op.create_index("ix_llm_batches_run_id", "llm_batches", ["run_id"], unique=False)
    with op.batch_alter_table("model_profiles") as batch:
        batch.add_column(
            sa.Column("batch", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("batch_discount", sa.Double(), nullable=False, server_default="0.5")
        )


def downgrade() -> None:
    with op.batch_alter_table("model_profiles") as batch:
        batch.drop_column("batch_discount")
        batch.drop_column("batch")
    op.drop_index("ix_llm_batches_run_id", table_name="llm_batches")
    op.drop_table("llm_batches")
