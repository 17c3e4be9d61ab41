"""Reference lists as a records team uses them: upload, replace, read rows; values matched
to the list during a run, reviewed, recomputed after edits without LLM calls, exported."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import openpyxl
from fastapi import FastAPI

from quarry.exports.xlsx_writer import FLAG_FILLS
from tests.reflists.conftest import BOTH_DATABASES
from tests.reflists.corpus import CLIENTS_CSV, corpus_project, upload_list
from tests.support.api import add_variable, create_project, list_extractions, sign_up
from tests.support.fake_llm import FakeLLM
from tests.support.members import add_member

COLOURS = {name: fill.fgColor.rgb[-6:] for name, fill, _ in FLAG_FILLS}


def _by_file(
    extractions: list[dict[str, Any]], documents: dict[str, str], variable: str
) -> dict[str, dict[str, Any]]:
    names = {v: k for k, v in documents.items()}
    return {names[e["document_id"]]: e for e in extractions if e["variable_name"] == variable}


def _csv(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")))


async def test_a_list_is_uploaded_read_by_pages_replaced_by_versions_and_deleted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "lists@example.org")
    pid = (await create_project(client, headers))["id"]
    data = "client_id;name\n" + "".join(f"C{i:03d};Client {i}\n" for i in range(1, 121))
    created = await upload_list(client, headers, pid, data.encode("cp1252"), name="big")
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["version"], body["row_count"]) == ("big", 1, 120)
    assert body["columns"] == ["client_id", "name"]
    base = f"/api/v1/projects/{pid}/reference-lists/{body['id']}"

    page = (
        await client.get(f"{base}/rows", params={"limit": 50, "offset": 100}, headers=headers)
    ).json()
    assert page["total"] == 120 and len(page["items"]) == 20
    assert page["items"][0] == {
        "row_number": 102,
        "values": {"client_id": "C101", "name": "Client 101"},
    }

    again = await upload_list(client, headers, pid, b"client_id,name\nX,Y\n", name="big")
    assert again.status_code == 409

    replaced = await client.put(
        base,
        files={"file": ("v2.csv", b"client_id,name,extra\nC001,Ann,1\n", "text/csv")},
        headers=headers,
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["version"], replaced.json()["row_count"]) == (2, 1)
    assert [v["version"] for v in replaced.json()["versions"]] == [2, 1]
    old = (await client.get(f"{base}/rows", params={"version": 1}, headers=headers)).json()
    assert old["total"] == 120  # the old version's rows are kept
    current = (await client.get(f"{base}/rows", headers=headers)).json()
    assert current["items"] == [
        {"row_number": 2, "values": {"client_id": "C001", "name": "Ann", "extra": "1"}}
    ]
    assert (
        await client.get(f"{base}/rows", params={"version": 3}, headers=headers)
    ).status_code == 404

    listed = (await client.get(f"/api/v1/projects/{pid}/reference-lists", headers=headers)).json()
    assert [item["name"] for item in listed["items"]] == ["big"]
    assert (await client.delete(base, headers=headers)).status_code == 204
    assert (await client.get(base, headers=headers)).status_code == 404


async def test_a_list_with_bad_rows_answers_400_naming_the_rows(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "bad@example.org")
    pid = (await create_project(client, headers))["id"]
    data = b"client_id,name\nC1,Ann\nC2,Bob,oops\nC3,Cy\nC4,Di,x,y\n"
    response = await upload_list(client, headers, pid, data)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "row 3" in detail and "row 5" in detail and "row 4" not in detail
    # Nothing half-read was stored.
    listed = (await client.get(f"/api/v1/projects/{pid}/reference-lists", headers=headers)).json()
    assert listed["total"] == 0
    # A replacement with bad rows is refused the same way; the list keeps its version.
    good = await upload_list(client, headers, pid, b"client_id,name\nC1,Ann\n")
    assert good.status_code == 201, good.text
    url = f"/api/v1/projects/{pid}/reference-lists/{good.json()['id']}"
    replaced = await client.put(
        url, files={"file": ("clients.csv", data, "text/csv")}, headers=headers
    )
    assert replaced.status_code == 400
    assert "row 3" in replaced.json()["detail"] and "row 5" in replaced.json()["detail"]
    kept = (await client.get(url, headers=headers)).json()
    assert (kept["version"], kept["row_count"], len(kept["versions"])) == (1, 1, 1)
    not_multipart = await client.post(
        f"/api/v1/projects/{pid}/reference-lists", content=b"x", headers=headers
    )
    assert not_multipart.status_code == 415


async def test_an_xlsx_list_is_read(app: FastAPI, client: httpx.AsyncClient) -> None:
    headers = await sign_up(app, client, "xlsx@example.org")
    pid = (await create_project(client, headers))["id"]
    book = openpyxl.Workbook()
    book.active.append(["client_id", "name"])
    book.active.append(["C001", "Ann Lee"])
    buffer = io.BytesIO()
    book.save(buffer)
    response = await client.post(
        f"/api/v1/projects/{pid}/reference-lists",
        files={"file": ("clients.xlsx", buffer.getvalue(), "application/octet-stream")},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    assert (response.json()["name"], response.json()["row_count"]) == ("clients", 1)


async def test_match_settings_are_checked_against_the_list(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "settings@example.org")
    pid = (await create_project(client, headers))["id"]
    assert (await upload_list(client, headers, pid, CLIENTS_CSV)).status_code == 201
    url = f"/api/v1/projects/{pid}/variables"
    base = {"name": "client", "description": "Client name", "type": "text"}
    cases = [
        (
            {"list": "nope", "column": "name", "key_column": "client_id", "method": "name"},
            "no reference list named 'nope'",
        ),
        (
            {"list": "clients", "column": "surname", "key_column": "client_id", "method": "name"},
            "no column 'surname'",
        ),
        (
            {"list": "clients", "column": "name", "key_column": "id", "method": "name"},
            "no column 'id'",
        ),
        (
            {
                "list": "clients",
                "column": "date_of_birth",
                "key_column": "client_id",
                "method": "date",
            },
            "not text",
        ),
    ]
    for match, says in cases:
        response = await client.post(url, json={**base, "match": match}, headers=headers)
        assert response.status_code == 400, response.text
        assert says in response.json()["detail"]
    bad_thresholds = {
        "list": "clients",
        "column": "name",
        "key_column": "client_id",
        "method": "name",
        "thresholds": {"match": 50, "review": 80},
    }
    assert (
        await client.post(url, json={**base, "match": bad_thresholds}, headers=headers)
    ).status_code == 422
    ok = await add_variable(
        client,
        headers,
        pid,
        **base,
        match={"list": "clients", "column": "name", "key_column": "client_id", "method": "name"},
    )
    assert ok["match"]["thresholds"] == {"match": 88.0, "margin": 4.0, "review": 70.0}
    # A list a variable matches against cannot be deleted, nor replaced without its columns.
    list_id = ok["match"]["list_id"]
    lists = f"/api/v1/projects/{pid}/reference-lists/{list_id}"
    assert (await client.delete(lists, headers=headers)).status_code == 409
    replaced = await client.put(
        lists,
        files={"file": ("c.csv", b"client_id,full_name\nC1,Ann\n", "text/csv")},
        headers=headers,
    )
    assert replaced.status_code == 400 and "'name'" in replaced.json()["detail"]


@BOTH_DATABASES
async def test_documents_are_matched_to_clients_reviewed_and_exported(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, documents = await corpus_project(app, client, fake_llm)
    names = _by_file(await list_extractions(client, headers, pid), documents, "client_name")
    found = {f: (e["match_status"], e["match_key"]) for f, e in names.items()}
    assert found == {
        "smith_referral.txt": ("matched", "C001"),  # the list misspells Jonathan
        "smith_report.pdf": ("matched", "C001"),
        "chen_referral.txt": ("matched", "C003"),
        "chen_report.png": ("matched", "C003"),  # "R. Chen": an initial
        "chen_letter.txt": ("matched", "C003"),
        "garcia_referral.txt": ("ambiguous", None),  # Maria Garcia or María García
        "garcia_letter.pdf": ("ambiguous", None),
    }
    garcia = names["garcia_referral.txt"]
    assert [c["key"] for c in garcia["match_candidates"][:2]] == ["C002", "C004"]
    assert names["smith_report.pdf"]["match_candidates"][0]["value"] == "Jonathon Smith"

    # A reviewer picks the row of one Garcia document; that wins in the export.
    response = await client.post(
        f"/api/v1/projects/{pid}/extractions/{garcia['id']}/match",
        json={"key": "C002"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    bad_key = await client.post(
        f"/api/v1/projects/{pid}/extractions/{garcia['id']}/match",
        json={"key": "C999"},
        headers=headers,
    )
    assert bad_key.status_code == 400 and "C999" in bad_key.json()["detail"]
    again = _by_file(await list_extractions(client, headers, pid), documents, "client_name")
    assert again["garcia_referral.txt"]["match_review"]["key"] == "C002"

    wide = _csv(
        (
            await client.get(
                f"/api/v1/projects/{pid}/export", params={"format": "csv"}, headers=headers
            )
        ).content
    )
    by_file = {row["filename"]: row for row in wide}
    assert list(wide[0])[:5] == [
        "document_id",
        "filename",
        "client_name",
        "client_name_match",
        "date_of_birth",
    ]
    assert by_file["garcia_referral.txt"]["client_name_match"] == "C002"
    assert by_file["garcia_letter.pdf"]["client_name_match"] == ""
    assert by_file["chen_report.png"]["client_name_match"] == "C003"

    long = json.loads(
        (
            await client.get(
                f"/api/v1/projects/{pid}/export",
                params={"format": "json", "layout": "long"},
                headers=headers,
            )
        ).content
    )
    cells = {(r["filename"], r["variable"]): r for r in long}
    letter = cells[("garcia_letter.pdf", "client_name")]
    assert (letter["match_status"], letter["match_key"], letter["flags"]) == (
        "ambiguous",
        None,
        ["match_ambiguous"],
    )
    referral = cells[("garcia_referral.txt", "client_name")]
    assert (referral["match_status"], referral["match_key"], referral["flags"]) == (
        "matched",
        "C002",
        [],
    )
    assert cells[("smith_report.pdf", "client_name")]["match_score"] > 85

    workbook = openpyxl.load_workbook(
        io.BytesIO(
            (
                await client.get(
                    f"/api/v1/projects/{pid}/export", params={"format": "xlsx"}, headers=headers
                )
            ).content
        )
    )
    results = workbook["Results"]
    header = [c.value for c in results[1]]
    rows = {r[1].value: r for r in results.iter_rows(min_row=2)}
    cell = rows["garcia_letter.pdf"][header.index("client_name")]
    assert cell.fill.fgColor.rgb[-6:] == COLOURS["match_ambiguous"]
    assert (
        rows["garcia_referral.txt"][header.index("client_name")].fill.fgColor.rgb[-6:]
        != COLOURS["match_ambiguous"]
    )


async def test_edits_rematch_stored_values_with_zero_llm_calls(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, documents = await corpus_project(app, client, fake_llm)
    calls = fake_llm.calls()
    assert calls > 0
    lists = (await client.get(f"/api/v1/projects/{pid}/reference-lists", headers=headers)).json()[
        "items"
    ]
    list_url = f"/api/v1/projects/{pid}/reference-lists/{lists[0]['id']}"

    # The list is corrected: Jonathan spelt right, the near-duplicate gone.
    fixed = (
        CLIENTS_CSV.decode()
        .replace("Jonathon", "Jonathan")
        .replace("C004,María García,1975-11-30,PN-1004\n", "")
    )
    response = await client.put(
        list_url, files={"file": ("clients-v2.csv", fixed.encode(), "text/csv")}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["rematched"] == 7
    names = _by_file(await list_extractions(client, headers, pid), documents, "client_name")
    assert {f: e["match_key"] for f, e in names.items()} == {
        "smith_referral.txt": "C001",
        "smith_report.pdf": "C001",
        "chen_referral.txt": "C003",
        "chen_report.png": "C003",
        "chen_letter.txt": "C003",
        "garcia_referral.txt": "C002",
        "garcia_letter.pdf": "C002",
    }
    assert names["smith_referral.txt"]["match_score"] == 100
    assert {e["match_list_version_id"] for e in names.values()} == {
        response.json()["versions"][0]["id"]
    }

    # A stricter threshold: initials no longer match on their own.
    variables = (await client.get(f"/api/v1/projects/{pid}/variables", headers=headers)).json()[
        "items"
    ]
    client_name = next(v for v in variables if v["name"] == "client_name")
    match = client_name["match"]  # as read back, list_id included
    patched = await client.patch(
        f"/api/v1/projects/{pid}/variables/{client_name['id']}",
        json={"match": {**match, "thresholds": {"match": 99, "margin": 4, "review": 70}}},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["prompt_version"] == client_name["prompt_version"]  # not a prompt edit
    names = _by_file(await list_extractions(client, headers, pid), documents, "client_name")
    assert names["chen_report.png"]["match_status"] == "ambiguous"
    assert names["chen_referral.txt"]["match_status"] == "matched"

    # Removing the match clears it.
    await client.patch(
        f"/api/v1/projects/{pid}/variables/{client_name['id']}",
        json={"match": None},
        headers=headers,
    )
    names = _by_file(await list_extractions(client, headers, pid), documents, "client_name")
    assert {e["match_status"] for e in names.values()} == {None}
    assert fake_llm.calls() == calls  # every recomputation came from stored values


async def test_other_users_lists_and_matches_answer_404(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, _ = await corpus_project(app, client, fake_llm, scanned=False)
    other = await sign_up(app, client, "other@example.org")
    lists = (await client.get(f"/api/v1/projects/{pid}/reference-lists", headers=headers)).json()[
        "items"
    ]
    base = f"/api/v1/projects/{pid}/reference-lists/{lists[0]['id']}"
    extraction = (await list_extractions(client, headers, pid))[0]
    for method, url, kwargs in [
        ("GET", f"/api/v1/projects/{pid}/reference-lists", {}),
        ("GET", base, {}),
        ("GET", f"{base}/rows", {}),
        ("DELETE", base, {}),
        ("PUT", base, {"files": {"file": ("c.csv", CLIENTS_CSV, "text/csv")}}),
        (
            "POST",
            f"/api/v1/projects/{pid}/reference-lists",
            {"files": {"file": ("c.csv", CLIENTS_CSV, "text/csv")}},
        ),
        (
            "POST",
            f"/api/v1/projects/{pid}/extractions/{extraction['id']}/match",
            {"json": {"key": "C001"}},
        ),
    ]:
        response = await client.request(method, url, headers=other, **kwargs)
        assert response.status_code == 404, (method, url, response.text)
    # Nor can a list be reached through another project of one's own.
    own = (await create_project(client, other, "Mine"))["id"]
    response = await client.get(
        f"/api/v1/projects/{own}/reference-lists/{lists[0]['id']}", headers=other
    )
    assert response.status_code == 404


@BOTH_DATABASES
async def test_blind_review_withholds_a_chosen_match_with_the_value(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    """In blind dual review a reviewer who has not reviewed a cell sees neither the model's
    value nor the row someone chose for it in the export's match column."""
    headers, pid, documents = await corpus_project(app, client, fake_llm, scanned=False)
    names = _by_file(await list_extractions(client, headers, pid), documents, "client_name")
    chosen = await client.post(
        f"/api/v1/projects/{pid}/extractions/{names['garcia_referral.txt']['id']}/match",
        json={"key": "C002"},
        headers=headers,
    )
    assert chosen.status_code == 200, chosen.text
    blind = await client.patch(
        f"/api/v1/projects/{pid}",
        json={"review_mode": "dual", "review_blind": True},
        headers=headers,
    )
    assert blind.status_code == 200, blind.text
    reviewer = await add_member(app, client, headers, pid, "blind@example.org", "reviewer")

    async def wide(who: dict[str, str]) -> dict[str, dict[str, str]]:
        response = await client.get(
            f"/api/v1/projects/{pid}/export", params={"format": "csv"}, headers=who
        )
        assert response.status_code == 200, response.text
        return {row["filename"]: row for row in _csv(response.content)}

    owner_sees, reviewer_sees = await wide(headers), await wide(reviewer)
    assert owner_sees["garcia_referral.txt"]["client_name_match"] == "C002"
    assert owner_sees["smith_referral.txt"]["client_name_match"] == "C001"
    for filename in ("garcia_referral.txt", "smith_referral.txt"):
        assert reviewer_sees[filename]["client_name"] == ""
        assert reviewer_sees[filename]["client_name_match"] == ""
