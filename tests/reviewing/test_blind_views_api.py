"""What dual review keeps from a blinded reviewer everywhere a project's values show, not only
in the results list: cases and findings (and the export's cases layout and sheets), the
evaluation, and the extractions list's filters (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from tests.conftest import make_settings
from tests.reviewing.conftest import Team, make_team
from tests.runs import test_two_profiles as two_profiles
from tests.support.api import list_extractions, running_app
from tests.support.fake_llm import FakeLLM
from tests.support.members import add_member

#: Two documents of one client (Smith) giving different dates of birth, one of another.
CASE_VARIABLES: dict[str, tuple[str, list[str]]] = {
    "client": ("text", []),
    "dob": ("date", []),
    "design": ("category", ["RCT", "Cohort", "Case series"]),
}
CASE_MODEL: dict[str, dict[str, Any]] = {
    "ALPHA": {"client": "Smith", "dob": "1980-05-01", "design": "RCT"},
    "BETA": {"client": "Smith", "dob": "1980-05-10"},  # design: not stated
    "GAMMA": {"client": "Chen", "dob": "1975-01-01", "design": "Cohort"},
}


@pytest.fixture
async def case_team(database_url: str, tmp_path: Path, fake_llm: FakeLLM) -> AsyncIterator[Team]:
    settings = make_settings(tmp_path, fake_llm, database_url=database_url)
    async with running_app(settings) as (app, client):
        team = await make_team(app, client, fake_llm, CASE_MODEL, CASE_VARIABLES)
        await team.call(
            "owner",
            "PATCH",
            f"/variables/{team.variables['dob']}",
            json={"checks": {"must_agree_within_case": True}},
        )
        await team.settings(case_key={"variable": "client"})
        yield team


async def _cases(team: Team, who: str) -> dict[str, dict[str, Any]]:
    page = await team.call(who, "GET", "/cases")
    return {
        case["key"]: {
            "documents": sorted(d["filename"] for d in case["documents"]),
            "dob": case["values"]["dob"]["value"],
            "open_findings": case["open_findings"],
        }
        for case in page["items"]
    }


async def _findings(team: Team, who: str) -> list[dict[str, Any]]:
    return (await team.call(who, "GET", "/findings"))["items"]  # type: ignore[no-any-return]


def _values(finding: dict[str, Any]) -> set[tuple[str, str]]:
    return {(v["value"], d["filename"]) for v in finding["values"] for d in v["documents"]}


async def _cases_export(team: Team, who: str) -> list[dict[str, Any]]:
    params = {"format": "json", "layout": "cases"}
    return await team.call(who, "GET", "/export", params=params)  # type: ignore[no-any-return]


async def test_cases_and_findings_show_a_blind_reviewer_only_what_they_may_see(
    case_team: Team,
) -> None:
    team = case_team
    await team.settings(review_mode="dual", review_blind=True)
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    # The owner sees the model's values: the Smith documents disagree on the date of birth.
    assert await _cases(team, "owner") == {
        "Chen": {"documents": ["GAMMA.txt"], "dob": "1975-01-01", "open_findings": 0},
        "Smith": {"documents": ["ALPHA.txt", "BETA.txt"], "dob": "1980-05-01", "open_findings": 1},
    }
    [finding] = await _findings(team, "owner")
    assert _values(finding) == {("1980-05-01", "ALPHA.txt"), ("1980-05-10", "BETA.txt")}

    # Bob has reviewed nothing: every case key is a model value hidden from him.
    assert await _cases(team, "bob") == {}
    assert await _findings(team, "bob") == []
    assert await _cases_export(team, "bob") == []
    book = openpyxl.load_workbook(
        io.BytesIO((await team.call("bob", "GET", "/export", params={"format": "xlsx"})).content)
    )
    assert book["Cases"].max_row == 1 and book["Findings"].max_row == 1  # headers only
    # A reviewer not on the documents is blinded on them too (the reviewer role).
    assert await _cases(team, "carol") == {}
    rows = await _cases_export(team, "owner")
    assert {r["case_key"]: r["dob"] for r in rows} == {"Chen": "1975-01-01", "Smith": "1980-05-01"}

    # Having reviewed ALPHA's client and date, Bob sees a Smith case of ALPHA with his values.
    await team.review("bob", "ALPHA", "client", "corrected", "Smith")
    await team.review("bob", "ALPHA", "dob", "corrected", "1980-05-02")
    assert await _cases(team, "bob") == {
        "Smith": {"documents": ["ALPHA.txt"], "dob": "1980-05-02", "open_findings": 0}
    }
    [row] = await _cases_export(team, "bob")
    assert (row["case_key"], row["dob"]) == ("Smith", "1980-05-02")
    # Alice sees none of it: Bob's verdicts are his until both have reviewed.
    assert await _cases(team, "alice") == {}
    # The owner's view has not moved: one independent verdict is not a final value.
    assert (await _cases(team, "owner"))["Smith"]["dob"] == "1980-05-01"

    # Neither reviewer may resolve the finding they cannot see (404, as if it were not there).
    path = f"/findings/{finding['id']}/resolution"
    body = {"resolution": "value", "value": "1980-05-01"}
    await team.call("bob", "POST", path, expect=404, json=body)

    # Once both have reviewed every cell of the finding alike, it is everyone's again.
    await team.review("bob", "BETA", "client", "corrected", "Smith")
    await team.review("bob", "BETA", "dob", "corrected", "1980-05-10")
    for marker, dob in (("ALPHA", "1980-05-02"), ("BETA", "1980-05-10")):
        await team.review("alice", marker, "client", "corrected", "Smith")
        await team.review("alice", marker, "dob", "corrected", dob)
    [seen] = await _findings(team, "bob")
    assert _values(seen) == {("1980-05-02", "ALPHA.txt"), ("1980-05-10", "BETA.txt")}
    assert seen == (await _findings(team, "owner"))[0]
    resolved = await team.call("bob", "POST", f"/findings/{seen['id']}/resolution", json=body)
    assert resolved["status"] == "resolved"
    assert (await _cases(team, "alice"))["Smith"]["dob"] == "1980-05-01"


async def test_a_dual_reviewer_never_sees_the_other_reviewers_verdict_in_cases(
    case_team: Team,
) -> None:
    team = case_team
    await team.settings(review_mode="dual")
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    # Alice corrects BETA's date to agree with ALPHA's: in her view there is no finding.
    await team.review("alice", "BETA", "dob", "corrected", "1980-05-01")
    assert await _findings(team, "alice") == []
    assert (await _cases(team, "alice"))["Smith"]["open_findings"] == 0
    # Bob (not blind: he sees the model's values) still reads the model's BETA date.
    [finding] = await _findings(team, "bob")
    assert _values(finding) == {("1980-05-01", "ALPHA.txt"), ("1980-05-10", "BETA.txt")}
    rows = await _cases_export(team, "bob")
    assert next(r for r in rows if r["case_key"] == "Smith")["open_findings"] == 1
    # Bob sees it, but its BETA cell is not reviewed by both: he may not resolve it yet.
    path = f"/findings/{finding['id']}/resolution"
    refused = await team.call("bob", "POST", path, expect=403, json={"resolution": "both_correct"})
    assert "dual review" in refused["detail"] and "both" in refused["detail"]
    # Alice's view has no such finding; the owner (on no document) resolves it.
    await team.call("alice", "POST", path, expect=404, json={"resolution": "both_correct"})
    resolved = await team.call("owner", "POST", path, json={"resolution": "both_correct"})
    assert resolved["status"] == "resolved"


def _gold_csv(rows: dict[str, dict[str, Any]]) -> bytes:
    columns = sorted({c for values in rows.values() for c in values})
    lines = [",".join(["filename", *columns])]
    for marker, values in rows.items():
        lines.append(",".join([f"{marker}.txt", *(str(values.get(c, "")) for c in columns)]))
    return ("\n".join(lines) + "\n").encode()


async def _evaluate_csv(team: Team, who: str, gold: bytes, expect: int = 200) -> Any:
    return await team.call(
        who,
        "POST",
        "/evaluation",
        expect=expect,
        files={"gold": ("gold.csv", gold, "text/csv")},
    )


async def test_evaluation_is_refused_while_blind_review_hides_the_models_answers(
    case_team: Team,
) -> None:
    team = case_team
    await team.settings(review_mode="dual", review_blind=True)
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    gold = _gold_csv({"ALPHA": {"dob": "1980-05-01", "design": "RCT"}})
    owner = await _evaluate_csv(team, "owner", gold)
    assert (owner["overall"]["compared"], owner["overall"]["correct"]) == (2, 2)
    refused = await _evaluate_csv(team, "bob", gold, expect=403)
    assert "blind dual review" in refused["detail"] and "2 of the cells" in refused["detail"]
    # A run's extractions are the model's answers too.
    run_id = (await team.call("owner", "GET", "/runs"))["items"][0]["id"]
    response = await team.client.post(
        team.url("/evaluation"),
        headers=team.headers["bob"],
        files={"gold": ("gold.csv", gold, "text/csv")},
        data={"run_id": run_id},
    )
    assert response.status_code == 403, response.text

    # Having reviewed both cells, Bob is measured with what he sees: his own verdicts.
    await team.review("bob", "ALPHA", "dob", "corrected", "1980-05-01")
    await team.review("bob", "ALPHA", "design", "corrected", "Cohort")
    bob = await _evaluate_csv(team, "bob", gold)
    [alpha] = bob["per_document"]
    assert {c["variable"]: c["predicted"] for c in alpha["cells"]} == {
        "dob": "1980-05-01",
        "design": "Cohort",
    }
    # Alice has not: still refused; the owner still measures the model's values.
    await _evaluate_csv(team, "alice", gold, expect=403)
    assert (await _evaluate_csv(team, "owner", gold))["overall"]["correct"] == 2


async def test_evaluation_against_reviews_uses_only_the_verdicts_the_caller_sees(
    case_team: Team,
) -> None:
    team = case_team
    await team.settings(review_mode="dual", review_blind=True)
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    await team.review("alice", "ALPHA", "design", "corrected", "Cohort")
    params = {"gold": "reviews"}
    # Bob sees no verdict (Alice's is hers), so he has no gold; nor has the owner (no
    # final value yet: one independent verdict).
    refused = await team.call("bob", "GET", "/evaluation", expect=400, params=params)
    assert "no accepted or corrected reviews" in refused["detail"]
    await team.call("owner", "GET", "/evaluation", expect=400, params=params)
    # Alice is measured against her own verdict, on the cell she has reviewed only.
    alice = await team.call("alice", "GET", "/evaluation", params=params)
    assert (alice["overall"]["compared"], alice["overall"]["correct"]) == (1, 0)
    [cell] = alice["per_document"][0]["cells"]
    assert (cell["variable"], cell["gold"], cell["predicted"]) == ("design", "Cohort", "RCT")


async def _listed(team: Team, who: str, **params: Any) -> set[tuple[str, str]]:
    page = await team.call(who, "GET", "/extractions", params={"limit": 500, **params})
    markers = {v: k for k, v in team.documents.items()}
    names = {v: k for k, v in team.variables.items()}
    return {(markers[e["document_id"]], names[e["variable_id"]]) for e in page["items"]}


async def test_the_status_filter_tells_a_blind_reviewer_nothing_the_rows_do_not(
    case_team: Team,
) -> None:
    team = case_team
    not_stated = {("BETA", "design")}
    assert await _listed(team, "bob", status="not_found") == not_stated
    await team.settings(review_mode="dual", review_blind=True)
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    everything = await _listed(team, "owner")
    assert len(everything) == 9
    assert await _listed(team, "owner", status="not_found") == not_stated
    # To Bob every answered cell reads succeeded, "not stated" by the model included.
    assert await _listed(team, "bob", status="not_found") == set()
    assert await _listed(team, "bob", status="succeeded") == everything
    assert await _listed(team, "bob", status="failed") == set()
    assert await _listed(team, "bob", agreement="disagree") == set()  # two profiles' verdict
    # Once he has reviewed the cell, it shows what the model said, filter included.
    await team.review("bob", "BETA", "design", "corrected", "RCT")
    assert await _listed(team, "bob", status="not_found") == not_stated
    assert await _listed(team, "bob", status="succeeded") == everything - not_stated
    # Alice, his co-reviewer, has not: to her it is still an answer like any other.
    assert await _listed(team, "alice", status="not_found") == set()
    # Without blindness the filter is the model's, for everyone.
    await team.settings(review_blind=False)
    assert await _listed(team, "alice", status="not_found") == not_stated


async def test_a_blind_reviewer_is_not_shown_where_two_models_disagree(
    database_url: str, tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = two_profiles.model_reply
    settings = make_settings(tmp_path, fake_llm, database_url=database_url)
    async with running_app(settings) as (app, client):
        owner, pid, run = await two_profiles.two_profile_run(app, client, fake_llm)
        rita = await add_member(app, client, owner, pid, "rita@example.org", "reviewer")
        response = await client.patch(
            f"/api/v1/projects/{pid}",
            json={"review_mode": "dual", "review_blind": True},
            headers=owner,
        )
        assert response.status_code == 200, response.text

        async def listed(headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
            return await list_extractions(client, headers, pid, run_id=run["id"], **params)

        owners = await listed(owner)
        assert [r["agreement"] for r in owners[:3]] == ["disagree", "disagree", "one_missing"]
        assert len(await listed(owner, agreement="disagree")) == 2
        assert len(await listed(owner, status="failed")) == 1  # the second model's answer
        assert len(await listed(owner, status="not_found")) == 1

        mine = await listed(rita)
        assert {r["id"] for r in mine} == {r["id"] for r in owners}
        assert {r["agreement"] for r in mine} == {None}
        # Neither the order nor a filter says where the models disagree or what they said.
        assert {r["id"] for r in mine[:2]} != {r["id"] for r in owners[:2]}
        assert await listed(rita, agreement="disagree") == []
        assert await listed(rita, agreement="one_missing") == []
        assert await listed(rita, status="failed") == []
        assert await listed(rita, status="not_found") == []
        assert len(await listed(rita, status="succeeded")) == 9
