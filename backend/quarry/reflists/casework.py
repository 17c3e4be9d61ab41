"""Cases and findings of a project, as the API and exports show them (reflists/cases.py and
reflists/findings.py compute them; resolutions are recorded here)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.errors import BadRequest, Forbidden, NotFound
from quarry.exports.table import EvaluationTable, JsonValue
from quarry.models import FindingResolution, Project, User
from quarry.reflists import repository
from quarry.reflists.cases import Combined, build_cases, load_project_cells
from quarry.reflists.findings import Casework, Finding, case_findings, values_agree
from quarry.reflists.schemas import FindingResolutionIn
from quarry.reviewing.service import cell_views
from quarry.reviewing.verdicts import OPEN_LENS, Lens
from quarry.variables.types import InvalidValue, TypeSpec, VariableType, normalise_value

RESOLVED_BY_VALUE = "value"
BOTH_CORRECT = "both_correct"


async def casework(session: AsyncSession, project: Project, lens: Lens = OPEN_LENS) -> Casework:
    """The project's cases with their combined values, and their findings; a finding
    resolved with a value sets the case's value of that variable. `lens`: who reads them —
    a member blinded by dual review sees cases built from what they may see of each cell
    (their own verdicts, and in blind review not the model's answers they have not reviewed),
    so a case's values and findings never show them another reviewer's verdict or a hidden
    model value; a resolution shows only while the finding shows them the values it saw."""
    if not project.case_key:
        return Casework([])
    data = await load_project_cells(session, project, lens)
    cases = await build_cases(session, project, data)
    resolutions = await repository.latest_resolutions(session, project.id)
    findings: list[Finding] = []
    for case in cases:
        for finding in case_findings(data, case, resolutions):
            findings.append(finding)
            resolution = finding.resolution
            if resolution is not None and resolution.resolution == RESOLVED_BY_VALUE:
                agreeing = [
                    s.document_id
                    for group in finding.values
                    if values_agree(finding.variable, group.value, resolution.value)
                    for s in group.sources
                ]
                case.values[finding.variable.name] = Combined(resolution.value, agreeing)
    return Casework(cases, findings)


async def resolve_finding(
    session: AsyncSession,
    project: Project,
    user: User,
    finding_id: str,
    data: FindingResolutionIn,
    lens: Lens = OPEN_LENS,
) -> tuple[Finding, FindingResolution]:
    """Record a resolution of the finding. A member blinded by dual review resolves only a
    finding they see as it is (403 while some of its values are hidden from them: a
    resolution is made against every value, and would tell them what the others are)."""
    work = await casework(session, project)
    finding = next((f for f in work.findings if f.id == finding_id), None)
    if lens.dual:
        await _check_seen_whole(session, project, lens, finding_id, finding)
    if finding is None:
        raise NotFound("No such finding.")
    value: Any = None
    if data.resolution == RESOLVED_BY_VALUE:
        spec = TypeSpec(
            type=VariableType(finding.variable.type),
            allowed_values=tuple(finding.variable.allowed_values),
            unit=finding.variable.unit,
        )
        try:
            value = normalise_value(spec, data.value)
        except InvalidValue as exc:
            raise BadRequest(f"The value does not fit '{finding.variable.name}': {exc}") from exc
        if value is None:
            raise BadRequest("Choose the right value, or resolve as both_correct.")
    resolution = FindingResolution(
        project_id=project.id,
        finding_id=finding.id,
        values_digest=finding.digest,
        resolution=data.resolution,
        value=value,
        note=data.note,
        reviewer_id=user.id,
    )
    session.add(resolution)
    await session.flush()
    finding.resolution = resolution
    return finding, resolution


async def _check_seen_whole(
    session: AsyncSession,
    project: Project,
    lens: Lens,
    finding_id: str,
    finding: Finding | None,
) -> None:
    """404 unless the finding is one `lens`'s viewer sees; 403 while any of its case's cells
    of the variable is sealed for them (dual review: both reviewers have not reviewed it)."""
    seen_work = await casework(session, project, lens)
    seen = next((f for f in seen_work.findings if f.id == finding_id), None)
    if seen is None:
        raise NotFound("No such finding.")
    documents = next((c.documents for c in seen_work.cases if c.key == seen.case_key), [])
    views = await cell_views(session, project.id, [d for d, _ in documents], lens)
    if (
        finding is None
        or finding.digest != seen.digest
        or any(views.seen((d, seen.variable.id)).sealed for d, _ in documents)
    ):
        raise Forbidden(
            "This project uses dual review, and this finding's cells have not all been "
            "reviewed by both their reviewers: until they have, you see only your own "
            "verdicts of them, and resolving it needs every value. Resolve it then, or ask "
            "an owner who is not one of its documents' reviewers."
        )


def _join(items: list[Any]) -> str:
    return "; ".join("" if i is None else str(i) for i in items)


def _shown(value: Any) -> JsonValue:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return value  # type: ignore[no-any-return]


def cases_table(work: Casework, variable_names: list[str]) -> EvaluationTable:
    """The Cases sheet: a row per case, each variable's combined value and its documents."""
    filenames = {d: f for case in work.cases for d, f in case.documents}
    open_findings: dict[str, int] = {}
    for finding in work.findings:
        if finding.resolution is None:
            open_findings[finding.case_key] = open_findings.get(finding.case_key, 0) + 1
    columns = ["case_key", "documents", "document_count", "open_findings"]
    for name in variable_names:
        columns += [name, f"{name}_documents"]
    rows = []
    for case in work.cases:
        row: list[JsonValue] = [
            case.key,
            _join([f for _, f in case.documents]),
            len(case.documents),
            open_findings.get(case.key, 0),
        ]
        for name in variable_names:
            combined = case.values.get(name)
            row += [
                _shown(combined.value) if combined else None,
                _join([filenames.get(d) for d in combined.document_ids]) if combined else "",
            ]
        rows.append(row)
    return EvaluationTable(columns=columns, rows=rows, title="Cases")


FINDINGS_COLUMNS = [
    "finding_id",
    "case_key",
    "variable",
    "kind",
    "status",
    "value",
    "filename",
    "quote",
    "page",
    "reference_column",
    "reference_value",
    "agrees_with_reference",
    "resolution",
    "resolved_value",
]


def findings_table(work: Casework) -> EvaluationTable:
    """The Findings sheet: a row per document of each finding's values."""
    rows: list[list[JsonValue]] = []
    for finding in work.findings:
        resolution = finding.resolution
        for group in finding.values:
            for source in group.sources:
                rows.append(
                    [
                        finding.id,
                        finding.case_key,
                        finding.variable.name,
                        finding.kind,
                        finding.status,
                        _shown(group.value),
                        source.filename,
                        source.evidence,
                        source.page,
                        finding.reference_column,
                        _shown(finding.reference_value),
                        group.agrees_with_reference,
                        resolution.resolution if resolution else None,
                        _shown(resolution.value) if resolution else None,
                    ]
                )
    return EvaluationTable(columns=FINDINGS_COLUMNS, rows=rows, title="Findings")
