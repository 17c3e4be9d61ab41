"""The project's agreement figures (definitions: agreement.py) and the xlsx Agreement sheet."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.evaluation.compare import Tolerance
from quarry.exports.table import EvaluationTable, JsonValue
from quarry.extractions import repository as extractions_repository
from quarry.models import Extraction, Project, Review
from quarry.reviewing import repository
from quarry.reviewing.agreement import (
    KAPPA_TYPES,
    Tally,
    measure_of,
    pooled_agreement,
    pooled_kappa,
)
from quarry.reviewing.schemas import (
    AgreementFigure,
    AgreementOut,
    ToleranceOut,
    VariableAgreementOut,
)
from quarry.reviewing.service import Key, project_states, spec_of
from quarry.reviewing.verdicts import (
    DEFAULT_TOLERANCE,
    ReviewMode,
    Verdict,
    model_side,
)
from quarry.variables.types import VariableType


def _model(extraction: Extraction | None) -> tuple[str, Any]:
    if extraction is None:
        return model_side(None, None, False)
    answered = extraction.status in extractions_repository.ANSWERED
    return model_side(extraction.status, extraction.value, answered)


def _side(verdict: Verdict[Review]) -> tuple[str, Any]:
    return verdict.status, verdict.value


@dataclass
class _VariableTallies:
    reviewers: Tally
    model_vs_a: Tally
    model_vs_b: Tally
    model_vs_final: Tally
    by_person: dict[uuid.UUID, Tally]


_COMPARISONS = (
    ("reviewers", "Reviewer A vs reviewer B"),
    ("model_vs_a", "Model vs reviewer A"),
    ("model_vs_b", "Model vs reviewer B"),
    ("model_vs_final", "Model vs final value"),
)


def _figure(
    comparison: str, label: str, tally: Tally, reviewer: uuid.UUID | None = None
) -> AgreementFigure:
    return AgreementFigure(
        comparison=comparison,
        label=label,
        reviewer_id=reviewer,
        compared=tally.compared,
        agreed=tally.agreed,
        agreement=tally.agreement,
        kappa=tally.cohens_kappa,
    )


def _pooled(
    comparison: str, label: str, tallies: Sequence[Tally], reviewer: uuid.UUID | None = None
) -> AgreementFigure:
    compared, agreed, share = pooled_agreement(tallies)
    return AgreementFigure(
        comparison=comparison,
        label=label,
        reviewer_id=reviewer,
        compared=compared,
        agreed=agreed,
        agreement=share,
        kappa=pooled_kappa(tallies),
    )


async def agreement(
    session: AsyncSession, project: Project, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> AgreementOut:
    """Agreement per variable and overall (agreement.py): reviewer A vs B and the model vs
    each over the cells both reviewers reviewed; the model vs each person over the cells they
    reviewed of those; the model vs the final value over every cell with one."""
    states, _, variables = await project_states(session, project, tolerance)
    reviewed_documents = list(dict.fromkeys(key[0] for key in states))
    answers: dict[Key, tuple[Extraction, int]] = {}
    for start in range(0, len(reviewed_documents), 500):
        answers |= await extractions_repository.latest_answers(
            session, reviewed_documents[start : start + 500]
        )
    specs = {v.id: spec_of(v) for v in variables}
    tallies: dict[uuid.UUID, _VariableTallies] = {}
    for v in variables:
        kappa = VariableType(v.type) in KAPPA_TYPES
        tallies[v.id] = _VariableTallies(Tally(kappa), Tally(kappa), Tally(kappa), Tally(kappa), {})
    double = conflicts = resolved = 0
    for key, state in states.items():
        tally = tallies.get(key[1])
        if tally is None:
            continue
        spec = specs[key[1]]
        answer = answers.get(key)
        model = _model(answer[0] if answer else None)
        if state.first is not None and state.second is not None:
            double += 1
            agreed = tally.reviewers.add(spec, _side(state.first), _side(state.second), tolerance)
            if not agreed:
                conflicts += 1
                resolved += state.adjudication is not None
            tally.model_vs_a.add(spec, model, _side(state.first), tolerance)
            tally.model_vs_b.add(spec, model, _side(state.second), tolerance)
            for verdict in (state.first, state.second):
                person = verdict.reviewer
                if person is not None:
                    tally.by_person.setdefault(person, Tally(tally.reviewers.kappa)).add(
                        spec, model, _side(verdict), tolerance
                    )
        if state.final is not None:
            tally.model_vs_final.add(spec, model, _side(state.final), tolerance)
    everyone = {p for t in tallies.values() for p in t.by_person}
    emails = await repository.emails(session, everyone)
    people = sorted(everyone, key=lambda p: emails.get(p, ""))

    def figures(pick: Any, pooled: bool) -> list[AgreementFigure]:
        make = _pooled if pooled else _figure
        out = [make(name, label, pick(name)) for name, label in _COMPARISONS]
        for person in people:
            tally = pick(person)
            if tally is not None and (pooled or tally.compared):
                out.append(
                    make(
                        "model_vs_reviewer", f"Model vs {emails.get(person, person)}", tally, person
                    )
                )
        return out

    per_variable = []
    for v in variables:
        t = tallies[v.id]

        def pick_one(name: Any, t: _VariableTallies = t) -> Any:
            if isinstance(name, uuid.UUID):
                return t.by_person.get(name)
            return getattr(t, name)

        per_variable.append(
            VariableAgreementOut(
                variable_id=v.id,
                name=v.name,
                type=v.type,
                measure=measure_of(VariableType(v.type)),
                figures=figures(pick_one, pooled=False),
            )
        )

    def pick_all(name: Any) -> Any:
        if isinstance(name, uuid.UUID):
            return [t.by_person[name] for t in tallies.values() if name in t.by_person]
        return [getattr(t, name) for t in tallies.values()]

    return AgreementOut(
        tolerance=ToleranceOut(absolute=tolerance.absolute, relative=tolerance.relative),
        double_reviewed=double,
        conflicts=conflicts,
        resolved=resolved,
        variables=per_variable,
        overall=figures(pick_all, pooled=True),
    )


AGREEMENT_COLUMNS = (
    "variable",
    "type",
    "measure",
    "comparison",
    "compared",
    "agreed",
    "agreement",
    "kappa",
)


def agreement_table(figures: AgreementOut) -> EvaluationTable:
    """The xlsx export's Agreement sheet: a row per variable and comparison, then the
    overall figures (variable "(all variables)")."""
    rows: list[list[JsonValue]] = []
    for v in figures.variables:
        for f in v.figures:
            rows.append(
                [v.name, v.type, v.measure, f.label, f.compared, f.agreed, f.agreement, f.kappa]
            )
    for f in figures.overall:
        rows.append(
            ["(all variables)", "", "pooled", f.label, f.compared, f.agreed, f.agreement, f.kappa]
        )
    return EvaluationTable(columns=AGREEMENT_COLUMNS, rows=rows, title="Agreement")


async def has_dual_reviews(session: AsyncSession, project: Project) -> bool:
    """Whether the project reviews in dual mode or ever did (its xlsx gets an Agreement
    sheet)."""
    if project.review_mode == ReviewMode.DUAL.value:
        return True
    return await repository.has_dual_reviews(session, project.id)
