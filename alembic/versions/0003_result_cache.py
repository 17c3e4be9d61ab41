"""result cache, sent pages, grounding method; run token totals derived from the tasks

- `extractions.cache_key`: what determines an answer (the document's content, the rendered
  prompt, the model and its settings), hashed, so a later run can reuse the answer instead of
  calling the model again; indexed for that lookup.
- `extractions.pages_sent`: the page numbers whose text the model was shown (all of them for
  a document within the context budget; the chosen chunks' pages otherwise).
- `extractions.grounding_method` / `grounding_score`: how the evidence quote was found
  (exact, normalised, fuzzy) and how similar quote and span are.
- `runs.tokens_in` / `runs.tokens_out` are dropped: a run's totals are the sum over its task
  rows (a counter on the run row was one hot row every task had to update).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("extractions") as batch:
        batch.add_column(sa.Column("cache_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("pages_sent", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("grounding_method", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("grounding_score", sa.Double(), nullable=True))
        batch.create_index(batch.f("ix_extractions_cache_key"), ["cache_key"])
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("tokens_in")
        batch.drop_column("tokens_out")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("tokens_out", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("tokens_in", sa.BigInteger(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("extractions") as batch:
        batch.drop_index(batch.f("ix_extractions_cache_key"))
        batch.drop_column("grounding_score")
        batch.drop_column("grounding_method")
        batch.drop_column("pages_sent")
        batch.drop_column("cache_key")
