"""The export's queries go through indexes on SQLite and PostgreSQL, so that an export's cost
grows with its own size and not with the rest of the database (or quadratically with itself).

On PostgreSQL, sequential scans are switched off for the check: on tables this small the planner
would rightly prefer them, and with them off it still falls back to one where no index fits.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection

from quarry.exports import repository
from tests.exports.conftest import (
    T0,
    Project,
    add_documents,
    add_extraction,
    add_review,
    add_run,
)


async def plan(connection: AsyncConnection, statement: Select[*tuple[object, ...]]) -> str:
    sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    if connection.dialect.name == "sqlite":
        rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
        return "\n".join(row[3] for row in rows)
    await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    rows = await connection.exec_driver_sql(f"EXPLAIN {sql}")
    return "\n".join(row[0] for row in rows)


def full_scans(text: str, dialect: str) -> list[str]:
    if dialect == "sqlite":
        # "SCAN <table>" reads a whole table; scans of subqueries (anon_1, …) are in memory.
        tables = ("documents", "extractions", "reviews", "prompt_versions")
        return [
            line
            for line in text.splitlines()
            if line.startswith(tuple(f"SCAN {t}" for t in tables))
        ]
    return [line for line in text.splitlines() if "Seq Scan" in line]


async def test_export_queries_are_index_driven(project: Project) -> None:
    ids = await add_documents(project, ["a.txt", "b.txt", "c.txt"])
    run = await add_run(project)
    for document_id in ids:
        await add_extraction(project, run, document_id, "n", value=1)
    await add_review(project, ids[0], "n", "accepted", 1, at=T0)
    batch: list[uuid.UUID] = ids[:2]

    async with project.app.state.engine.connect() as connection, connection.begin():
        dialect = connection.dialect.name
        documents = await plan(connection, repository.documents_in_upload_order(project.id))
        ranks_in_sql = repository.ranks_in_sql(connection.dialect)
        answers = await plan(
            connection, repository.latest_answers_of(batch, rank_in_sql=ranks_in_sql)
        )
        reviews = await plan(connection, repository.current_reviews_of(batch))

    for text in (documents, answers, reviews):
        assert full_scans(text, dialect) == [], text
    assert "ix_documents_upload_order" in documents  # read in order: nothing to sort
    assert "ix_extractions_document_id_variable_id" in answers
    assert "ix_reviews_document_id_variable_id" in answers  # newer than the review?
    assert "prompt_versions" in answers
    assert "ix_reviews_document_id_variable_id" in reviews
    if dialect == "sqlite":
        assert "TEMP B-TREE" not in documents, documents
        assert "SEARCH prompt_versions USING INDEX" in answers
