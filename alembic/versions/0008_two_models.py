"""two models, one answer: a run may ask every pair of two profiles and compare them

- `extractions.slot`: which of the run's profiles a task asks (0: the first or only one;
  1: the second profile of a two-profile run, whose pair p has the rows seq 2p and 2p + 1).
- `extractions.agreement`: on a two-profile run's first-profile row, whether the two
  answers agree (`agree`, `disagree`, `one_missing`); null elsewhere, so the partial index
  `ix_extractions_agreement` (run, variable, agreement) holds only such rows.
- `runs.profile_count` (1 or 2) and `runs.second_tokens_in` / `second_tokens_out` (the
  second profile's share of the run's tokens, priced at its own price).

Existing rows are single-profile: slot 0, no agreement, one profile, no second tokens.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 18:30:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("extractions") as batch:
        batch.add_column(
            sa.Column("slot", sa.SmallInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("agreement", sa.String(length=16), nullable=True))
    op.create_index(
        "ix_extractions_agreement",
        "extractions",
        ["run_id", "variable_id", "agreement"],
        unique=False,
        sqlite_where=sa.text("agreement IS NOT NULL"),
        postgresql_where=sa.text("agreement IS NOT NULL"),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("profile_count", sa.Integer(), nullable=False, server_default="1")
        )
        batch.add_column(
            sa.Column("second_tokens_in", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("second_tokens_out", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("second_tokens_out")
        batch.drop_column("second_tokens_in")
        batch.drop_column("profile_count")
    op.drop_index("ix_extractions_agreement", table_name="extractions")
    with op.batch_alter_table("extractions") as batch:
        batch.drop_column("agreement")
        batch.drop_column("slot")
