"""Which of a cell's verdicts is its value, and what a reviewer may see of them (pure).

A cell (document, variable) holds review rows of three kinds (`ReviewKind`), never updated.
Its *final* verdict — the value exports, cases and evaluations use — is, in this order:

1. its newest **adjudication** (an owner's or the adjudicator's resolution);
2. else its two assigned reviewers' current **independent** verdicts (each one's newest),
   when both exist and agree (`verdicts_agree`: type-aware, as the evaluation compares);
3. else its newest **single** review (single-review mode);
4. else none: the model's answer stands.

Independent verdicts count only from the document's assigned reviewers (slot 1, reviewer A;
slot 2, reviewer B); a reviewer moved off a document keeps their verdicts in the history.
Both present and different: the cell is a **conflict**, open until adjudicated.

Blindness (dual mode only): a member in the reviewer role, or anyone assigned to the
document, is *blinded* on its cells until both assigned reviewers have reviewed a cell: they
see their own verdict and nobody else's (nor the cell's final verdict), and with the
project's `review_blind` setting not the model's answer either, until they have reviewed it
themselves. Owners, editors and viewers not assigned to a document see everything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from quarry.evaluation.compare import (
    InvalidValue,
    Prediction,
    PredictionState,
    Tolerance,
    compare_cell,
    parse_gold,
)
from quarry.models import ReviewKind, ReviewStatus
from quarry.variables.types import TypeSpec, VariableType

T = TypeVar("T")

_ADJUDICATION = ReviewKind.ADJUDICATION.value
_INDEPENDENT = ReviewKind.INDEPENDENT.value
_REJECTED = ReviewStatus.REJECTED.value
#: The model's side of a comparison when it gave no answer (failed, unfinished, none).
NO_ANSWER = "no_answer"
DEFAULT_TOLERANCE = Tolerance()


class ReviewMode(StrEnum):
    SINGLE = "single"
    DUAL = "dual"


#: A document's reviewers: (reviewer A, reviewer B), either None while the slot is free.
Assigned = tuple[uuid.UUID | None, uuid.UUID | None]
UNASSIGNED: Assigned = (None, None)


@dataclass(frozen=True, slots=True)
class Verdict(Generic[T]):
    """One review row as the rules see it; `row` is what the caller gets back (an ORM
    Review, an export's CurrentReview …). `order` sorts verdicts oldest to newest."""

    kind: str
    reviewer: uuid.UUID | None
    status: str
    value: Any
    order: Any
    row: T


def values_agree(
    spec: TypeSpec | None, a: Any, b: Any, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> bool:
    """Two values (None: not stated) mean the same, compared as the evaluation compares a
    prediction with a gold value (quarry.evaluation.compare), in both directions alike: dates
    at the precision of the less precise one ("2021" agrees with "2021-03-04")."""
    if spec is None:
        return bool(a == b)
    try:
        first, second = parse_gold(spec, a), parse_gold(spec, b)
    except InvalidValue:
        return bool(a == b)  # a value that no longer fits its variable: only itself
    if (
        spec.type is VariableType.DATE
        and isinstance(first, str)
        and isinstance(second, str)
        and len(second) < len(first)
    ):
        first, second = second, first
    state = PredictionState.NOT_STATED if second is None else PredictionState.VALUE
    return bool(compare_cell(spec, first, Prediction(state, second), tolerance).correct)


def verdicts_agree(
    spec: TypeSpec | None,
    a: tuple[str, Any],
    b: tuple[str, Any],
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> bool:
    """Two (status, value) verdicts agree: both rejected the value, or neither did and
    their values agree. An accepted value is the value accepted; NO_ANSWER (the model's side
    without an answer) agrees with nothing."""
    (status_a, value_a), (status_b, value_b) = a, b
    if NO_ANSWER in (status_a, status_b):
        return False
    if status_a == _REJECTED or status_b == _REJECTED:
        return status_a == status_b
    return values_agree(spec, value_a, value_b, tolerance)


@dataclass(frozen=True, slots=True)
class CellState(Generic[T]):
    """A cell's verdicts sorted out: the final one, the assigned reviewers' current ones."""

    final: Verdict[T] | None
    first: Verdict[T] | None
    second: Verdict[T] | None
    adjudication: Verdict[T] | None
    #: Both assigned reviewers have a current verdict and they agree (None: not both yet).
    agree: bool | None

    @property
    def both_reviewed(self) -> bool:
        return self.first is not None and self.second is not None

    @property
    def conflict(self) -> bool:
        """The two reviewers disagree (resolved or not)."""
        return self.agree is False


EMPTY: CellState[Any] = CellState(None, None, None, None, None)


def _more_precise(spec: TypeSpec | None, a: Verdict[T], b: Verdict[T]) -> Verdict[T]:
    """Of two agreeing verdicts, the one a final value takes: reviewer A's, unless B's date
    says more ("2021-03-04" beside A's "2021")."""
    if (
        spec is not None
        and spec.type is VariableType.DATE
        and isinstance(a.value, str)
        and isinstance(b.value, str)
        and len(b.value) > len(a.value)
    ):
        return b
    return a


def settle(
    verdicts: Iterable[Verdict[T]],
    assigned: Assigned,
    spec: TypeSpec | None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> CellState[T]:
    """Sort out one cell's verdicts (any order) by the rules of the module docstring."""
    adjudication: Verdict[T] | None = None
    single: Verdict[T] | None = None
    first: Verdict[T] | None = None
    second: Verdict[T] | None = None
    reviewer_a, reviewer_b = assigned
    for verdict in verdicts:
        kind = verdict.kind
        if kind == _ADJUDICATION:
            if adjudication is None or verdict.order > adjudication.order:
                adjudication = verdict
        elif kind == _INDEPENDENT:
            if verdict.reviewer is None:
                continue
            if verdict.reviewer == reviewer_a:
                if first is None or verdict.order > first.order:
                    first = verdict
            elif verdict.reviewer == reviewer_b and (
                second is None or verdict.order > second.order
            ):
                second = verdict
        elif single is None or verdict.order > single.order:  # a single review
            single = verdict
    agree: bool | None = None
    if first is not None and second is not None:
        agree = verdicts_agree(
            spec, (first.status, first.value), (second.status, second.value), tolerance
        )
    final = adjudication
    if final is None and agree and first is not None and second is not None:
        final = _more_precise(spec, first, second)
    if final is None:
        final = single
    return CellState(final, first, second, adjudication, agree)


@dataclass(frozen=True, slots=True)
class Lens:
    """Who looks at the cells, for the blindness rules (the module docstring)."""

    viewer: uuid.UUID | None = None
    dual: bool = False
    blind: bool = False
    #: A member in the reviewer role: blinded on every document, assigned to it or not.
    reviewer_role: bool = False

    def blinded(self, assigned: Assigned) -> bool:
        return self.dual and (
            self.reviewer_role or (self.viewer is not None and self.viewer in assigned)
        )


#: Sees every verdict (owners and editors not assigned to the document, single mode).
OPEN_LENS = Lens()


@dataclass(frozen=True, slots=True)
class Seen(Generic[T]):
    """What a viewer sees of a cell."""

    #: The verdict shown as the cell's review: its final one, or while sealed the viewer's own.
    review: Verdict[T] | None
    #: The viewer's own current independent verdict, if they are one of its reviewers.
    own: Verdict[T] | None
    #: The other reviewer's verdict and the final one are hidden (not both reviewed yet).
    sealed: bool
    #: The model's answer is hidden (blind review, and the viewer has not reviewed it).
    model_hidden: bool


def seen_by(lens: Lens, state: CellState[T], assigned: Assigned) -> Seen[T]:
    """What `lens`'s viewer may see of a cell in `state` whose reviewers are `assigned`."""
    own = None
    if lens.viewer is not None:
        if assigned[0] == lens.viewer:
            own = state.first
        elif assigned[1] == lens.viewer:
            own = state.second
    if not lens.blinded(assigned) or state.both_reviewed:
        return Seen(state.final, own, False, False)
    return Seen(own, own, True, lens.blind and own is None)


@dataclass(frozen=True, slots=True)
class DualView(Generic[T]):
    """A cell's dual-review state as a viewer may see it (the `dual_review` of GET
    …/extractions and GET …/results)."""

    #: The viewer's slot on the document: reviewer "a" or "b" (None: not theirs).
    slot: Literal["a", "b"] | None
    #: The viewer's own current independent verdict.
    own: Verdict[T] | None
    both_reviewed: bool
    #: Once both have reviewed and the viewer may know it: whether they agree.
    agree: bool | None
    adjudicated: bool


def dual_view(lens: Lens, state: CellState[T], assigned: Assigned) -> DualView[T]:
    """What `lens`'s viewer may see of a cell's dual review (sealed: not whether the two
    reviewers agree, nor that the cell was adjudicated)."""
    seen = seen_by(lens, state, assigned)
    slot: Literal["a", "b"] | None = None
    if lens.viewer is not None and lens.viewer in assigned:
        slot = "a" if assigned[0] == lens.viewer else "b"
    return DualView(
        slot,
        seen.own,
        state.both_reviewed,
        None if seen.sealed else state.agree,
        not seen.sealed and state.adjudication is not None,
    )


def model_side(status: str | None, value: Any, answered: bool) -> tuple[str, Any]:
    """The model's answer as a verdict to compare with a reviewer's: its value (None: not
    stated) when it answered, else NO_ANSWER."""
    if not answered or status is None:
        return NO_ANSWER, None
    return ReviewStatus.ACCEPTED.value, value


__all__ = [
    "DEFAULT_TOLERANCE",
    "EMPTY",
    "NO_ANSWER",
    "OPEN_LENS",
    "UNASSIGNED",
    "Assigned",
    "CellState",
    "DualView",
    "Lens",
    "ReviewMode",
    "Seen",
    "Verdict",
    "dual_view",
    "model_side",
    "seen_by",
    "settle",
    "values_agree",
    "verdicts_agree",
]
