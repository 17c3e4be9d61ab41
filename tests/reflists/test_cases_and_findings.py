"""Cases across documents and consistency findings, on the records-team corpus (a scan per
client): documents grouped by their matched client, values combined per case, the date-of-birth and
accident-date disagreements found once each with both quotes, resolved, exported, and
recomputed after edits without LLM calls."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import openpyxl
from fastapi import FastAPI

from tests.reflists.conftest import BOTH_DATABASES
from tests.reflists.corpus import CLIENT_MATCH, SCANNED, corpus_project
from tests.support.api import list_extractions, sign_up
from tests.support.fake_llm import FakeLLM

CHECKED_VARIABLES: list[dict[str, Any]] = [
    {
        "name": "client_name",
        "description": "The client's full name",
        "type": "text",
        "match": CLIENT_MATCH,
    },
    {
        "name": "date_of_birth",
        "description": "The client's date of birth",
        "type": "date",
        "checks": {"must_agree_with_reference": "date_of_birth"},
    },
    {
        "name": "accident_date",
        "description": "The date of the accident",
        "type": "date",
        "checks": {"must_agree_within_case": True},
        "combine": {"rule": "latest", "by": "accident_date"},
    },
]


async def _cases_project(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM, scanned: bool = True
) -> tuple[dict[str, str], str, dict[str, str]]:
    headers, pid, documents = await corpus_project(
        app, client, fake_llm, variables=CHECKED_VARIABLES, scanned=scanned
    )
    response = await client.patch(
        f"/api/v1/projects/{pid}", json={"case_key": {"variable": "client_name"}}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["case_key"] == {"variable": "client_name"}
    return headers, pid, documents


async def _get(client: httpx.AsyncClient, headers: dict[str, str], url: str, **params: Any) -> Any:
    response = await client.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _pick_garcia_rows(
    client: httpx.AsyncClient, headers: dict[str, str], pid: str, documents: dict[str, str]
) -> None:
    for extraction in await list_extractions(client, headers, pid):
        name = next(f for f, d in documents.items() if d == extraction["document_id"])
        if extraction["variable_name"] == "client_name" and name.startswith("garcia"):
            response = await client.post(
                f"/api/v1/projects/{pid}/extractions/{extraction['id']}/match",
                json={"key": "C002"},
                headers=headers,
            )
            assert response.status_code == 200, response.text


@BOTH_DATABASES
async def test_cases_group_documents_by_client_and_findings_show_both_quotes(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, documents = await _cases_project(app, client, fake_llm)
    cases = (await _get(client, headers, f"/api/v1/projects/{pid}/cases"))["items"]
    # The Garcia documents are ambiguous (two Maria Garcias): in no case until reviewed.
    assert [(c["key"], sorted(d["filename"] for d in c["documents"])) for c in cases] == [
        ("C001", ["smith_referral.txt", "smith_report.pdf"]),
        ("C003", ["chen_letter.txt", "chen_referral.txt", "chen_report.png"]),
    ]
    chen = cases[1]
    assert chen["values"]["accident_date"]["value"] == "2024-06-09"  # latest
    assert chen["values"]["client_name"]["value"] == "Robert Chen"  # first
    assert chen["reference_row"]["values"]["name"] == "Robert Chen"
    assert chen["open_findings"] == 1

    await _pick_garcia_rows(client, headers, pid, documents)
    cases = (await _get(client, headers, f"/api/v1/projects/{pid}/cases"))["items"]
    assert [c["key"] for c in cases] == ["C001", "C002", "C003"]

    findings = (await _get(client, headers, f"/api/v1/projects/{pid}/findings"))["items"]
    assert sorted((f["case_key"], f["variable"], f["kind"]) for f in findings) == [
        ("C001", "date_of_birth", "reference"),
        ("C003", "accident_date", "within_case"),
    ]
    dob = next(f for f in findings if f["variable"] == "date_of_birth")
    assert dob["reference_value"] == "1980-05-01" and dob["reference_column"] == "date_of_birth"
    shown = {
        (v["value"], v["agrees_with_reference"], d["filename"], d["evidence"])
        for v in dob["values"]
        for d in v["documents"]
    }
    assert shown == {
        ("1980-05-01", True, "smith_referral.txt", "Date of birth: 1 May 1980"),
        ("1980-05-10", False, "smith_report.pdf", "born 10 May 1980"),
    }
    accident = next(f for f in findings if f["variable"] == "accident_date")
    quotes = {
        (v["value"], d["filename"], d["evidence"], d["page"])
        for v in accident["values"]
        for d in v["documents"]
    }
    assert quotes == {
        ("2024-06-02", "chen_referral.txt", "Accident date: 2 June 2024", 1),
        ("2024-06-09", "chen_report.png", "The accident occurred on 9 June 2024", 1),
    }

    # The scans' quotes are Tesseract's text: each is on its page, read by OCR.
    scanned_quotes = {}
    for finding in findings:
        for group in finding["values"]:
            for source in group["documents"]:
                if source["filename"] not in SCANNED:
                    continue
                url = f"/api/v1/projects/{pid}/documents/{source['document_id']}/text"
                text = await _get(client, headers, url)
                [page] = text["pages"]
                assert page["text_source"] == "ocr" and page["ocr_confidence"] > 70
                assert source["evidence"] in " ".join(page["text"].split())
                scanned_quotes[source["filename"]] = source["evidence"]
    assert scanned_quotes == {
        "smith_report.pdf": "born 10 May 1980",
        "chen_report.png": "The accident occurred on 9 June 2024",
    }

    # The export's Cases and Findings sheets show them.
    response = await client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "xlsx"}, headers=headers
    )
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert {"Cases", "Findings"} <= set(book.sheetnames)
    case_rows = list(book["Cases"].iter_rows(values_only=True))
    header = list(case_rows[0])
    by_key = {row[0]: dict(zip(header, row, strict=True)) for row in case_rows[1:]}
    assert sorted(by_key) == ["C001", "C002", "C003"]
    assert by_key["C003"]["accident_date"] == "2024-06-09"
    assert by_key["C003"]["accident_date_documents"] == "chen_report.png"
    assert by_key["C002"]["documents"] == "garcia_referral.txt; garcia_letter.pdf"
    assert by_key["C003"]["open_findings"] == 1
    finding_rows = list(book["Findings"].iter_rows(values_only=True))
    columns = list(finding_rows[0])
    rows = [dict(zip(columns, row, strict=True)) for row in finding_rows[1:]]
    assert sorted((r["case_key"], r["variable"], r["filename"], r["quote"]) for r in rows) == [
        ("C001", "date_of_birth", "smith_referral.txt", "Date of birth: 1 May 1980"),
        ("C001", "date_of_birth", "smith_report.pdf", "born 10 May 1980"),
        ("C003", "accident_date", "chen_referral.txt", "Accident date: 2 June 2024"),
        ("C003", "accident_date", "chen_report.png", "The accident occurred on 9 June 2024"),
    ]

    layout = await client.get(
        f"/api/v1/projects/{pid}/export",
        params={"format": "csv", "layout": "cases"},
        headers=headers,
    )
    records = list(csv.DictReader(io.StringIO(layout.content.decode("utf-8-sig"))))
    assert [r["case_key"] for r in records] == ["C001", "C002", "C003"]


async def test_findings_are_resolved_and_recomputed_after_edits_without_llm_calls(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, documents = await _cases_project(app, client, fake_llm)
    calls = fake_llm.calls()
    findings_url = f"/api/v1/projects/{pid}/findings"
    findings = (await _get(client, headers, findings_url))["items"]
    accident = next(f for f in findings if f["variable"] == "accident_date")
    dob = next(f for f in findings if f["variable"] == "date_of_birth")

    bad = await client.post(
        f"{findings_url}/{accident['id']}/resolution",
        json={"resolution": "value", "value": "soon"},
        headers=headers,
    )
    assert bad.status_code == 400
    resolved = await client.post(
        f"{findings_url}/{accident['id']}/resolution",
        json={"resolution": "value", "value": "2 June 2024", "note": "the report is wrong"},
        headers=headers,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["resolution"]["value"] == "2024-06-02"
    both = await client.post(
        f"{findings_url}/{dob['id']}/resolution",
        json={"resolution": "both_correct"},
        headers=headers,
    )
    assert both.json()["resolution"]["resolution"] == "both_correct"
    assert (await _get(client, headers, findings_url, status="open"))["total"] == 0
    cases = (await _get(client, headers, f"/api/v1/projects/{pid}/cases"))["items"]
    chen = next(c for c in cases if c["key"] == "C003")
    assert chen["values"]["accident_date"]["value"] == "2024-06-02"  # the resolution wins
    assert chen["open_findings"] == 0
    missing = await client.post(
        f"{findings_url}/nope/resolution", json={"resolution": "both_correct"}, headers=headers
    )
    assert missing.status_code == 404

    # A reviewer corrects the report's date of birth: that finding is gone.
    report = next(
        e
        for e in await list_extractions(client, headers, pid)
        if e["variable_name"] == "date_of_birth"
        and e["document_id"] == documents["smith_report.pdf"]
    )
    review = await client.put(
        f"/api/v1/projects/{pid}/reviews/{report['document_id']}/{report['variable_id']}",
        json={"status": "corrected", "value": "1980-05-01"},
        headers=headers,
    )
    assert review.status_code == 200, review.text
    remaining = (await _get(client, headers, findings_url))["items"]
    assert [f["variable"] for f in remaining] == ["accident_date"]

    # The check is switched off: no finding; a case key by plain value groups by name.
    variables = (await _get(client, headers, f"/api/v1/projects/{pid}/variables"))["items"]
    accident_variable = next(v for v in variables if v["name"] == "accident_date")
    await client.patch(
        f"/api/v1/projects/{pid}/variables/{accident_variable['id']}",
        json={"checks": None},
        headers=headers,
    )
    assert (await _get(client, headers, findings_url))["total"] == 0
    await client.patch(
        f"/api/v1/projects/{pid}", json={"case_key": {"variable": "accident_date"}}, headers=headers
    )
    by_date = (await _get(client, headers, f"/api/v1/projects/{pid}/cases"))["items"]
    assert [c["key"] for c in by_date] == ["2024-01-05", "2024-03-10", "2024-06-02", "2024-06-09"]
    assert fake_llm.calls() == calls


async def test_case_settings_are_checked(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, _ = await _cases_project(app, client, fake_llm, scanned=False)
    response = await client.patch(
        f"/api/v1/projects/{pid}", json={"case_key": {"variable": "nope"}}, headers=headers
    )
    assert response.status_code == 400 and "nope" in response.json()["detail"]
    url = f"/api/v1/projects/{pid}/variables"
    base = {"description": "x", "type": "text"}
    summed = await client.post(
        url, json={**base, "name": "a", "combine": {"rule": "sum"}}, headers=headers
    )
    assert summed.status_code == 400 and "numbers" in summed.json()["detail"]
    latest = await client.post(
        url,
        json={**base, "name": "b", "combine": {"rule": "latest", "by": "client_name"}},
        headers=headers,
    )
    assert latest.status_code == 400 and "date variable" in latest.json()["detail"]


async def test_other_users_cases_and_findings_answer_404(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, _ = await _cases_project(app, client, fake_llm, scanned=False)
    finding = (await _get(client, headers, f"/api/v1/projects/{pid}/findings"))["items"][0]
    other = await sign_up(app, client, "nosy@example.org")
    for method, url, body in [
        ("GET", f"/api/v1/projects/{pid}/cases", None),
        ("GET", f"/api/v1/projects/{pid}/findings", None),
        (
            "POST",
            f"/api/v1/projects/{pid}/findings/{finding['id']}/resolution",
            {"resolution": "both_correct"},
        ),
    ]:
        response = await client.request(method, url, json=body, headers=other)
        assert response.status_code == 404, (url, response.text)
