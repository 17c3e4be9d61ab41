"""Someone who stops reviewing — removed from the project, or made a viewer — leaves no
document waiting on them and is no longer its adjudicator; their verdicts stay (SQLite and
PostgreSQL)."""

from __future__ import annotations

from typing import Any

from tests.reviewing.conftest import VARIABLES, Team


async def _slots(team: Team) -> dict[str, tuple[str | None, str | None]]:
    """Each document's (reviewer A, reviewer B) by name, as GET …/assignments lists them."""
    names = {v: k for k, v in team.users.items()}
    page = await team.call("owner", "GET", "/assignments")

    def name(slot: dict[str, Any] | None) -> str | None:
        return names[slot["user_id"]] if slot else None

    return {
        item["filename"].removesuffix(".txt"): (name(item["reviewer_a"]), name(item["reviewer_b"]))
        for item in page["items"]
    }


async def _event(team: Team, action: str) -> dict[str, Any]:
    events = await team.client.get(
        "/api/v1/audit-events", params={"action": action}, headers=team.headers["owner"]
    )
    assert events.status_code == 200, events.text
    return events.json()["items"][0]  # type: ignore[no-any-return]


async def test_removing_a_reviewer_frees_their_unfinished_documents(team: Team) -> None:
    await team.settings(review_mode="dual")
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    await team.assign(["GAMMA"], "alice", "carol")
    await team.review("alice", "ALPHA", "design", "corrected", "Cohort")
    for variable in set(VARIABLES) - {"design"}:  # alice finishes ALPHA …
        await team.review("alice", "ALPHA", variable, "rejected")
    await team.review("alice", "BETA", "title", "accepted")  # … and starts BETA

    await team.call("owner", "DELETE", f"/members/{team.users['alice']}", expect=204)
    assert await _slots(team) == {
        "ALPHA": ("alice", "bob"),  # finished: her verdicts still count
        "BETA": (None, "bob"),
        "GAMMA": (None, "carol"),
    }
    event = await _event(team, "member.removed")
    assert event["detail"]["reviewer_slots_freed"] == 2
    assert event["detail"]["adjudicator_cleared"] is False
    # Her verdicts stay: BETA's in the history, ALPHA's as reviewer A's.
    history = await team.history("owner", "BETA", "title")
    assert [h["reviewer_email"] for h in history] == ["alice@example.org"]
    await team.review("bob", "ALPHA", "design", "corrected", "Cohort")
    assert (await team.export_json("owner"))["ALPHA"]["design"] == "Cohort"  # agreed
    # The freed slots are in the pool again.
    unassigned = await team.call("owner", "GET", "/assignments", params={"unassigned": True})
    assert {i["filename"] for i in unassigned["items"]} == {"BETA.txt", "GAMMA.txt"}
    claimed = await team.call("eddie", "POST", "/assignments/claim", json={"count": 5})
    assert {i["filename"] for i in claimed} == {"BETA.txt", "GAMMA.txt"}
    await team.review("eddie", "BETA", "title", "accepted")


async def test_a_reviewer_made_a_viewer_leaves_their_slots_and_the_adjudicator_role(
    team: Team,
) -> None:
    await team.settings(review_mode="dual", adjudicator_id=team.users["bob"])
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    await team.review("bob", "ALPHA", "design", "accepted")

    # Made an editor, he still reviews: nothing changes.
    await team.call("owner", "PATCH", f"/members/{team.users['bob']}", json={"role": "editor"})
    assert (await team.call("owner", "GET", ""))["adjudicator_id"] == team.users["bob"]
    assert (await _slots(team))["ALPHA"] == ("alice", "bob")

    await team.call("owner", "PATCH", f"/members/{team.users['bob']}", json={"role": "viewer"})
    assert (await team.call("owner", "GET", ""))["adjudicator_id"] is None
    assert await _slots(team) == {
        "ALPHA": ("alice", None),
        "BETA": ("alice", None),
        "GAMMA": (None, None),
    }
    event = await _event(team, "member.role_changed")
    assert event["detail"]["role"] == "viewer"
    assert event["detail"]["reviewer_slots_freed"] == 2
    assert event["detail"]["adjudicator_cleared"] is True
    reviewers = await team.call("owner", "GET", "/reviewers")
    assert [r["email"] for r in reviewers if r["adjudicator"]] == ["owner@example.org"]
    # His verdict stays in the history.
    history = await team.history("owner", "ALPHA", "design")
    assert [h["reviewer_email"] for h in history] == ["bob@example.org"]


async def test_removing_the_adjudicator_leaves_the_owners_to_adjudicate(team: Team) -> None:
    await team.settings(review_mode="dual", adjudicator_id=team.users["carol"])
    await team.assign(["ALPHA"], "alice", "bob")
    await team.review("alice", "ALPHA", "design", "corrected", "Cohort")
    await team.review("bob", "ALPHA", "design", "accepted")

    await team.call("owner", "DELETE", f"/members/{team.users['carol']}", expect=204)
    assert (await team.call("owner", "GET", ""))["adjudicator_id"] is None
    event = await _event(team, "member.removed")
    assert event["detail"]["adjudicator_cleared"] is True
    assert event["detail"]["reviewer_slots_freed"] == 0
    path = f"/conflicts/{team.documents['ALPHA']}/{team.variables['design']}/resolution"
    refused = await team.call("alice", "POST", path, expect=403, json={"choose": "a"})
    assert "adjudicator" in refused["detail"]
    # The contract says so (the check is the service's, not the route's permission).
    documented = team.app.openapi()["paths"][
        "/api/v1/projects/{project_id}/conflicts/{document_id}/{variable_id}/resolution"
    ]["post"]["responses"]
    assert "adjudicator" in documented["403"]["description"]
    resolved = await team.call("owner", "POST", path, json={"choose": "a"})
    assert resolved["resolution"]["value"] == "Cohort"
    # Naming a new adjudicator works as before.
    updated = await team.settings(adjudicator_id=team.users["alice"])
    assert updated["adjudicator_id"] == team.users["alice"]
