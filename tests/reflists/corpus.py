"""The records-team corpus of issue 14: three clients, two or three documents each.

The client list spells one name wrong (Jonathon for the documents' Jonathan) and has a
near-duplicate of another (María García, born a week later, beside Maria Garcia). One
document gives a date of birth that differs from the list (Smith's report), and one case's
two documents give different accident dates (Chen's).
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM

CLIENTS_CSV = (
    "client_id,name,date_of_birth,policy_number\n"
    "C001,Jonathon Smith,1980-05-01,PN-1001\n"
    "C002,Maria Garcia,1975-11-23,PN-1002\n"
    "C003,Robert Chen,1990-02-14,PN-1003\n"
    "C004,María García,1975-11-30,PN-1004\n"
).encode()

#: filename → (text, {variable: (value, quote)}); a missing variable is "not stated".
DOCUMENTS: dict[str, tuple[str, dict[str, tuple[Any, str]]]] = {
    "smith_referral.txt": (
        "Ref SM-1. Referral. Client: Jonathan Smith. Date of birth: 1 May 1980. "
        "Accident date: 10 March 2024.",
        {
            "client_name": ("Jonathan Smith", "Client: Jonathan Smith"),
            "date_of_birth": ("1980-05-01", "Date of birth: 1 May 1980"),
            "accident_date": ("2024-03-10", "Accident date: 10 March 2024"),
        },
    ),
    "smith_report.txt": (
        "Ref SM-2. Medical report for Jonathan Smith, born 10 May 1980. "
        "The accident happened on 10 March 2024.",
        {
            "client_name": ("Jonathan Smith", "Medical report for Jonathan Smith"),
            "date_of_birth": ("1980-05-10", "born 10 May 1980"),
            "accident_date": ("2024-03-10", "The accident happened on 10 March 2024"),
        },
    ),
    "chen_referral.txt": (
        "Ref CH-1. Referral. Client: Robert Chen. Date of birth: 14 February 1990. "
        "Accident date: 2 June 2024.",
        {
            "client_name": ("Robert Chen", "Client: Robert Chen"),
            "date_of_birth": ("1990-02-14", "Date of birth: 14 February 1990"),
            "accident_date": ("2024-06-02", "Accident date: 2 June 2024"),
        },
    ),
    "chen_report.txt": (
        "Ref CH-2. Report on R. Chen. The accident occurred on 9 June 2024.",
        {
            "client_name": ("R. Chen", "Report on R. Chen"),
            "accident_date": ("2024-06-09", "The accident occurred on 9 June 2024"),
        },
    ),
    "chen_letter.txt": (
        "Ref CH-3. Letter to Robert Chen about his claim, date of birth 14 February 1990.",
        {
            "client_name": ("Robert Chen", "Letter to Robert Chen"),
            "date_of_birth": ("1990-02-14", "date of birth 14 February 1990"),
        },
    ),
    "garcia_referral.txt": (
        "Ref GA-1. Referral. Client: Maria Garcia. Date of birth: 23 November 1975. "
        "Accident date: 5 January 2024.",
        {
            "client_name": ("Maria Garcia", "Client: Maria Garcia"),
            "date_of_birth": ("1975-11-23", "Date of birth: 23 November 1975"),
            "accident_date": ("2024-01-05", "Accident date: 5 January 2024"),
        },
    ),
    "garcia_letter.txt": (
        "Ref GA-2. Letter regarding Maria Garcia. Accident date: 5 January 2024.",
        {
            "client_name": ("Maria Garcia", "Letter regarding Maria Garcia"),
            "accident_date": ("2024-01-05", "Accident date: 5 January 2024"),
        },
    ),
}

CLIENT_MATCH = {
    "list": "clients",
    "column": "name",
    "key_column": "client_id",
    "method": "name",
}
VARIABLES: list[dict[str, Any]] = [
    {
        "name": "client_name",
        "description": "The client's full name",
        "type": "text",
        "match": CLIENT_MATCH,
    },
    {"name": "date_of_birth", "description": "The client's date of birth", "type": "date"},
    {"name": "accident_date", "description": "The date of the accident", "type": "date"},
]


def script_answers(fake_llm: FakeLLM) -> None:
    """Each document's answers, by its reference marker ("Ref SM-1")."""
    for text, answers in DOCUMENTS.values():
        marker = text.split(".")[0]
        for variable in ("client_name", "date_of_birth", "accident_date"):
            if variable in answers:
                value, quote = answers[variable]
                reply: dict[str, Any] = {
                    "found": True,
                    "evidence": quote,
                    "value": value,
                    "confidence": 0.9,
                }
            else:
                reply = {"found": False, "evidence": None, "value": None, "confidence": 0.9}
            fake_llm.script(variable=variable, contains=marker, reply=reply)


async def upload_list(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    pid: str,
    data: bytes,
    name: str = "clients",
    filename: str = "clients.csv",
) -> httpx.Response:
    return await client.post(
        f"/api/v1/projects/{pid}/reference-lists",
        files={"file": (filename, data, "text/csv")},
        data={"name": name},
        headers=headers,
    )


async def corpus_project(
    app: FastAPI,
    client: httpx.AsyncClient,
    fake_llm: FakeLLM,
    email: str = "records@example.org",
    variables: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, str], str, dict[str, str]]:
    """The corpus uploaded, the client list uploaded, the variables added and one run
    completed; returns the headers, the project id and the document ids by filename."""
    headers = await sign_up(app, client, email)
    pid = (await create_project(client, headers, "Claims"))["id"]
    response = await upload_list(client, headers, pid, CLIENTS_CSV)
    assert response.status_code == 201, response.text
    for spec in variables or VARIABLES:
        await add_variable(client, headers, pid, **spec)
    files = [(name, text.encode(), "text/plain") for name, (text, _) in DOCUMENTS.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201
    documents = await wait_for_documents(client, headers, pid)
    assert all(d["status"] == "ready" for d in documents)
    script_answers(fake_llm)
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"])
    assert run["status"] == "completed", run
    return headers, pid, {d["filename"]: d["id"] for d in documents}
