"""evidence support: whether an extraction's quote supports its value

- `extractions.support`: `supported`, `unsupported` or `unchecked` (runs/support.py), null
  for extractions that did not succeed and for those stored before this revision (they were
  never checked; a re-run with `force_fresh` checks them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:30:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("extractions") as batch:
        batch.add_column(sa.Column("support", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("extractions") as batch:
        batch.drop_column("support")
