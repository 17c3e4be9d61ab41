"""GET …/results under dual review (SQLite and PostgreSQL): each member's grid holds what
their own export holds, and a blinded reviewer learns from its cells, filters, searches and
counts no more than GET …/extractions tells them."""

from __future__ import annotations

from typing import Any

from tests.reviewing.conftest import Team


async def grid(team: Team, who: str, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = await team.call(who, "GET", "/results", params=params)
    return page


def cells(team: Team, page: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    names = {v: k for k, v in team.variables.items()}
    return {
        (row["document"]["filename"].removesuffix(".txt"), names[c["variable_id"]]): c
        for row in page["items"]
        for c in row["cells"]
    }


def filenames(page: dict[str, Any]) -> list[str]:
    return [row["document"]["filename"] for row in page["items"]]


async def assert_grid_is_the_export(team: Team, who: str) -> None:
    shown = cells(team, await grid(team, who))
    exported = await team.export_json(who)
    for (marker, variable), cell in shown.items():
        assert cell["value"] == exported[marker][variable], (who, marker, variable)


async def test_a_blind_reviewer_sees_in_the_grid_only_what_they_may_see(team: Team) -> None:
    await team.settings(review_mode="dual", review_blind=True)
    await team.assign(["ALPHA", "BETA"], "alice", "bob")

    # Bob has reviewed nothing: the model's answers are withheld from every cell of his.
    bob = cells(team, await grid(team, "bob"))
    hidden = bob[("ALPHA", "sample_size")]
    assert hidden["model_hidden"] is True
    assert (hidden["value"], hidden["flags"], hidden["flag"], hidden["review"]) == (
        None,
        [],
        None,
        None,
    )
    assert hidden["extraction"]["status"] == "succeeded"
    assert (hidden["extraction"]["value"], hidden["extraction"]["confidence"]) == (None, None)
    assert hidden["dual_review"] == {
        "assigned": "b",
        "your_review": None,
        "both_reviewed": False,
        "agree": None,
        "adjudicated": False,
    }
    # His searches and sorts read only what he sees; everything is left for him to review.
    assert filenames(await grid(team, "bob", value="120")) == []
    assert filenames(await grid(team, "owner", value="120")) == ["ALPHA.txt"]
    unreviewed = await grid(team, "bob", review="unreviewed")
    assert filenames(unreviewed) == ["ALPHA.txt", "BETA.txt", "GAMMA.txt"]
    flags = {c["value"]: c["documents"] for c in unreviewed["counts"]["flag"] if c["documents"]}
    assert flags == {}
    # The owner sees the model's value, and that the document is not theirs to review.
    owner = cells(team, await grid(team, "owner"))[("ALPHA", "sample_size")]
    assert (owner["model_hidden"], owner["value"]) == (False, 120)
    assert owner["dual_review"]["assigned"] is None

    # Alice corrects it: her grid shows her verdict and, now, the model's answer; bob's and
    # carol's show neither her verdict nor the model's; the owner's the model's value still
    # (one verdict of two is no final value).
    await team.review("alice", "ALPHA", "sample_size", "corrected", 125)
    alice = cells(team, await grid(team, "alice"))[("ALPHA", "sample_size")]
    assert (alice["model_hidden"], alice["value"], alice["extraction"]["value"]) == (
        False,
        125,
        120,
    )
    assert alice["review"] == {"status": "corrected", "value": 125}
    assert alice["dual_review"]["your_review"] == {"status": "corrected", "value": 125}
    for who in ("bob", "carol"):
        other = cells(team, await grid(team, who))[("ALPHA", "sample_size")]
        assert (other["model_hidden"], other["value"], other["review"]) == (True, None, None)
    assert filenames(await grid(team, "bob", value="125")) == []
    assert filenames(await grid(team, "alice", value="125")) == ["ALPHA.txt"]
    assert filenames(await grid(team, "bob", review="reviewed")) == []
    owner = cells(team, await grid(team, "owner"))[("ALPHA", "sample_size")]
    assert (owner["value"], owner["review"]) == (120, None)
    for who in ("alice", "bob", "carol", "owner"):
        await assert_grid_is_the_export(team, who)

    # Bob disagrees: both see the conflict now, and each their own verdict as reviewed.
    await team.review("bob", "ALPHA", "sample_size", "corrected", 130)
    bob_cell = cells(team, await grid(team, "bob"))[("ALPHA", "sample_size")]
    assert bob_cell["model_hidden"] is False and bob_cell["extraction"]["value"] == 120
    assert bob_cell["dual_review"] == {
        "assigned": "b",
        "your_review": {"status": "corrected", "value": 130},
        "both_reviewed": True,
        "agree": False,
        "adjudicated": False,
    }
    assert bob_cell["review"] is None  # no final verdict: the model's value stands
    reviewed = await grid(team, "bob", review="reviewed", variable_id=team.variables["sample_size"])
    assert filenames(reviewed) == ["ALPHA.txt"]
    for who in ("alice", "bob", "carol", "owner"):
        await assert_grid_is_the_export(team, who)

    # Adjudicated: the final value is everyone's.
    path = f"/conflicts/{team.documents['ALPHA']}/{team.variables['sample_size']}/resolution"
    await team.call("owner", "POST", path, json={"choose": "a"})
    for who in ("alice", "bob", "carol", "owner"):
        cell = cells(team, await grid(team, who))[("ALPHA", "sample_size")]
        assert (cell["value"], cell["review"]) == (125, {"status": "corrected", "value": 125})
        assert cell["dual_review"]["adjudicated"] is True
        await assert_grid_is_the_export(team, who)


async def test_the_grid_shows_a_cases_documents(team: Team) -> None:
    chosen = [team.documents["GAMMA"], team.documents["ALPHA"]]
    page = await grid(team, "vera", document_id=chosen)
    assert filenames(page) == ["ALPHA.txt", "GAMMA.txt"]  # upload order
    assert (page["total"], page["documents_total"]) == (2, 3)
    alone = await grid(team, "vera", document_id=chosen, counts="false", sort="filename")
    assert filenames(alone) == ["ALPHA.txt", "GAMMA.txt"] and alone["counts"] is None
