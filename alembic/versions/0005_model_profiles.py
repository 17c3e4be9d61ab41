"""model profiles, and the usage that calibrates token estimates

- `model_profiles`: a project's named model profiles — provider, base URL, model, the *name*
  of the environment variable holding the API key (never the key), temperature, context
  window, output cap, limits (concurrency, RPM, TPM), prices, structured-output mode (and
  the one `auto` learned), timeout. Unique by name within a project; deleted with it.
- `llm_usage`: per profile (`profile:<id>`, or `env:<model>`), the characters and messages
  of the prompts sent and the prompt tokens the provider counted for them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_profiles",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("api_key_env", sa.String(length=200), nullable=True),
        sa.Column("temperature", sa.Double(), nullable=False),
        sa.Column("context_window", sa.Integer(), nullable=False),
        sa.Column("max_output_tokens", sa.Integer(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("price_input", sa.Double(), nullable=True),
        sa.Column("price_output", sa.Double(), nullable=True),
        sa.Column("output_mode", sa.String(length=16), nullable=False),
        sa.Column("learned_mode", sa.String(length=16), nullable=True),
        sa.Column("timeout_seconds", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_model_profiles_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_profiles")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_model_profiles_project_id_name")),
    )
    op.create_index(
        op.f("ix_model_profiles_project_id"), "model_profiles", ["project_id"], unique=False
    )
    op.create_table(
        "llm_usage",
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("prompt_chars", sa.BigInteger(), nullable=False),
        sa.Column("prompt_messages", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_llm_usage")),
    )


def downgrade() -> None:
    op.drop_table("llm_usage")
    op.drop_index(op.f("ix_model_profiles_project_id"), table_name="model_profiles")
    op.drop_table("model_profiles")
