"""An app on SQLite or PostgreSQL with a project whose cells are written straight into the
database (settled extractions of any shape, reviews), for the export's own tests."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from quarry.db import session_scope
from quarry.models import (
    Document,
    Extraction,
    ExtractionStatus,
    PromptVersion,
    Review,
    ReviewAssignment,
    Run,
    User,
)
from tests.conftest import make_settings
from tests.support.api import add_variable, create_project, running_app, sign_up
from tests.support.postgres import temporary_postgres_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/quarry.db"
    else:
        with temporary_postgres_database("quarry_exports") as url:
            yield url


@dataclass
class Project:
    """A project of the export tests: its API handles and its variables' ids by name."""

    app: FastAPI
    client: httpx.AsyncClient
    headers: dict[str, str]
    id: uuid.UUID
    variables: dict[str, uuid.UUID] = field(default_factory=dict)
    versions: dict[str, uuid.UUID] = field(default_factory=dict)
    #: Task numbers for the extractions made here (unique within a run, as a run's are).
    seq: Iterator[int] = field(default_factory=itertools.count)

    async def export(self, format: str, layout: str = "wide", **params: str) -> httpx.Response:
        response = await self.client.get(
            f"/api/v1/projects/{self.id}/export",
            params={"format": format, "layout": layout, **params},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        return response


@pytest.fixture
async def project(database_url: str, tmp_path: Path) -> AsyncIterator[Project]:
    """A project with variables n (integer) and title (text), and no documents yet."""
    settings = make_settings(tmp_path, None, database_url=database_url)
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "exports@example.org")
        pid = (await create_project(client, headers, "Exports"))["id"]
        made = Project(app, client, headers, uuid.UUID(pid))
        for name, kind in (("n", "integer"), ("title", "text")):
            variable = await add_variable(
                client, headers, pid, name=name, description=f"The {name}", type=kind
            )
            made.variables[name] = uuid.UUID(variable["id"])
        async with session_scope(app.state.sessionmaker) as session:
            versions = await session.execute(select(PromptVersion.variable_id, PromptVersion.id))
            by_variable = dict(versions.tuples().all())
        made.versions = {name: by_variable[v] for name, v in made.variables.items()}
        yield made


async def add_documents(
    project: Project, filenames: list[str], *, at: list[datetime] | None = None
) -> list[uuid.UUID]:
    """Documents uploaded at the given times (default: a second apart, in list order)."""
    times = at or [T0 + timedelta(seconds=i) for i in range(len(filenames))]
    documents = [
        Document(
            project_id=project.id,
            filename=name,
            content_type="text/plain",
            kind="text",
            size_bytes=1,
            sha256=uuid.uuid4().hex,
            storage_key=name,
            status="ready",
            created_at=when,
        )
        for name, when in zip(filenames, times, strict=True)
    ]
    async with session_scope(project.app.state.sessionmaker) as session:
        session.add_all(documents)
    return [d.id for d in documents]


async def add_run(project: Project, *, at: datetime = T0) -> uuid.UUID:
    async with session_scope(project.app.state.sessionmaker) as session:
        run = Run(project_id=project.id, status="completed", model="fake-model", created_at=at)
        session.add(run)
        await session.flush()
        return run.id


async def add_extraction(
    project: Project,
    run_id: uuid.UUID,
    document_id: uuid.UUID,
    variable: str,
    *,
    status: ExtractionStatus = ExtractionStatus.SUCCEEDED,
    value: Any = None,
    finished_at: datetime = T0,
    **fields: Any,
) -> None:
    answered = status in (ExtractionStatus.SUCCEEDED, ExtractionStatus.NOT_FOUND)
    defaults: dict[str, Any] = {
        "evidence": f"evidence for {value}" if status == ExtractionStatus.SUCCEEDED else None,
        "page": 1 if status == ExtractionStatus.SUCCEEDED else None,
        "grounded": True if status == ExtractionStatus.SUCCEEDED else None,
        "confidence": 0.9 if answered else None,
        "model": "fake-model",
        "error": "the model answered with invalid JSON" if status == "failed" else None,
    }
    async with session_scope(project.app.state.sessionmaker) as session:
        session.add(
            Extraction(
                run_id=run_id,
                document_id=document_id,
                variable_id=project.variables[variable],
                prompt_version_id=project.versions[variable],
                seq=next(project.seq),
                status=status,
                value=value,
                created_at=finished_at,
                finished_at=finished_at,
                **(defaults | fields),
            )
        )


async def add_review(
    project: Project,
    document_id: uuid.UUID,
    variable: str,
    status: str,
    value: Any = None,
    *,
    at: datetime,
    kind: str = "single",
    reviewer_id: uuid.UUID | None = None,
) -> None:
    async with session_scope(project.app.state.sessionmaker) as session:
        session.add(
            Review(
                document_id=document_id,
                variable_id=project.variables[variable],
                status=status,
                value=value,
                created_at=at,
                kind=kind,
                reviewer_id=reviewer_id,
            )
        )


async def add_reviewers(project: Project, document_id: uuid.UUID, *emails: str) -> list[uuid.UUID]:
    """Users (made here) assigned as the document's reviewers A and B, in order."""
    ids = []
    async with session_scope(project.app.state.sessionmaker) as session:
        for slot, email in enumerate(emails, start=1):
            user = User(email=email, password_hash="-")
            session.add(user)
            await session.flush()
            session.add(
                ReviewAssignment(
                    project_id=project.id, document_id=document_id, slot=slot, reviewer_id=user.id
                )
            )
            ids.append(user.id)
    return ids
