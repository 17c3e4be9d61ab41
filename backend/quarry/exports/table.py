"""The plain data the export writers take (DESIGN §6).

The export service turns database rows into these frozen dataclasses; the writers never touch the
database, so they can be tested and benchmarked on their own and fed from a generator over a cursor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import NamedTuple, TypeAlias

from quarry.variables.types import VariableType

# A stored, normalised value as it comes out of a JSON column.
JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None

# Column headers of the wide layout before the per-variable columns.
WIDE_FIXED_COLUMNS: tuple[str, ...] = ("document_id", "filename")

# A variable with one of these names would collide with a fixed wide column (and silently
# overwrite it in a flat JSON object), so the writers refuse it; the codebook should too.
RESERVED_VARIABLE_NAMES: frozenset[str] = frozenset(WIDE_FIXED_COLUMNS)

LONG_COLUMNS: tuple[str, ...] = (
    "document_id",
    "filename",
    "variable",
    "value",
    "status",
    "evidence",
    "page",
    "confidence",
    "grounded",
    "review_status",
    "extracted_value",
    "model",
    "prompt_version",
    "run_id",
    "error",
    "support",
    "flags",
    "match_status",
    "match_key",
    "match_score",
)


@dataclass(frozen=True, slots=True)
class VariableExample:
    """One codebook example: a value and, optionally, the text it was taken from."""

    value: JsonValue
    snippet: str | None = None


@dataclass(frozen=True, slots=True)
class ExportVariable:
    """One codebook variable, as the Codebook sheet shows it; `name` is the column header."""

    name: str
    label: str
    type: VariableType
    description: str = ""
    allowed_values: Sequence[str] = ()
    unit: str | None = None
    examples: Sequence[VariableExample] = ()
    instructions: str = ""
    required: bool = False
    position: int = 0
    prompt_version: int | None = None
    #: A column this export adds for the variable `match_of`: the key of the reference row
    #: its value was matched to (not a codebook variable of its own).
    match_of: str | None = None


@dataclass(frozen=True, slots=True)
class CellFlags:
    """Why a reviewer should look at a cell; drives the highlight colour in xlsx."""

    low_confidence: bool = False
    ungrounded: bool = False
    review_disagrees: bool = False  # a newer extraction disagrees with the reviewed value
    not_found: bool = False
    failed: bool = False
    #: The quote does not contain the value (runs/support.py: support "unsupported").
    unsupported_evidence: bool = False
    #: The two profiles of a two-profile run answered differently (runs/agreement.py); the
    #: value is the first-named profile's.
    models_disagree: bool = False
    #: The value matches several rows of its reference list equally well, or only loosely
    #: (reflists/matching.py), and no reviewer has chosen the row.
    match_ambiguous: bool = False
    #: The value matches no row of its reference list, and no reviewer has chosen one.
    match_unmatched: bool = False
    #: The quote lies on OCR text Tesseract read with low confidence (runs/engine.py
    #: `OCR_LOW_CONFIDENCE`): check the value on the page image.
    ocr_low_confidence: bool = False

    #: The flags set, by name, joined with "; " (the long export's `flags` column). Worked
    #: out once, when the flags are made: an export reads it for every row, and joining ten
    #: attribute reads each time cost a tenth of a long CSV's time.
    names: str = field(default="", init=False, repr=False, compare=False)
    #: The flags set, most serious first (FLAG_PRECEDENCE): the first decides how the cell
    #: looks (the results grid's `flag`, its sort by flag). Worked out once, as `names` is.
    ranked: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = "; ".join(name for name in _FLAG_NAMES if getattr(self, name))
        object.__setattr__(self, "names", names)
        ranked = tuple(name for name in FLAG_PRECEDENCE if getattr(self, name))
        object.__setattr__(self, "ranked", ranked)


_FLAG_NAMES: tuple[str, ...] = tuple(f.name for f in fields(CellFlags) if f.init)

#: Most actionable first: a cell shows one state, so when several flags apply the earliest
#: wins (a failed cell has no value to doubt; a stale review matters more than a missing
#: quote). The cell states go failed > not stated > ungrounded > unsupported > low confidence
#: > a value. The one order of the xlsx fills (xlsx_writer.FLAG_FILLS), the results grid's
#: `flag` and its sort by flag (extractions/grid.py).
FLAG_PRECEDENCE: tuple[str, ...] = (
    "failed",
    "review_disagrees",
    "models_disagree",
    "not_found",
    "ungrounded",
    "unsupported_evidence",
    "match_unmatched",
    "match_ambiguous",
    "ocr_low_confidence",
    "low_confidence",
)
NO_FLAGS = CellFlags()
NO_CELL_FLAGS: Mapping[str, CellFlags] = MappingProxyType({})

# The rows are NamedTuples rather than frozen dataclasses: as immutable, and built in a tenth
# of the time (a frozen dataclass sets each field through object.__setattr__), which mattered
# at one row per cell.


class WideRow(NamedTuple):
    """One document: its final value per variable name (absent key = no value)."""

    document_id: str
    filename: str
    values: Mapping[str, JsonValue]
    flags: Mapping[str, CellFlags] = NO_CELL_FLAGS


class LongRow(NamedTuple):
    """One (document, variable) pair with its provenance.

    `status` is the extraction status, or "" when the pair was never extracted; `review_status`
    is "", "accepted", "corrected" or "rejected"; `extracted_value` is the model's value when a
    review corrected it. `flags` highlights the value cell in xlsx the same way as in Results.
    The ids, the statuses, `support` and `match_status` hold ids or fixed words only (the CSV
    writer writes them as they are, without looking for a formula).
    """

    document_id: str
    filename: str
    variable: str
    type: VariableType
    value: JsonValue = None
    status: str = ""
    evidence: str | None = None
    page: int | None = None
    confidence: float | None = None
    grounded: bool | None = None
    review_status: str = ""
    extracted_value: JsonValue = None
    model: str | None = None
    prompt_version: int | None = None
    run_id: str | None = None
    error: str | None = None
    flags: CellFlags = NO_FLAGS
    support: str | None = None
    #: For a variable matched to a reference list: matched, ambiguous or unmatched (a
    #: reviewer's choice of row wins), the row's key, and the score of an automatic match.
    match_status: str | None = None
    match_key: str | None = None
    match_score: float | None = None


@dataclass(frozen=True, slots=True)
class EvaluationTable:
    """An optional extra sheet of small tabular results (e.g. per-variable accuracy).

    Kept generic on purpose: the writers only lay it out; what it measures belongs to its producer.
    """

    columns: Sequence[str]
    rows: Iterable[Sequence[JsonValue]]
    title: str = "Evaluation"


#: The wide layout's column of a variable's flags, with `flags=true`: `<name>__flag`.
FLAG_COLUMN_SUFFIX = "__flag"


def wide_headers(variables: Sequence[ExportVariable], flags: bool = False) -> list[str]:
    """Column headers of the wide layout, refusing names that would collide.

    With `flags`, each variable's column is followed by its `<name>__flag` column. Raises
    ValueError on a duplicate or reserved variable name: a collision would put two values
    under one key (JSON) or one header (CSV), and silently losing a column is worse than a
    clear error.
    """
    names = [v.name for v in variables]
    if flags:
        names = [column for name in names for column in (name, name + FLAG_COLUMN_SUFFIX)]
    counts = Counter(names)
    clashes = sorted({n for n in names if n in RESERVED_VARIABLE_NAMES or counts[n] > 1})
    if clashes:
        raise ValueError(f"variable names collide with other export columns: {clashes}")
    return [*WIDE_FIXED_COLUMNS, *names]
