"""the database is the queue: run plans, counters on the run, lean task rows, leases

- `run_documents` / `run_variables`: what a run is over, in order. A run's task rows are
  created from them with set-based SQL, the pair (document d, variable v) numbered
  `seq = d × variable_count + v`.
- `runs`: a `preparing` status (task rows still being created), the plan's size and how much
  of it has rows (`document_count`, `variable_count`, `documents_prepared`, `task_count`), counts of the
  task rows per status and token sums kept by the lifecycle transitions (one row to read for
  a run's progress), the budget as a column of its own with what is reserved against it, a
  `stop_reason` (the budget was reached: no new task starts), and the lease of whoever is
  creating the task rows.
- `extractions`: `seq`; `reserved_usd`; no foreign keys (their checks halved the rate at
  which a run's rows can be created; parents' deletions remove their task rows explicitly);
  the indexes that only some statuses use are partial (pending: the work list; running: by
  lease expiry; failed/cancelled: a retry; a cache key once there is one).
- `documents`: a lease for the parse and a count of the parses started.
- `reviews.extraction_id` is indexed (deleting extractions looks reviews up by it).

Existing rows are carried over: plans, sequence numbers and counters are computed from the
task rows they already have, and a budget moves from the settings JSON to its column.
(Offline, `alembic upgrade --sql` emits the schema changes only: the carry-over reads rows.)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 02:00:00.000000

"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTERS = (
    "pending_count",
    "running_count",
    "succeeded_count",
    "not_found_count",
    "failed_count",
    "cancelled_count",
    "tokens_in",
    "tokens_out",
)
_EXTRACTION_FKS = (
    ("fk_extractions_run_id_runs", ["run_id"], "runs"),
    ("fk_extractions_document_id_documents", ["document_id"], "documents"),
    ("fk_extractions_variable_id_variables", ["variable_id"], "variables"),
    ("fk_extractions_prompt_version_id_prompt_versions", ["prompt_version_id"], "prompt_versions"),
)


def upgrade() -> None:
    op.create_table(
        "run_documents",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("ordinal", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_documents_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_run_documents_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "ordinal", name=op.f("pk_run_documents")),
    )
    op.create_index(op.f("ix_run_documents_document_id"), "run_documents", ["document_id"])
    op.create_table(
        "run_variables",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("ordinal", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("variable_id", sa.Uuid(), nullable=False),
        sa.Column("prompt_version_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_variables_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["variable_id"],
            ["variables.id"],
            name=op.f("fk_run_variables_variable_id_variables"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_version_id"],
            ["prompt_versions.id"],
            name=op.f("fk_run_variables_prompt_version_id_prompt_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "ordinal", name=op.f("pk_run_variables")),
    )
    op.create_index(op.f("ix_run_variables_variable_id"), "run_variables", ["variable_id"])

    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("stop_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("budget_usd", sa.Double(), nullable=True))
        batch.add_column(sa.Column("reserved_usd", sa.Double(), server_default="0", nullable=False))
        for column in ("document_count", "variable_count", "documents_prepared"):
            batch.add_column(sa.Column(column, sa.Integer(), server_default="0", nullable=False))
        for column in ("task_count", *_COUNTERS):
            batch.add_column(sa.Column(column, sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_runs_status"), ["status"])

    with op.batch_alter_table("extractions") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("reserved_usd", sa.Double(), nullable=True))

    _carry_over_existing_runs()

    with op.batch_alter_table("extractions") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        for name, _columns, _parent in _EXTRACTION_FKS:
            batch.drop_constraint(name, type_="foreignkey")
        batch.drop_constraint("uq_extractions_run_id_document_id_variable_id", type_="unique")
        batch.create_unique_constraint(batch.f("uq_extractions_run_id_seq"), ["run_id", "seq"])
        batch.drop_index("ix_extractions_run_id_status")
        batch.drop_index("ix_extractions_cache_key")
    _partial_index("ix_extractions_pending", "extractions", ["run_id", "seq"], "status = 'pending'")
    _partial_index(
        "ix_extractions_lease", "extractions", ["lease_expires_at"], "status = 'running'"
    )
    _partial_index(
        "ix_extractions_retryable",
        "extractions",
        ["run_id", "seq"],
        "status IN ('failed', 'cancelled')",
    )
    _partial_index(
        "ix_extractions_cache_key", "extractions", ["cache_key"], "cache_key IS NOT NULL"
    )

    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("parse_attempts", sa.Integer(), server_default="0", nullable=False)
        )
    _partial_index(
        "ix_documents_unparsed", "documents", ["created_at"], "status IN ('uploaded', 'parsing')"
    )
    # A project's documents in upload order: the documents list and the exports walk it.
    op.create_index(
        "ix_documents_upload_order", "documents", ["project_id", "created_at", "filename", "id"]
    )
    op.create_index(op.f("ix_reviews_extraction_id"), "reviews", ["extraction_id"])


def _partial_index(name: str, table: str, columns: list[str], where: str) -> None:
    op.create_index(
        name,
        table,
        columns,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def _carry_over_existing_runs() -> None:
    """Plans, sequence numbers, counters and budgets for the runs that already exist.

    Portable SQL plus Python: the data of an installation upgrading to this version is small
    next to what the new layout is for, and both backends must give the same result."""
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    runs = sa.table(
        "runs",
        sa.column("id", sa.Uuid()),
        sa.column("settings", sa.JSON()),
        sa.column("budget_usd", sa.Double()),
        sa.column("document_count", sa.Integer()),
        sa.column("variable_count", sa.Integer()),
        sa.column("documents_prepared", sa.Integer()),
        sa.column("task_count", sa.BigInteger()),
        *(sa.column(c, sa.BigInteger()) for c in _COUNTERS),
    )
    tasks = sa.table(
        "extractions",
        sa.column("id", sa.Uuid()),
        sa.column("run_id", sa.Uuid()),
        sa.column("document_id", sa.Uuid()),
        sa.column("variable_id", sa.Uuid()),
        sa.column("prompt_version_id", sa.Uuid()),
        sa.column("status", sa.String()),
        sa.column("seq", sa.BigInteger()),
        sa.column("tokens_in", sa.Integer()),
        sa.column("tokens_out", sa.Integer()),
    )
    variables = sa.table(
        "variables",
        sa.column("id", sa.Uuid()),
        sa.column("position", sa.Integer()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    documents = sa.table(
        "documents", sa.column("id", sa.Uuid()), sa.column("created_at", sa.DateTime(timezone=True))
    )
    run_documents = sa.table(
        "run_documents",
        sa.column("run_id", sa.Uuid()),
        sa.column("ordinal", sa.Integer()),
        sa.column("document_id", sa.Uuid()),
    )
    run_variables = sa.table(
        "run_variables",
        sa.column("run_id", sa.Uuid()),
        sa.column("ordinal", sa.Integer()),
        sa.column("variable_id", sa.Uuid()),
        sa.column("prompt_version_id", sa.Uuid()),
    )

    for run_id, settings in bind.execute(sa.select(runs.c.id, runs.c.settings)).all():
        budget = (settings or {}).get("budget_usd")
        if isinstance(budget, int | float):
            bind.execute(runs.update().where(runs.c.id == run_id).values(budget_usd=float(budget)))

    run_vars: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    for row in bind.execute(
        sa.select(
            tasks.c.run_id,
            tasks.c.variable_id,
            tasks.c.prompt_version_id,
            variables.c.position,
            variables.c.created_at,
        )
        .join(variables, variables.c.id == tasks.c.variable_id)
        .distinct()
    ).all():
        run_vars[row[0]].append(tuple(row[1:]))
    run_docs: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    for row in bind.execute(
        sa.select(tasks.c.run_id, tasks.c.document_id, documents.c.created_at)
        .join(documents, documents.c.id == tasks.c.document_id)
        .distinct()
    ).all():
        run_docs[row[0]].append(tuple(row[1:]))

    for run_id, found in run_vars.items():
        # One prompt version per (run, variable); keep the first should there be several.
        seen: dict[Any, tuple[Any, ...]] = {}
        for variable_id, version_id, position, created in found:
            seen.setdefault(variable_id, (version_id, position, created))
        ordered_vars = sorted(seen.items(), key=lambda kv: (kv[1][1], kv[1][2], str(kv[0])))
        ordered_docs = sorted(run_docs[run_id], key=lambda d: (d[1], str(d[0])))
        var_ordinal = {v: n for n, (v, _) in enumerate(ordered_vars)}
        doc_ordinal = {d[0]: n for n, d in enumerate(ordered_docs)}
        if ordered_vars:
            bind.execute(
                run_variables.insert(),
                [
                    {"run_id": run_id, "ordinal": n, "variable_id": v, "prompt_version_id": p[0]}
                    for n, (v, p) in enumerate(ordered_vars)
                ],
            )
        if ordered_docs:
            bind.execute(
                run_documents.insert(),
                [
                    {"run_id": run_id, "ordinal": n, "document_id": d[0]}
                    for n, d in enumerate(ordered_docs)
                ],
            )
        width = len(ordered_vars)
        rows = bind.execute(
            sa.select(tasks.c.id, tasks.c.document_id, tasks.c.variable_id).where(
                tasks.c.run_id == run_id
            )
        ).all()
        if rows:
            bind.execute(
                tasks.update()
                .where(tasks.c.id == sa.bindparam("task_id"))
                .values(seq=sa.bindparam("new_seq")),
                [
                    {
                        "task_id": task_id,
                        "new_seq": doc_ordinal[document_id] * width + var_ordinal[variable_id],
                    }
                    for task_id, document_id, variable_id in rows
                ],
            )
        counts: dict[str, int] = {column: 0 for column in _COUNTERS}
        for status, count, tokens_in, tokens_out in bind.execute(
            sa.select(
                tasks.c.status,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(tasks.c.tokens_in), 0),
                sa.func.coalesce(sa.func.sum(tasks.c.tokens_out), 0),
            )
            .where(tasks.c.run_id == run_id)
            .group_by(tasks.c.status)
        ).all():
            if f"{status}_count" in counts:
                counts[f"{status}_count"] = int(count)
            counts["tokens_in"] += int(tokens_in)
            counts["tokens_out"] += int(tokens_out)
        bind.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(
                document_count=len(ordered_docs),
                variable_count=width,
                documents_prepared=len(ordered_docs),
                task_count=len(rows),
                **counts,
            )
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_reviews_extraction_id"), table_name="reviews")
    op.drop_index("ix_documents_upload_order", table_name="documents")
    op.drop_index("ix_documents_unparsed", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("parse_attempts")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
    for name in (
        "ix_extractions_cache_key",
        "ix_extractions_retryable",
        "ix_extractions_lease",
        "ix_extractions_pending",
    ):
        op.drop_index(name, table_name="extractions")
    with op.batch_alter_table("extractions") as batch:
        batch.create_index(batch.f("ix_extractions_cache_key"), ["cache_key"])
        batch.create_index(batch.f("ix_extractions_run_id_status"), ["run_id", "status"])
        batch.drop_constraint("uq_extractions_run_id_seq", type_="unique")
        batch.create_unique_constraint(
            batch.f("uq_extractions_run_id_document_id_variable_id"),
            ["run_id", "document_id", "variable_id"],
        )
        for name, columns, parent in _EXTRACTION_FKS:
            batch.create_foreign_key(name, parent, columns, ["id"], ondelete="CASCADE")
        batch.drop_column("reserved_usd")
        batch.drop_column("seq")
    with op.batch_alter_table("runs") as batch:
        batch.drop_index(batch.f("ix_runs_status"))
        for column in (
            "lease_expires_at",
            "lease_owner",
            *reversed(_COUNTERS),
            "task_count",
            "documents_prepared",
            "variable_count",
            "document_count",
            "reserved_usd",
            "budget_usd",
            "stop_reason",
        ):
            batch.drop_column(column)
    op.drop_index(op.f("ix_run_variables_variable_id"), table_name="run_variables")
    op.drop_table("run_variables")
    op.drop_index(op.f("ix_run_documents_document_id"), table_name="run_documents")
    op.drop_table("run_documents")
