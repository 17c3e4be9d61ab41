"""The export's queries go through indexes on SQLite and PostgreSQL, so that an export's cost
grows with its own size and not with the rest of the database (or quadratically with itself).

On PostgreSQL, sequential scans are switched off for the check: on tables this small the planner
would rightly prefer them, and with them off it still falls back to one where no index fits.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection

from quarry.db import connect_sqlite_reader, sqlite_file
from quarry.exports import repository
from quarry.exports.service import export_codebook, settle_batch
from quarry.models import ExtractionStatus as S
from quarry.reviewing.verdicts import OPEN_LENS
from tests.exports.conftest import (
    T0,
    Project,
    add_documents,
    add_extraction,
    add_review,
    add_reviewers,
    add_run,
)

MINUTE = timedelta(minutes=1)


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
        reviews = await plan(connection, repository.review_rows_of(batch))
        slots = await plan(connection, repository.assignments_of(batch))

    for text in (documents, answers, reviews, slots):
        assert full_scans(text, dialect) == [], text
    assert "ix_documents_upload_order" in documents  # read in order: nothing to sort
    assert "ix_extractions_document_id_variable_id" in answers
    assert "ix_reviews_document_id_variable_id" in answers  # newer than the review?
    assert "prompt_versions" in answers
    assert "ix_reviews_document_id_variable_id" in reviews
    # Through either unique index led by document_id (SQLite calls them sqlite_autoindex_…)
    assert re.search(r"uq_review_assignments_document_id_|review_assignments USING INDEX", slots), (
        slots
    )
    if dialect == "sqlite":
        assert "TEMP B-TREE" not in documents, documents
        assert "SEARCH prompt_versions USING INDEX" in answers


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_sqlite_reader_reads_by_index_only(project: Project) -> None:
    ids = await add_documents(project, ["a.txt", "b.txt"])
    statements = [
        repository.sqlite_extractions_of(ids),
        repository.sqlite_reviews_of(ids),
        repository.sqlite_prompt_versions_of(project.id),
        repository.sqlite_assignments_of(ids),
    ]
    async with project.app.state.engine.connect() as connection, connection.begin():
        plans = [await plan(connection, statement) for statement in statements]
    for text in plans:
        assert full_scans(text, "sqlite") == [], text
    extractions, reviews, _, slots = plans
    assert "ix_extractions_document_id_variable_id" in extractions
    assert "ix_reviews_document_id_variable_id" in reviews
    assert "review_assignments USING INDEX" in slots
    for text in (extractions, reviews):
        assert "TEMP B-TREE" not in text, text  # nothing sorted: picked in Python


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_sqlite_reader_finds_what_the_async_queries_find(project: Project) -> None:
    a, b, c, d = await add_documents(project, ["a.txt", "b.txt", "c.txt", "d.txt"])
    old, new = await add_run(project, at=T0), await add_run(project, at=T0 + 60 * MINUTE)
    later = T0 + 61 * MINUTE
    # a: newest answer wins over an older one and over a newer failure; an unfinished one last.
    await add_extraction(project, old, a, "n", value=1, finished_at=T0 + MINUTE)
    await add_extraction(
        project, new, a, "n", value=2, finished_at=later, grounded=False, support="unsupported"
    )
    await add_extraction(project, new, a, "title", status=S.FAILED, finished_at=later)
    await add_extraction(
        project, old, a, "title", value="t", finished_at=T0, confidence=0.2, support="supported"
    )
    await add_extraction(project, new, b, "title", status=S.RUNNING, value=None, finished_at=None)
    await add_extraction(project, old, b, "title", status=S.FAILED, finished_at=T0)
    # b, c: reviews older and newer than the answer; several reviews, the newest counts.
    await add_extraction(project, new, b, "n", status=S.NOT_FOUND, finished_at=later)
    await add_review(project, b, "n", "corrected", 7, at=T0)
    await add_review(project, b, "n", "accepted", 2.5, at=later + MINUTE)
    await add_extraction(project, new, c, "n", value=[1, "x"], finished_at=later)
    await add_review(project, c, "n", "rejected", at=T0)
    # d: a review of a cell never extracted; a JSON object as a value.
    await add_review(project, d, "title", "corrected", {"k": ["v"]}, at=T0)
    await add_extraction(project, new, d, "n", value={"k": 1}, finished_at=later)
    # c, title: two dual reviewers agree (text compared normalised), and their verdict wins
    # over a newer single review; d, n: they disagree, and an older adjudication decides.
    first, second = await add_reviewers(project, c, "ra@example.org", "rb@example.org")
    third, fourth = await add_reviewers(project, d, "rc@example.org", "rd@example.org")
    dual = {"at": T0, "kind": "independent"}
    await add_review(project, c, "title", "corrected", "Alpha.", reviewer_id=first, **dual)
    await add_review(project, c, "title", "corrected", "alpha", reviewer_id=second, **dual)
    await add_review(project, c, "title", "corrected", "single", at=later)
    await add_review(project, d, "n", "corrected", 3, at=T0, kind="adjudication")
    await add_review(project, d, "n", "corrected", 1, reviewer_id=third, **dual | {"at": later})
    await add_review(project, d, "n", "accepted", {"k": 1}, reviewer_id=fourth, **dual)

    sessionmaker = project.app.state.sessionmaker
    async with sessionmaker() as session:
        documents = [
            d async for batch in repository.stream_documents(session, project.id, 2) for d in batch
        ]
        ids = [d.id for d in documents]
        answers = await repository.latest_answers(session, ids)
        rows = await repository.review_rows(session, ids)
        assigned = await repository.assignments(session, ids)
        codebook = await export_codebook(session, project.id)
        _, reviews = settle_batch(answers, rows, assigned, codebook, OPEN_LENS)

    def read_in_thread() -> Any:
        database = sqlite_file(sessionmaker)
        assert database is not None
        connection = connect_sqlite_reader(database)
        try:
            reader = repository.SqliteExportReader(connection, project.id)
            read = [d for batch in reader.documents(2) for d in batch]
            return read, reader.cells(read[:3]), reader.cells(read[3:])
        finally:
            connection.close()

    read, cells_1, cells_2 = await asyncio.to_thread(read_in_thread)
    assert read == documents
    assert {**cells_1[0], **cells_2[0]} == answers
    assert {**cells_1[2], **cells_2[2]} == assigned

    def stored(row: repository.ReviewRow) -> tuple[Any, ...]:
        # Times come back as datetimes here and as SQLite's text there: compared apart.
        return (*row[:6], uuid.UUID(row.review_key))

    assert sorted(map(stored, cells_1[1] + cells_2[1])) == sorted(map(stored, rows))
    settled = [settle_batch(a, r, s, codebook, OPEN_LENS)[1] for a, r, s in (cells_1, cells_2)]
    assert {**settled[0], **settled[1]} == reviews
    assert reviews[(c.hex, project.variables["title"].hex)].value == "Alpha."
    assert reviews[(d.hex, project.variables["n"].hex)].value == 3
    # Types too: a bool is not a 0/1, an id stays the same text.
    for answer in cells_1[0].values():
        assert answer.grounded is None or type(answer.grounded) is bool
        assert answer.newer_than_review is None or type(answer.newer_than_review) is bool
    assert len(answers) == 6 and len(reviews) == 5
    assert {a.support for a in answers.values()} >= {"unsupported", "supported"}
