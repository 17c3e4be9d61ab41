"""Agreement figures and the rules of a cell's verdict, as pure functions."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from quarry.evaluation.compare import Tolerance
from quarry.reviewing.agreement import Tally, cohens_kappa, pooled_kappa
from quarry.reviewing.verdicts import (
    Lens,
    Verdict,
    seen_by,
    settle,
    values_agree,
    verdicts_agree,
)
from quarry.variables.types import TypeSpec, VariableType

BOOLEAN = TypeSpec(VariableType.BOOLEAN)
CATEGORY = TypeSpec(VariableType.CATEGORY, ("RCT", "Cohort", "Case series"))
NUMBER = TypeSpec(VariableType.NUMBER)
DATE = TypeSpec(VariableType.DATE)
TEXT = TypeSpec(VariableType.TEXT)
A, B, C = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def table(yes_yes: int, yes_no: int, no_yes: int, no_no: int) -> list[tuple[str, str]]:
    """Two raters' verdicts on items, from the cells of their 2 × 2 table."""
    return (
        [("yes", "yes")] * yes_yes
        + [("yes", "no")] * yes_no
        + [("no", "yes")] * no_yes
        + [("no", "no")] * no_no
    )


@pytest.mark.parametrize(
    ("cells", "kappa"),
    [
        # Wikipedia, "Cohen's kappa", the worked example: p_o = 0.7, p_e = 0.5.
        ((20, 5, 10, 15), 0.4),
        # Its two examples of equal agreement (p_o = 0.6) and different kappas.
        ((45, 15, 25, 15), 0.1304),
        ((25, 35, 5, 35), 0.2593),
    ],
)
def test_cohens_kappa_matches_textbook_examples(
    cells: tuple[int, int, int, int], kappa: float
) -> None:
    assert cohens_kappa(table(*cells)) == pytest.approx(kappa, abs=5e-5)


def test_kappa_is_undefined_without_items_or_variation() -> None:
    assert cohens_kappa([]) is None
    assert cohens_kappa(table(10, 0, 0, 0)) is None  # p_e = 1: both always said yes
    assert cohens_kappa(table(0, 10, 0, 0)) == 0.0  # each always said one thing, never agreed


def test_three_categories_and_chance_agreement() -> None:
    # Three categories, 100 items: p_o = 0.70; marginals a 0.5 / 0.6, b 0.3 / 0.3, c 0.2 / 0.1.
    pairs = (
        [("a", "a")] * 44 + [("a", "b")] * 5 + [("a", "c")] * 1
        + [("b", "a")] * 7 + [("b", "b")] * 20 + [("b", "c")] * 3
        + [("c", "a")] * 9 + [("c", "b")] * 5 + [("c", "c")] * 6
    )  # fmt: skip
    observed = 0.70
    chance = 0.50 * 0.60 + 0.30 * 0.30 + 0.20 * 0.10
    assert cohens_kappa(pairs) == pytest.approx((observed - chance) / (1 - chance))


def test_tallies_count_type_aware_agreement() -> None:
    tally = Tally(kappa=True)
    tolerance = Tolerance()
    assert tally.add(CATEGORY, ("accepted", "RCT"), ("corrected", "rct"), tolerance)
    assert not tally.add(CATEGORY, ("accepted", "RCT"), ("rejected", None), tolerance)
    assert tally.add(CATEGORY, ("rejected", None), ("rejected", "ignored"), tolerance)
    assert not tally.add(CATEGORY, ("no_answer", None), ("corrected", None), tolerance)
    assert (tally.compared, tally.agreed, tally.agreement) == (4, 2, 0.5)
    # Categories: RCT twice on A's side, rejected twice … the kappa of those pairs.
    assert tally.cohens_kappa == pytest.approx(round(cohens_kappa(tally.pairs) or 0, 4))
    numbers = Tally(kappa=False)
    assert numbers.add(NUMBER, ("accepted", 200), ("corrected", 201), Tolerance(absolute=1))
    assert not numbers.add(NUMBER, ("accepted", 200), ("corrected", 201), tolerance)
    assert numbers.cohens_kappa is None


