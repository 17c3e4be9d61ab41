"""GET …/agreement and the xlsx Agreement sheet, against figures worked out here from the
verdicts the reviewers gave (each with its own small formula)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.reviewing.conftest import Team, make_team
from tests.support.api import running_app
from tests.support.fake_llm import FakeLLM

MARKERS = ["ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL"]
VARIABLES: dict[str, tuple[str, list[str]]] = {
    "randomised": ("boolean", []),
    "design": ("category", ["RCT", "Cohort", "Case series"]),
    "sample_size": ("integer", []),
}
MODEL = {
    "randomised": [True, False, True, False, False, False, True, True],
    "design": ["RCT", "RCT", "Cohort", "RCT", "Case series", "RCT", "Cohort", "Cohort"],
    "sample_size": [100, 200, 300, 400, 500, 600, 700, 800],
}
REVIEWER_A = {
    "randomised": [True, True, True, False, False, False, True, False],
    "design": ["RCT", "RCT", "Cohort", "Cohort", "Case series", "RCT", "Cohort", "RCT"],
    "sample_size": [100, 200, 300, 400, 500, 600, 700, 800],
}
REVIEWER_B = {
    "randomised": [True, True, False, False, False, True, True, False],
    "design": ["RCT", "Cohort", "Cohort", "Cohort", "Case series", "RCT", "RCT", "RCT"],
    "sample_size": [100, 201, 300, 400, 500, 600, 700, 799],
}


def observed_and_chance(a: Sequence[Any], b: Sequence[Any]) -> tuple[float, float]:
    """p_o and p_e of two raters' labels on the same items."""
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    chance = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in set(a) | set(b))
    return observed, chance


def kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    observed, chance = observed_and_chance(a, b)
    return (observed - chance) / (1 - chance)


@pytest.fixture
async def reviewed(database_url: str, tmp_path: Path, fake_llm: FakeLLM) -> AsyncIterator[Team]:
    """Eight documents, all reviewed by alice (A) and bob (B) as listed above; the design
    conflict on BRAVO adjudicated to B's Cohort."""
    settings = make_settings(tmp_path, fake_llm, database_url=database_url)
    model = {
        marker: {name: values[i] for name, values in MODEL.items()}
        for i, marker in enumerate(MARKERS)
    }
    async with running_app(settings) as (app, client):
        team = await make_team(app, client, fake_llm, model, VARIABLES)
        await team.settings(review_mode="dual")
        await team.assign(MARKERS, "alice", "bob")
        for who, verdicts in (("alice", REVIEWER_A), ("bob", REVIEWER_B)):
            for name, values in verdicts.items():
                for i, marker in enumerate(MARKERS):
                    if values[i] == MODEL[name][i]:
                        await team.review(who, marker, name, "accepted")
                    else:
                        await team.review(who, marker, name, "corrected", values[i])
        path = f"/conflicts/{team.documents['BRAVO']}/{team.variables['design']}/resolution"
        await team.call("owner", "POST", path, json={"choose": "b"})
        yield team


def figure(figures: list[dict[str, Any]], comparison: str) -> dict[str, Any]:
    return next(f for f in figures if f["comparison"] == comparison)


async def test_agreement_figures_per_variable_and_overall(reviewed: Team) -> None:
    out = await reviewed.call("vera", "GET", "/agreement")  # a viewer may read them
    by_name = {v["name"]: v for v in out["variables"]}
    assert out["double_reviewed"] == 24
    disagreements = sum(
        a != b
        for name in VARIABLES
        for a, b in zip(REVIEWER_A[name], REVIEWER_B[name], strict=True)
    )
    assert out["conflicts"] == disagreements and out["resolved"] == 1

    for name in ("randomised", "design"):
        variable = by_name[name]
        assert variable["measure"] == "kappa"
        a, b, model = REVIEWER_A[name], REVIEWER_B[name], MODEL[name]
        reviewers = figure(variable["figures"], "reviewers")
        agreed = sum(x == y for x, y in zip(a, b, strict=True))
        assert (reviewers["compared"], reviewers["agreed"]) == (8, agreed)
        assert reviewers["agreement"] == pytest.approx(agreed / 8, abs=1e-4)
        assert reviewers["kappa"] == pytest.approx(kappa(a, b), abs=1e-4)
        assert figure(variable["figures"], "model_vs_a")["kappa"] == pytest.approx(
            kappa(model, a), abs=1e-4
        )
        assert figure(variable["figures"], "model_vs_b")["kappa"] == pytest.approx(
            kappa(model, b), abs=1e-4
        )
        people = {
            f["label"]: f for f in variable["figures"] if f["comparison"] == "model_vs_reviewer"
        }
        assert people["Model vs alice@example.org"]["kappa"] == pytest.approx(
            kappa(model, a), abs=1e-4
        )

    # The final values: where A and B agree, their value; BRAVO's design, B's (adjudicated).
    design_final = [
        a if a == b else ("Cohort" if i == 1 else None)
        for i, (a, b) in enumerate(zip(REVIEWER_A["design"], REVIEWER_B["design"], strict=True))
    ]
    pairs = [(m, f) for m, f in zip(MODEL["design"], design_final, strict=True) if f is not None]
    final = figure(by_name["design"]["figures"], "model_vs_final")
    assert final["compared"] == len(pairs)
    assert final["kappa"] == pytest.approx(
        kappa([m for m, _ in pairs], [f for _, f in pairs]), abs=1e-4
    )

    # Numbers: agreement within the tolerance, no kappa.
    sizes = by_name["sample_size"]
    assert sizes["measure"] == "within_tolerance"
    assert figure(sizes["figures"], "reviewers")["agreed"] == 6
    assert figure(sizes["figures"], "reviewers")["kappa"] is None
    lenient = await reviewed.call("owner", "GET", "/agreement", params={"absolute_tolerance": 1})
    sizes = next(v for v in lenient["variables"] if v["name"] == "sample_size")
    assert figure(sizes["figures"], "reviewers")["agreed"] == 8

    # Overall: agreement pooled over every cell, kappa pooled over boolean and category.
    overall = figure(out["overall"], "reviewers")
    assert (overall["compared"], overall["agreed"]) == (24, 24 - disagreements)
    first = observed_and_chance(REVIEWER_A["randomised"], REVIEWER_B["randomised"])
    second = observed_and_chance(REVIEWER_A["design"], REVIEWER_B["design"])
    mean_observed, mean_chance = (first[0] + second[0]) / 2, (first[1] + second[1]) / 2
    assert overall["kappa"] == pytest.approx(
        (mean_observed - mean_chance) / (1 - mean_chance), abs=1e-4
    )


async def test_the_workbook_has_an_agreement_sheet(reviewed: Team) -> None:
    book = await reviewed.workbook("owner")
    sheet = book["Agreement"]
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    assert header[:4] == ("variable", "type", "measure", "comparison")
    found = {(r[0], r[3]): dict(zip(header, r, strict=True)) for r in rows[1:]}
    row = found[("randomised", "Reviewer A vs reviewer B")]
    assert row["kappa"] == pytest.approx(
        kappa(REVIEWER_A["randomised"], REVIEWER_B["randomised"]), abs=1e-4
    )
    assert row["compared"] == 8
    assert ("(all variables)", "Reviewer A vs reviewer B") in found
    # The adjudicated value is the export's.
    results = book["Results"]
    header = [c.value for c in results[1]]
    bravo = next(r for r in results.iter_rows(min_row=2, values_only=True) if r[1] == "BRAVO.txt")
    assert bravo[header.index("design")] == "Cohort"
