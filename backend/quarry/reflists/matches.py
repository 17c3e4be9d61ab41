"""Matching stored extraction values to their variables' reference lists, without the LLM.

Two entry points share one path: `match_stored` runs as each batch of task outcomes is
stored (runs/lifecycle.py `store_outcomes`), and `rematch_variable` / `rematch_list`
recompute every stored value of a variable after its match setting or its list changed.
Both read values already in the database; neither calls a model.

A list version never changes, so its normalised form (a `Matcher`) is kept per process,
keyed by version, column and method, for the next batch; building and scoring run in a
worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import ExtractionStatus, ReferenceList, Variable
from quarry.reflists import repository
from quarry.reflists.matching import ListRow, Matcher, MatchMethod, MatchResult, Thresholds

log = structlog.get_logger(__name__)

#: Matchers kept per process (a 100k-row list's is some tens of MB).
_CACHED_MATCHERS = 4
_MATCHERS: OrderedDict[tuple[uuid.UUID, str, str, str], Matcher] = OrderedDict()
#: Values matched per thread hop and per UPDATE batch in a rematch.
REMATCH_BATCH = 1_000


async def matcher_for(
    session: AsyncSession, version_id: uuid.UUID, column: str, key_column: str, method: MatchMethod
) -> Matcher:
    key = (version_id, column, key_column, method.value)
    matcher = _MATCHERS.get(key)
    if matcher is not None:
        _MATCHERS.move_to_end(key)
        return matcher
    rows = await repository.column_rows(session, version_id, column, key_column)
    listed = [
        ListRow(number, value or "", key_value or "")
        for number, value, key_value in rows
        if key_value
    ]
    matcher = await asyncio.to_thread(Matcher, method, listed)
    _MATCHERS[key] = matcher
    while len(_MATCHERS) > _CACHED_MATCHERS:
        _MATCHERS.popitem(last=False)
    return matcher


def _stored(
    extraction_id: uuid.UUID, result: MatchResult | None, version: uuid.UUID | None
) -> dict[str, Any]:
    if result is None:
        return {
            "e_id": extraction_id,
            "m_status": None,
            "m_key": None,
            "m_score": None,
            "m_candidates": None,
            "m_version": None,
        }
    return {
        "e_id": extraction_id,
        "m_status": result.status.value,
        "m_key": result.key,
        "m_score": result.score,
        "m_candidates": [c.as_json() for c in result.candidates] or None,
        "m_version": version,
    }


async def _current_version(session: AsyncSession, setting: dict[str, Any]) -> uuid.UUID | None:
    reference_list = await session.get(ReferenceList, uuid.UUID(setting["list_id"]))
    return reference_list.current_version_id if reference_list is not None else None


async def match_values(
    session: AsyncSession, setting: dict[str, Any], items: Sequence[tuple[uuid.UUID, Any]]
) -> list[dict[str, Any]]:
    """The match columns of each (extraction id, value) under `setting`, ready to store."""
    version = await _current_version(session, setting)
    if version is None:
        return [_stored(extraction_id, None, None) for extraction_id, _ in items]
    matcher = await matcher_for(
        session, version, setting["column"], setting["key_column"], MatchMethod(setting["method"])
    )
    thresholds = Thresholds(**(setting.get("thresholds") or {}))
    results = await asyncio.to_thread(matcher.match_many, [v for _, v in items], thresholds)
    return [
        _stored(extraction_id, result, version)
        for (extraction_id, _), result in zip(items, results, strict=True)
    ]


async def match_stored(
    session: AsyncSession, outcomes: Sequence[tuple[uuid.UUID, uuid.UUID, str, Any]]
) -> None:
    """Match the values of just-stored outcomes (extraction id, variable id, status, value)
    whose variable has a match setting; one query when none has."""
    answered = [o for o in outcomes if o[2] == ExtractionStatus.SUCCEEDED]
    if not answered:
        return
    settings = await repository.matched_variables(session, list({o[1] for o in answered}))
    for variable_id, setting in settings.items():
        items = [(o[0], o[3]) for o in answered if o[1] == variable_id]
        await repository.store_matches(session, await match_values(session, setting, items))


async def rematch_variable(session: AsyncSession, variable: Variable) -> int:
    """Recompute the match of every stored value of `variable` (or clear them when it has
    no match setting); returns how many values were matched."""
    if not variable.match:
        await repository.clear_matches(session, variable.id)
        return 0
    count = 0
    async for batch in repository.answered_values(session, variable.id, REMATCH_BATCH):
        await repository.store_matches(session, await match_values(session, variable.match, batch))
        count += len(batch)
    log.info("reflists.rematched", variable_id=str(variable.id), values=count)
    return count


async def rematch_list(session: AsyncSession, project_id: uuid.UUID, list_id: uuid.UUID) -> int:
    """Recompute the matches of every variable matched to the list."""
    total = 0
    for variable in await repository.variables_matching_list(session, project_id, list_id):
        total += await rematch_variable(session, variable)
    return total
