"""Consistency findings: where a case's documents disagree, or disagree with the case's
reference row, for the variables whose `checks` ask for it.

- `must_agree_within_case`: the case's documents give values that are not all the same;
- `must_agree_with_reference: <column>`: a document's value is not the reference row's cell.

One finding per (case, variable, kind), listing every value the case's documents give, each
with its documents, quotes and pages (and for a reference check whether it agrees with the
reference value), so the agreeing quote is shown beside the disagreeing one.

Values are compared type-aware: dates by value at the precision of the less precise (2024
agrees with 2024-03-10), numbers within the check's tolerance, text ignoring case, spacing
and end punctuation, categories exactly, lists and multi-categories as sets.

A finding's id is stable (its case, variable and kind); a resolution (a reviewer's choice of
the right value, or "both correct") is kept against that id and the values it saw, and holds
while the finding shows those values: new values reopen it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from quarry.evaluation.compare import text_key
from quarry.models import FindingResolution, Variable
from quarry.reflists.cases import Case, CellSource, ProjectCells
from quarry.variables.types import InvalidValue, TypeSpec, VariableType, normalise_value

WITHIN_CASE = "within_case"
REFERENCE = "reference"


@dataclass
class FindingValue:
    value: Any
    sources: list[CellSource]
    agrees_with_reference: bool | None = None


@dataclass
class Finding:
    id: str
    kind: str
    case_key: str
    variable: Variable
    values: list[FindingValue]
    reference_column: str | None = None
    reference_value: Any = None
    reference_row_number: int | None = None
    resolution: FindingResolution | None = None

    @property
    def digest(self) -> str:
        shown = sorted(
            json.dumps([v.value, sorted(str(s.document_id) for s in v.sources)], default=str)
            for v in self.values
        )
        return hashlib.sha256(
            json.dumps([shown, self.reference_value], default=str).encode()
        ).hexdigest()

    @property
    def status(self) -> str:
        return "resolved" if self.resolution is not None else "open"


def finding_id(case_key: str, variable: Variable, kind: str) -> str:
    return hashlib.sha256(f"{variable.id}\x00{kind}\x00{case_key}".encode()).hexdigest()[:32]


def _spec(variable: Variable) -> TypeSpec:
    return TypeSpec(
        type=VariableType(variable.type),
        allowed_values=tuple(variable.allowed_values),
        unit=variable.unit,
    )


def values_agree(variable: Variable, a: Any, b: Any) -> bool:
    kind = VariableType(variable.type)
    tolerance = float((variable.checks or {}).get("tolerance") or 0.0)
    if kind is VariableType.DATE and isinstance(a, str) and isinstance(b, str):
        precision = min(len(a), len(b))
        return a[:precision] == b[:precision]
    if kind in (VariableType.INTEGER, VariableType.NUMBER):
        try:
            return abs(float(a) - float(b)) <= max(
                tolerance, 1e-9 * max(abs(float(a)), abs(float(b)))
            )
        except (TypeError, ValueError):
            return False
    if kind is VariableType.TEXT:
        return text_key(str(a)) == text_key(str(b))
    if isinstance(a, list) and isinstance(b, list):
        return {text_key(str(x)) for x in a} == {text_key(str(x)) for x in b}
    return bool(a == b)


def _groups(variable: Variable, sources: list[CellSource]) -> list[FindingValue]:
    groups: list[FindingValue] = []
    for source in sources:
        for group in groups:
            if values_agree(variable, group.value, source.value):
                group.sources.append(source)
                break
        else:
            groups.append(FindingValue(source.value, [source]))
    return groups


def _reference_value(variable: Variable, cell: Any) -> Any:
    if cell is None or not str(cell).strip():
        return None
    try:
        return normalise_value(_spec(variable), str(cell))
    except InvalidValue:
        return str(cell).strip()


def case_findings(
    data: ProjectCells, case: Case, resolutions: dict[str, FindingResolution]
) -> list[Finding]:
    found: list[Finding] = []
    for variable in data.variables:
        checks = variable.checks or {}
        sources = [c for d, _ in case.documents if (c := data.cells.get((d, variable.id)))]
        if not sources:
            continue
        if checks.get("must_agree_within_case"):
            groups = _groups(variable, sources)
            if len(groups) > 1:
                found.append(
                    Finding(
                        finding_id(case.key, variable, WITHIN_CASE),
                        WITHIN_CASE,
                        case.key,
                        variable,
                        groups,
                    )
                )
        column = checks.get("must_agree_with_reference")
        if column and case.reference_row is not None:
            reference = _reference_value(variable, case.reference_row["values"].get(column))
            if reference is None:
                continue
            groups = _groups(variable, sources)
            for group in groups:
                group.agrees_with_reference = values_agree(variable, group.value, reference)
            if any(not g.agrees_with_reference for g in groups):
                found.append(
                    Finding(
                        finding_id(case.key, variable, REFERENCE),
                        REFERENCE,
                        case.key,
                        variable,
                        groups,
                        reference_column=column,
                        reference_value=reference,
                        reference_row_number=case.reference_row["row_number"],
                    )
                )
    for finding in found:
        resolution = resolutions.get(finding.id)
        if resolution is not None and resolution.values_digest == finding.digest:
            finding.resolution = resolution
    return found


@dataclass
class Casework:
    """The cases of a project and their findings, computed together."""

    cases: list[Case]
    findings: list[Finding] = field(default_factory=list)
