"""reference lists, matching, cases and consistency findings

- `reference_lists` (named, per project), `reference_list_versions` (one per upload: a
  replacement adds a version, old ones are kept so old matches stay explainable) and
  `reference_rows` (a version's rows: row number in the uploaded sheet, cells as JSON).
- `variables.match` (matching its value to a list), `variables.combine` (how a case combines
  it), `variables.checks` (consistency checks); `projects.case_key`.
- `extractions.match_status`, `match_key`, `match_score`, `match_candidates`,
  `match_list_version_id`: the automatic match of the extraction's value.
- `match_reviews`: a reviewer's choice of row (history kept, newest wins).
- `finding_resolutions`: a reviewer's resolution of a consistency finding.

Existing rows have no match, no case key and no checks: nothing changes for them.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-03 09:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reference_lists",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("current_version_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_reference_lists_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_lists")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_reference_lists_project_id_name")),
    )
    op.create_index(
        op.f("ix_reference_lists_project_id"), "reference_lists", ["project_id"], unique=False
    )
    op.create_table(
        "reference_list_versions",
        sa.Column("list_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["reference_lists.id"],
            name=op.f("fk_reference_list_versions_list_id_reference_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_list_versions")),
        sa.UniqueConstraint(
            "list_id", "version", name=op.f("uq_reference_list_versions_list_id_version")
        ),
    )
    op.create_table(
        "reference_rows",
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["reference_list_versions.id"],
            name=op.f("fk_reference_rows_version_id_reference_list_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "row_number", name=op.f("pk_reference_rows")),
    )
    op.create_table(
        "match_reviews",
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("variable_id", sa.Uuid(), nullable=False),
        sa.Column("extraction_id", sa.Uuid(), nullable=True),
        sa.Column("list_version_id", sa.Uuid(), nullable=True),
        sa.Column("key", sa.String(length=500), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reviewer_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_match_reviews_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"],
            ["users.id"],
            name=op.f("fk_match_reviews_reviewer_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["variable_id"],
            ["variables.id"],
            name=op.f("fk_match_reviews_variable_id_variables"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_reviews")),
    )
    op.create_index(
        "ix_match_reviews_document_id_variable_id",
        "match_reviews",
        ["document_id", "variable_id"],
        unique=False,
    )
    op.create_table(
        "finding_resolutions",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("finding_id", sa.String(length=64), nullable=False),
        sa.Column("values_digest", sa.String(length=64), nullable=False),
        sa.Column("resolution", sa.String(length=16), nullable=False),
        sa.Column("value", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reviewer_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_finding_resolutions_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"],
            ["users.id"],
            name=op.f("fk_finding_resolutions_reviewer_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_finding_resolutions")),
    )
    op.create_index(
        "ix_finding_resolutions_project_id_finding_id",
        "finding_resolutions",
        ["project_id", "finding_id"],
        unique=False,
    )
    with op.batch_alter_table("variables") as batch:
        batch.add_column(sa.Column("match", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("combine", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("checks", sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("case_key", sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table("extractions") as batch:
        batch.add_column(sa.Column("match_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("match_key", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("match_score", sa.Double(), nullable=True))
        batch.add_column(sa.Column("match_candidates", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("match_list_version_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("extractions") as batch:
        for column in (
            "match_list_version_id",
            "match_candidates",
            "match_score",
            "match_key",
            "match_status",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("case_key")
    with op.batch_alter_table("variables") as batch:
        batch.drop_column("checks")
        batch.drop_column("combine")
        batch.drop_column("match")
    op.drop_index("ix_finding_resolutions_project_id_finding_id", table_name="finding_resolutions")
    op.drop_table("finding_resolutions")
    op.drop_index("ix_match_reviews_document_id_variable_id", table_name="match_reviews")
    op.drop_table("match_reviews")
    op.drop_table("reference_rows")
    op.drop_table("reference_list_versions")
    op.drop_index(op.f("ix_reference_lists_project_id"), table_name="reference_lists")
    op.drop_table("reference_lists")
