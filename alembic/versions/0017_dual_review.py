"""dual review: review modes, reviewer assignments, independent verdicts and adjudications

- `projects.review_mode` (single | dual), `projects.review_blind` (dual review: reviewers
  see the model's value only once they have reviewed a cell), `projects.adjudicator_id`
  (who besides the owner resolves conflicts; cleared when that user is deleted).
- `reviews.kind`: single (every review so far), independent (one of a document's two
  assigned reviewers, dual review) or adjudication (a conflict's resolution).
- `review_assignments`: a document's reviewer A (slot 1) and B (slot 2); one reviewer per
  slot, two different people per document; deleted with the project, document or user.

Revision ID: 0017
Revises: 0012
Create Date: 2026-12-03 14:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0017"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("review_mode", sa.String(length=8), server_default="single", nullable=False)
        )
        batch.add_column(
            sa.Column("review_blind", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("adjudicator_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_projects_adjudicator_id_users"),
            "users",
            ["adjudicator_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), server_default="single", nullable=False)
        )
    op.create_table(
        "review_assignments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("reviewer_id", sa.Uuid(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("assigned_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_review_assignments_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_review_assignments_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"],
            ["users.id"],
            name=op.f("fk_review_assignments_reviewer_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["assigned_by"],
            ["users.id"],
            name=op.f("fk_review_assignments_assigned_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_assignments")),
        sa.UniqueConstraint(
            "document_id", "slot", name=op.f("uq_review_assignments_document_id_slot")
        ),
        sa.UniqueConstraint(
            "document_id",
            "reviewer_id",
            name=op.f("uq_review_assignments_document_id_reviewer_id"),
        ),
    )
    op.create_index(
        "ix_review_assignments_project_id_reviewer_id",
        "review_assignments",
        ["project_id", "reviewer_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_review_assignments_project_id_reviewer_id", table_name="review_assignments"
    )
    op.drop_table("review_assignments")
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("projects") as batch:
        batch.drop_constraint(op.f("fk_projects_adjudicator_id_users"), type_="foreignkey")
        batch.drop_column("adjudicator_id")
        batch.drop_column("review_blind")
        batch.drop_column("review_mode")
