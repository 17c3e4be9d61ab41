"""Dual review through the API: who may review, what each member sees, conflicts and their
adjudication, and the final value in every export (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io

from tests.reviewing.conftest import Team

DUAL = {"review_mode": "dual"}


async def test_review_settings_need_an_owner(team: Team) -> None:
    project = await team.call("owner", "GET", "")
    assert (project["review_mode"], project["review_blind"], project["adjudicator_id"]) == (
        "single",
        False,
        None,
    )
    refused = await team.call("eddie", "PATCH", "", expect=403, json=DUAL)
    assert "owner role" in refused["detail"] and "you are an editor" in refused["detail"]
    # The rest of the settings stay an editor's.
    assert (await team.call("eddie", "PATCH", "", json={"name": "Renamed"}))["name"] == "Renamed"
    await team.call("alice", "PATCH", "", expect=403, json={"review_blind": True})

    refused = await team.call(
        "owner", "PATCH", "", expect=400, json={"adjudicator_id": team.users["vera"]}
    )
    assert "who may review" in refused["detail"]
    updated = await team.settings(
        review_mode="dual", review_blind=True, adjudicator_id=team.users["carol"]
    )
    assert (updated["review_mode"], updated["review_blind"], updated["adjudicator_id"]) == (
        "dual",
        True,
        team.users["carol"],
    )
    await team.call("owner", "PATCH", "", expect=422, json={"review_mode": "triple"})
    events = (
        await team.client.get(
            "/api/v1/audit-events",
            params={"action": "project.review_settings_changed"},
            headers=team.headers["owner"],
        )
    ).json()["items"]
    assert events[0]["detail"]["review_mode"] == "dual"


async def test_in_single_mode_any_reviewer_reviews_as_before(team: Team) -> None:
    review = await team.review("carol", "ALPHA", "design", "corrected", "Cohort")
    assert review["kind"] == "single"
    rows = await team.export_json("owner")
    assert rows["ALPHA"]["design"] == "Cohort"
    # Nothing blinds anyone in single review: alice sees carol's verdict.
    assert (await team.cells("alice"))[("ALPHA", "design")]["review"]["value"] == "Cohort"
    assert (await team.cells("alice"))[("ALPHA", "design")]["dual_review"] is None


async def test_only_the_assigned_reviewers_review_in_dual_mode(team: Team) -> None:
    await team.settings(**DUAL)
    await team.assign(["ALPHA"], "alice", "bob")
    for outsider in ("carol", "owner", "eddie"):
        refused = await team.review(outsider, "ALPHA", "design", "accepted", expect=403)
        assert "assigned reviewers" in refused["detail"]
    await team.review("vera", "ALPHA", "design", "accepted", expect=403)  # a viewer never
    review = await team.review("alice", "ALPHA", "design", "accepted")
    assert review["kind"] == "independent" and review["value"] == "RCT"
    # BETA has no reviewers yet: nobody reviews it.
    await team.review("alice", "BETA", "design", "accepted", expect=403)


async def test_reviewers_see_only_their_own_verdicts_until_both_have_reviewed(team: Team) -> None:
    await team.settings(**DUAL)
    await team.assign(["ALPHA"], "alice", "bob")
    await team.review("alice", "ALPHA", "design", "corrected", "Cohort")

    bob = (await team.cells("bob"))[("ALPHA", "design")]
    assert bob["review"] is None and bob["value"] == "RCT"  # the model's value: not blind
    assert bob["dual_review"] == {
        "assigned": "b",
        "your_review": None,
        "both_reviewed": False,
        "agree": None,
        "adjudicated": False,
    }
    assert await team.history("bob", "ALPHA", "design") == []
    # A reviewer who is not on the document sees no verdict either; the owner sees them all.
    assert (await team.cells("carol"))[("ALPHA", "design")]["review"] is None
    assert await team.history("carol", "ALPHA", "design") == []
    owner_history = await team.history("owner", "ALPHA", "design")
    assert [(h["reviewer_email"], h["value"]) for h in owner_history] == [
        ("alice@example.org", "Cohort")
    ]
    alice = (await team.cells("alice"))[("ALPHA", "design")]
    assert alice["review"]["value"] == "Cohort"
    assert alice["dual_review"]["assigned"] == "a"
    assert alice["dual_review"]["your_review"]["value"] == "Cohort"
    # Bob's export holds the model's value, alice's her own verdict; the owner's the model's
    # (one independent verdict is not a final value).
    assert (await team.export_json("bob"))["ALPHA"]["design"] == "RCT"
    assert (await team.export_json("alice"))["ALPHA"]["design"] == "Cohort"
    assert (await team.export_json("owner"))["ALPHA"]["design"] == "RCT"

    await team.review("bob", "ALPHA", "design", "accepted")
    bob = (await team.cells("bob"))[("ALPHA", "design")]
    assert bob["dual_review"]["both_reviewed"] is True
    assert bob["dual_review"]["agree"] is False
    assert {h["reviewer_email"] for h in await team.history("bob", "ALPHA", "design")} == {
        "alice@example.org",
        "bob@example.org",
    }
    assert len(await team.history("carol", "ALPHA", "design")) == 2


async def test_blind_review_hides_the_model_value_until_the_reviewer_has_reviewed(
    team: Team,
) -> None:
    await team.settings(review_mode="dual", review_blind=True)
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    cell = (await team.cells("bob"))[("ALPHA", "sample_size")]
    assert cell["model_hidden"] is True
    assert (cell["value"], cell["evidence"], cell["confidence"]) == (None, None, None)
    assert cell["status"] == "succeeded"
    # Owners see the model; so does the owner's export.
    assert (await team.cells("owner"))[("ALPHA", "sample_size")]["value"] == 120
    refused = await team.review("bob", "ALPHA", "sample_size", "accepted", expect=400)
    assert "blind review" in refused["detail"]
    await team.review("bob", "ALPHA", "sample_size", "corrected", 125)
    cell = (await team.cells("bob"))[("ALPHA", "sample_size")]
    assert cell["model_hidden"] is False and cell["value"] == 120
    # Having seen it, he may now accept it (a new verdict of his, replacing the first).
    await team.review("bob", "ALPHA", "sample_size", "accepted")
    rows = await team.export_json("bob")
    assert rows["ALPHA"]["sample_size"] == 120  # his own verdict
    assert rows["BETA"]["sample_size"] is None  # the model's answer, withheld
    assert (await team.export_json("owner"))["BETA"]["sample_size"] == 87
    long = await team.call("bob", "GET", "/export", params={"format": "json", "layout": "long"})
    beta = next(r for r in long if r["filename"] == "BETA.txt" and r["variable"] == "title")
    assert (beta["value"], beta["evidence"]) == (None, None)


async def test_re_reviewing_replaces_the_reviewers_own_verdict_and_keeps_the_history(
    team: Team,
) -> None:
    await team.settings(**DUAL)
    await team.assign(["ALPHA"], "alice", "bob")
    await team.review("alice", "ALPHA", "sample_size", "corrected", 100)
    await team.review("bob", "ALPHA", "sample_size", "accepted")
    conflicts = await team.call("owner", "GET", "/conflicts")
    assert conflicts["total"] == 1
    await team.review("alice", "ALPHA", "sample_size", "corrected", 120)
    assert (await team.call("owner", "GET", "/conflicts"))["total"] == 0
    # Both now say 120: the agreed verdict is the final value.
    assert (await team.export_json("owner"))["ALPHA"]["sample_size"] == 120
    history = await team.history("owner", "ALPHA", "sample_size")
    assert [(h["reviewer_email"], h["value"]) for h in history] == [
        ("alice@example.org", 120),
        ("bob@example.org", 120),
        ("alice@example.org", 100),
    ]
    assert {h["kind"] for h in history} == {"independent"}


async def test_documents_are_split_evenly_between_the_reviewers(team: Team) -> None:
    refused = await team.call(
        "owner",
        "POST",
        "/assignments/auto",
        expect=400,
        json={"reviewer_ids": [team.users["alice"]]},
    )
    assert "at least two reviewers" in refused["detail"]
    await team.call("eddie", "POST", "/assignments/auto", expect=403, json={})
    result = await team.call("owner", "POST", "/assignments/auto", json={})
    assert (result["documents"], result["slots_filled"]) == (3, 6)
    # Three reviewers, three documents, two each: the work is even.
    assert sorted(r["documents"] for r in result["reviewers"]) == [2, 2, 2]
    page = await team.call("owner", "GET", "/assignments")
    assert page["total"] == 3
    for item in page["items"]:
        a, b = item["reviewer_a"], item["reviewer_b"]
        assert a and b and a["user_id"] != b["user_id"]
        assert {a["email"], b["email"]} <= {
            "alice@example.org",
            "bob@example.org",
            "carol@example.org",
        }
    queue = await team.call("alice", "GET", "/assignments", params={"mine": "true"})
    assert queue["total"] == 2
    # Running it again fills nothing: every slot is taken.
    again = await team.call("owner", "POST", "/assignments/auto", json={})
    assert again["slots_filled"] == 0
    reviewers = {r["email"]: r for r in await team.call("owner", "GET", "/reviewers")}
    assert reviewers["alice@example.org"]["assigned_documents"] == 2
    assert "vera@example.org" not in reviewers  # a viewer does not review
    assert reviewers["owner@example.org"]["adjudicator"] is True
    # Starting over with two named people: both on every document.
    chosen = [team.users["alice"], team.users["eddie"]]
    result = await team.call(
        "owner", "POST", "/assignments/auto", json={"reviewer_ids": chosen, "replace": True}
    )
    assert (result["documents"], result["slots_filled"]) == (3, 6)
    for item in (await team.call("owner", "GET", "/assignments"))["items"]:
        assert {item["reviewer_a"]["email"], item["reviewer_b"]["email"]} == {
            "alice@example.org",
            "eddie@example.org",
        }


async def test_assigning_by_hand_and_claiming_from_the_pool(team: Team) -> None:
    await team.settings(**DUAL)
    refused = await team.call(
        "owner",
        "POST",
        "/assignments",
        expect=400,
        json={
            "document_ids": [team.documents["ALPHA"]],
            "reviewer_a": team.users["alice"],
            "reviewer_b": team.users["alice"],
        },
    )
    assert "two different people" in refused["detail"]
    refused = await team.call(
        "owner",
        "POST",
        "/assignments",
        expect=400,
        json={"document_ids": [team.documents["ALPHA"]], "reviewer_a": team.users["vera"]},
    )
    assert "viewer" in refused["detail"]
    await team.call(
        "alice",
        "POST",
        "/assignments",
        expect=403,
        json={"document_ids": [team.documents["ALPHA"]], "reviewer_a": team.users["alice"]},
    )
    [item] = await team.assign(["ALPHA"], "alice", None)
    assert item["reviewer_a"]["email"] == "alice@example.org" and item["reviewer_b"] is None
    pool = await team.call("bob", "GET", "/assignments", params={"unassigned": "true"})
    assert pool["total"] == 3
    claimed = await team.call("bob", "POST", "/assignments/claim", json={"count": 2})
    assert [c["filename"] for c in claimed] == ["ALPHA.txt", "BETA.txt"]
    assert claimed[0]["reviewer_a"]["email"] == "alice@example.org"
    assert claimed[0]["reviewer_b"]["email"] == "bob@example.org"
    assert claimed[1]["reviewer_a"]["email"] == "bob@example.org"
    # Bob is on both already; carol takes BETA's free slot and GAMMA's first.
    claimed = await team.call("carol", "POST", "/assignments/claim", json={"count": 5})
    assert [c["filename"] for c in claimed] == ["BETA.txt", "GAMMA.txt"]
    await team.call("vera", "POST", "/assignments/claim", expect=403, json={})
    await team.review("bob", "BETA", "design", "accepted")
    mine = await team.call("bob", "GET", "/assignments", params={"mine": "true"})
    beta = next(i for i in mine["items"] if i["filename"] == "BETA.txt")
    assert beta["reviewer_a"]["reviewed"] == 1 and beta["variables"] == 5
    # Freeing a slot by hand.
    [item] = await team.assign(["GAMMA"], None, None)
    assert item["reviewer_a"] is None
    events = (
        await team.client.get(
            "/api/v1/audit-events",
            params={"action": "review.assigned"},
            headers=team.headers["carol"],
        )
    ).json()["items"]
    assert events and events[0]["detail"]["method"] == "claim"


async def _conflicting(team: Team) -> None:
    """ALPHA reviewed by alice and bob: they disagree on design and agree on the rest they
    reviewed (sample size, a title spelt differently, a date one gave to the month only)."""
    await team.settings(review_mode="dual", adjudicator_id=team.users["carol"])
    await team.assign(["ALPHA", "BETA"], "alice", "bob")
    await team.review("alice", "ALPHA", "design", "corrected", "Cohort")
    await team.review("bob", "ALPHA", "design", "accepted")
    for who in ("alice", "bob"):
        await team.review(who, "ALPHA", "sample_size", "accepted")
    await team.review("alice", "ALPHA", "title", "corrected", "The ALPHA trial.")
    await team.review("bob", "ALPHA", "title", "corrected", "the alpha trial")
    await team.review("alice", "ALPHA", "start_date", "corrected", "2019-05")
    await team.review("bob", "ALPHA", "start_date", "corrected", "2019-05-02")
    await team.review("alice", "BETA", "randomised", "rejected")


async def test_a_disagreement_is_a_conflict_until_adjudicated(team: Team) -> None:
    await _conflicting(team)
    page = await team.call("alice", "GET", "/conflicts")
    assert page["total"] == 1
    [conflict] = page["items"]
    assert (conflict["filename"], conflict["variable"], conflict["status"]) == (
        "ALPHA.txt",
        "design",
        "open",
    )
    assert (conflict["reviewer_a"]["email"], conflict["reviewer_a"]["value"]) == (
        "alice@example.org",
        "Cohort",
    )
    assert (conflict["reviewer_b"]["email"], conflict["reviewer_b"]["value"]) == (
        "bob@example.org",
        "RCT",
    )
    assert conflict["model"] == {"status": "succeeded", "value": "RCT"}
    # Filters.
    assert (await team.call("owner", "GET", "/conflicts", params={"status": "resolved"}))[
        "total"
    ] == 0
    for params, total in (
        ({"variable_id": team.variables["title"]}, 0),
        ({"variable_id": team.variables["design"]}, 1),
        ({"reviewer_id": team.users["carol"]}, 0),
        ({"reviewer_id": team.users["bob"]}, 1),
    ):
        assert (await team.call("owner", "GET", "/conflicts", params=params))["total"] == total

    path = f"/conflicts/{team.documents['ALPHA']}/{team.variables['design']}/resolution"
    refused = await team.call("alice", "POST", path, expect=403, json={"choose": "a"})
    assert "adjudicator" in refused["detail"]
    await team.call("vera", "POST", path, expect=403, json={"choose": "a"})
    await team.call("carol", "POST", path, expect=400, json={"choose": "a", "value": "RCT"})
    await team.call("carol", "POST", path, expect=400, json={})
    await team.call("carol", "POST", path, expect=400, json={"value": "Trial"})
    agreed = f"/conflicts/{team.documents['ALPHA']}/{team.variables['title']}/resolution"
    refused = await team.call("owner", "POST", agreed, expect=409, json={"choose": "a"})
    assert "agree" in refused["detail"]
    lone = f"/conflicts/{team.documents['BETA']}/{team.variables['randomised']}/resolution"
    await team.call("owner", "POST", lone, expect=409, json={"choose": "a"})

    resolved = await team.call("carol", "POST", path, json={"choose": "a", "note": "p. 2"})
    assert resolved["status"] == "resolved"
    assert resolved["resolution"]["value"] == "Cohort"
    assert resolved["resolution"]["email"] == "carol@example.org"
    # The owner has the last word: a value of their own.
    resolved = await team.call("owner", "POST", path, json={"value": "case series"})
    assert resolved["resolution"]["value"] == "Case series"
    assert (await team.call("owner", "GET", "/conflicts", params={"status": "resolved"}))[
        "total"
    ] == 1
    history = await team.history("alice", "ALPHA", "design")
    assert [h["kind"] for h in history] == [
        "adjudication",
        "adjudication",
        "independent",
        "independent",
    ]
    events = (
        await team.client.get(
            "/api/v1/audit-events",
            params={"action": "review.adjudicated"},
            headers=team.headers["carol"],
        )
    ).json()["items"]
    assert events[0]["detail"]["variable_id"] == team.variables["design"]
    assert events[0]["target_type"] == "review"


async def test_exports_hold_the_adjudicated_then_the_agreed_value(team: Team) -> None:
    await _conflicting(team)
    path = f"/conflicts/{team.documents['ALPHA']}/{team.variables['design']}/resolution"
    await team.call("owner", "POST", path, json={"choose": "a"})

    rows = await team.export_json("owner")
    assert rows["ALPHA"]["design"] == "Cohort"  # the adjudication, over bob's and the model's
    assert rows["ALPHA"]["sample_size"] == 120  # agreed
    assert rows["ALPHA"]["title"] == "The ALPHA trial."  # agreed (reviewer A's spelling)
    assert rows["ALPHA"]["start_date"] == "2019-05-02"  # agreed, the more precise date
    assert rows["BETA"]["randomised"] is False  # one verdict only: the model's value stands

    table = list(csv.DictReader(io.StringIO((await team.export_csv("owner")).lstrip("\ufeff"))))
    alpha = next(r for r in table if r["filename"] == "ALPHA.txt")
    assert (alpha["design"], alpha["title"]) == ("Cohort", "The ALPHA trial.")

    book = await team.workbook("owner")
    results = book["Results"]
    header = [c.value for c in results[1]]
    alpha_row = next(
        r for r in results.iter_rows(min_row=2, values_only=True) if r[1] == "ALPHA.txt"
    )
    assert alpha_row[header.index("design")] == "Cohort"
    assert "Agreement" in book.sheetnames
    # Reviewers read the same final values once both have reviewed.
    assert (await team.export_json("bob"))["ALPHA"]["design"] == "Cohort"
    # Cases and evaluations use final values too: gold from reviews is the adjudication.
    evaluation = await team.call("owner", "GET", "/evaluation", params={"gold": "reviews"})
    design = next(v for v in evaluation["variables"] if v["variable"] == "design")
    assert design["compared"] == 1 and design["correct"] == 0  # the model said RCT


async def test_review_audit_events_say_who_and_when(team: Team) -> None:
    await team.settings(**DUAL)
    await team.assign(["ALPHA"], "alice", "bob")
    review = await team.review("alice", "ALPHA", "design", "accepted")
    events = (
        await team.client.get(
            "/api/v1/audit-events",
            params={"action": "review.recorded"},
            headers=team.headers["alice"],
        )
    ).json()["items"]
    assert len(events) == 1
    assert events[0]["target_id"] == review["id"]
    assert events[0]["detail"]["kind"] == "independent"
    assert events[0]["detail"]["project_id"] == team.pid
    assert events[0]["created_at"]
