"""The result cache: an answer is reused when nothing that determines it has changed.

What determines an answer is what the model is sent and how it is asked: the document's
content (its sha256, and the context budget it was cut to), the system prompt, the variable's
rendered prompt (which carries its type, description, allowed values and examples), the model
and its temperature. Editing one variable changes only its prompt, so re-running a project
after that edit calls the model for that variable alone.

Reuse stays inside a project (a user never sees an answer produced for someone else's
project), takes only answers that settled (`succeeded` or `not_found`, never a failure), and
is skipped for runs created with `force_fresh`. A run reuses answers that had settled when
it started (each process reads the project's keys once per run).
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Extraction, ExtractionStatus, Run
from quarry.variables.prompts import SYSTEM_PROMPT

#: Bump when the engine changes what it does with the same inputs (e.g. how a value is
#: validated), so earlier answers are not reused.
ENGINE_VERSION = "1"

#: The answer's columns a cache hit copies.
ANSWER_COLUMNS = (
    "status",
    "value",
    "raw_output",
    "evidence",
    "page",
    "char_start",
    "char_end",
    "grounded",
    "confidence",
    "model",
    "pages_sent",
)


def cache_key(
    *,
    document_sha256: str,
    max_document_chars: int,
    variable_prompt: str,
    model: str,
    temperature: float,
) -> str:
    parts = (
        ENGINE_VERSION,
        SYSTEM_PROMPT,
        document_sha256,
        str(max_document_chars),
        variable_prompt,
        model,
        repr(float(temperature)),
    )
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")  # no two different part lists hash the same text
    return digest.hexdigest()


async def settled_keys(session: AsyncSession, project_id: uuid.UUID) -> set[str]:
    """Every cache key the project has a settled answer for: read once per run and process,
    so that a task without a cached answer (every task of a first run) costs no query."""
    result = await session.execute(
        select(Extraction.cache_key)
        .join(Run, Run.id == Extraction.run_id)
        .where(
            Run.project_id == project_id,
            Extraction.cache_key.is_not(None),
            Extraction.status.in_((ExtractionStatus.SUCCEEDED, ExtractionStatus.NOT_FOUND)),
        )
        .distinct()
    )
    return {key for key in result.scalars() if key}


async def find_cached_answer(
    session: AsyncSession, project_id: uuid.UUID, key: str, exclude: uuid.UUID
) -> Extraction | None:
    """The most recent settled answer with this key in the project (not the task itself)."""
    result = await session.execute(
        select(Extraction)
        .join(Run, Run.id == Extraction.run_id)
        .where(
            Extraction.cache_key == key,
            Extraction.id != exclude,
            Extraction.status.in_((ExtractionStatus.SUCCEEDED, ExtractionStatus.NOT_FOUND)),
            Run.project_id == project_id,
        )
        .order_by(Extraction.finished_at.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()