def test_pooled_kappa_averages_observed_and_chance_agreement() -> None:
    first, second = Tally(kappa=True), Tally(kappa=True)
    first.pairs, second.pairs = table(20, 5, 10, 15), table(45, 15, 25, 15)
    # Mean p_o = (0.7 + 0.6) / 2, mean p_e = (0.5 + 0.54) / 2.
    expected = (0.65 - 0.52) / (1 - 0.52)
    assert pooled_kappa([first, second, Tally(kappa=False)]) == pytest.approx(expected, abs=5e-5)
    assert pooled_kappa([Tally(kappa=True)]) is None


@pytest.mark.parametrize(
    ("spec", "a", "b", "agree"),
    [
        (NUMBER, 3.5, 3.5000001, True),
        (NUMBER, 1, 2, False),
        (DATE, "2021", "2021-03-04", True),  # at the precision of the less precise
        (DATE, "2021-03-04", "2021", True),
        (DATE, "2021-04", "2021-03-04", False),
        (TEXT, "The ALPHA trial.", "the alpha trial", True),
        (CATEGORY, "RCT", None, False),
        (CATEGORY, None, None, True),
        (BOOLEAN, True, False, False),
    ],
)
def test_values_agree_type_aware_and_symmetric(spec: TypeSpec, a: Any, b: Any, agree: bool) -> None:
    assert values_agree(spec, a, b) is agree
    assert values_agree(spec, b, a) is agree


def verdict(
    kind: str, reviewer: uuid.UUID | None, value: Any, at: int, status: str = "corrected"
) -> Verdict[str]:
    return Verdict(kind, reviewer, status, value, (at, uuid.uuid4()), f"{kind}:{value}@{at}")


def test_the_final_verdict_is_adjudication_then_agreement_then_single() -> None:
    single = verdict("single", C, "Cohort", 9)
    a_old, a_new = verdict("independent", A, "Case series", 1), verdict("independent", A, "RCT", 5)
    b = verdict("independent", B, "rct", 2)
    state = settle([single, a_old, a_new, b], (A, B), CATEGORY)
    assert state.agree is True and state.final is a_new  # agreed beats a newer single review
    state = settle([single, a_old, b], (A, B), CATEGORY)
    assert state.conflict and state.final is single  # a conflict: the single review stands
    adjudication = verdict("adjudication", C, "Cohort", 0)
    assert settle([a_old, b, adjudication], (A, B), CATEGORY).final is adjudication
    # Only the assigned reviewers' verdicts count.
    assert settle([a_new, b], (A, C), CATEGORY).final is None
    # Agreeing dates: the more precise one is the value.
    month, day = verdict("independent", A, "2021-03", 1), verdict("independent", B, "2021-03-04", 1)
    assert settle([month, day], (A, B), DATE).final is day
    assert not verdicts_agree(CATEGORY, ("rejected", None), ("accepted", "RCT"))


def test_blinded_reviewers_see_their_own_verdict_until_both_have_reviewed() -> None:
    a = verdict("independent", A, "RCT", 1)
    b = verdict("independent", B, "Cohort", 2)
    one = settle([a], (A, B), CATEGORY)
    both = settle([a, b], (A, B), CATEGORY)
    as_b = Lens(viewer=B, dual=True, blind=True)
    seen = seen_by(as_b, one, (A, B))
    assert (seen.review, seen.sealed, seen.model_hidden) == (None, True, True)
    seen = seen_by(Lens(viewer=A, dual=True, blind=True), one, (A, B))
    assert (seen.review, seen.model_hidden) == (a, False)
    assert seen_by(as_b, both, (A, B)).sealed is False
    # A reviewer-role member not on the document is blinded too; an owner who is not, never.
    assert seen_by(Lens(viewer=C, dual=True, reviewer_role=True), one, (A, B)).sealed
    assert not seen_by(Lens(viewer=C, dual=True), one, (A, B)).sealed
    # Single review: nobody is blinded.
    assert not seen_by(Lens(viewer=B, reviewer_role=True), one, (A, B)).sealed
