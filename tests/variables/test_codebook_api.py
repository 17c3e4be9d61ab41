"""Codebook files through the API: export, import into another project, every error listed,
all or nothing, prompt versions kept, and round trips in every format."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from fastapi import FastAPI

from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM
from tests.support.postgres import temporary_postgres_database

EXAMPLE_CODEBOOK = Path(__file__).resolve().parents[2] / "examples" / "codebook.yaml"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
API = "/api/v1/projects"

#: Every type, and the awkward corners a spreadsheet cell must carry back: a formula-like
#: description, an allowed value with a comma, a list example, multi-line instructions.
RICH: list[dict[str, Any]] = [
    {
        "name": "sample_size",
        "label": "Sample size",
        "description": "Participants randomised",
        "type": "integer",
        "examples": [{"value": "1,234", "snippet": "1,234 patients were randomised"}],
        "required": True,
    },
    {"name": "mean_age", "description": "=Mean age at baseline", "type": "number", "unit": "years"},
    {
        "name": "blinded",
        "description": "Double-blind?",
        "type": "boolean",
        "examples": [{"value": False}],
    },
    {
        "name": "start_date",
        "description": "Start",
        "type": "date",
        "examples": [{"value": "2020-03"}],
    },
    {
        "name": "design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort, prospective", "Yes"],
        "examples": [{"value": "Cohort, prospective", "snippet": "a prospective cohort"}],
    },
    {
        "name": "outcomes",
        "description": "Outcomes reported",
        "type": "multi_category",
        "allowed_values": ["Mortality", "Quality of life"],
        "examples": [{"value": ["Mortality", "Quality of life"]}],
    },
    {
        "name": "drugs",
        "description": "Drugs given",
        "type": "list",
        "instructions": "One item per arm.\n- with its dose",
        "examples": [{"value": ["atorvastatin 40 mg", "placebo"], "snippet": "two arms"}],
    },
    {"name": "title", "description": "The title", "type": "text"},
]


def codebook_url(pid: str) -> str:
    return f"{API}/{pid}/codebook"


async def codebook_state(client: httpx.AsyncClient, headers: dict[str, str], pid: str) -> Any:
    """What a user sees of a codebook: each variable's fields, prompt and version, in order."""
    variables = (await client.get(f"{API}/{pid}/variables", headers=headers)).json()["items"]
    state = []
    for v in variables:
        prompt = await client.get(f"{API}/{pid}/variables/{v['id']}/prompt", headers=headers)
        fields = {
            k: v[k]
            for k in (
                "name",
                "label",
                "description",
                "type",
                "allowed_values",
                "unit",
                "examples",
                "instructions",
                "required",
                "position",
            )
        }
        state.append(
            {**fields, "prompt": prompt.json()["variable_prompt"], "version": v["prompt_version"]}
        )
    return state


async def put_codebook(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    pid: str,
    content: bytes,
    content_type: str | None = None,
    **params: Any,
) -> httpx.Response:
    extra = {"Content-Type": content_type} if content_type else {}
    return await client.put(
        codebook_url(pid), content=content, params=params, headers={**headers, **extra}
    )


@pytest.fixture
async def owner(app: FastAPI, client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    headers = await sign_up(app, client, "codebook@example.org")
    project = await create_project(client, headers, "Source trials")
    for spec in RICH:
        await add_variable(client, headers, project["id"], **spec)
    return headers, project["id"]


async def test_a_codebook_moved_to_another_project_asks_the_model_the_same(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], fake_llm: FakeLLM
) -> None:
    headers, source = owner
    await client.patch(
        f"{API}/{source}", json={"group_size": 1, "llm_temperature": 0.2}, headers=headers
    )
    exported = await client.get(codebook_url(source), headers=headers)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/yaml")
    assert 'filename="source-trials-codebook.yaml"' in exported.headers["content-disposition"]

    target = (await create_project(client, headers, "Target trials"))["id"]
    imported = await put_codebook(client, headers, target, exported.content, "application/yaml")
    assert imported.status_code == 200, imported.text
    assert imported.json()["created"] == [v["name"] for v in RICH]
    assert imported.json()["settings"]["llm_temperature"] == 0.2
    assert (await client.get(f"{API}/{target}", headers=headers)).json()["llm_temperature"] == 0.2
    assert await codebook_state(client, headers, target) == await codebook_state(
        client, headers, source
    )

    # The prompts the model receives are byte for byte the same in both projects.
    sent: dict[str, list[str]] = {}
    for pid in (source, target):
        await upload(
            client, headers, pid, [("trial.txt", b"240 patients were randomised.\n", "text/plain")]
        )
        await wait_for_documents(client, headers, pid)
        before = len(fake_llm.requests)
        run = (await client.post(f"{API}/{pid}/runs", json={}, headers=headers)).json()
        await wait_for_run(client, headers, pid, run["id"])
        sent[pid] = sorted(r.text for r in fake_llm.requests[before:])
    assert len(sent[source]) == len(RICH)
    assert sent[source] == sent[target]


@pytest.mark.parametrize("file_format", ["yaml", "json", "csv", "xlsx"])
async def test_every_format_round_trips_into_an_identical_codebook(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], file_format: str
) -> None:
    headers, source = owner
    exported = await client.get(
        codebook_url(source), params={"format": file_format}, headers=headers
    )
    assert exported.status_code == 200, exported.text
    target = (await create_project(client, headers, f"Copy {file_format}"))["id"]
    # The format comes from the parameter here, from the Content-Type or the bytes elsewhere.
    imported = await put_codebook(client, headers, target, exported.content, format=file_format)
    assert imported.status_code == 200, imported.text
    assert await codebook_state(client, headers, target) == await codebook_state(
        client, headers, source
    )
    # Importing the same file again changes nothing, so every prompt version is kept.
    again = await put_codebook(client, headers, target, exported.content, format=file_format)
    assert again.json()["unchanged"] == [v["name"] for v in RICH]
    assert {v["prompt_version"] for v in again.json()["variables"]} == {1}


async def test_spreadsheet_exports_are_text_cells_a_spreadsheet_will_not_run(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, source = owner
    exported = await client.get(codebook_url(source), params={"format": "xlsx"}, headers=headers)
    sheet = openpyxl.load_workbook(io.BytesIO(exported.content))["Variables"]
    rows = {row[0].value: row for row in sheet.iter_rows(min_row=2)}
    description = rows["mean_age"][3]
    assert description.data_type == "s" and description.value == "'=Mean age at baseline"
    csv_text = (
        await client.get(codebook_url(source), params={"format": "csv"}, headers=headers)
    ).text
    assert "'=Mean age at baseline" in csv_text


async def test_a_bad_file_lists_every_problem_and_changes_nothing(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    before = await codebook_state(client, headers, pid)
    bad = b"""\
settings: {group_size: 50}
variables:
  - name: sample_size
    type: integer
    description: Changed, which must not be applied
    examples: [240]
  - name: design
    type: category
    description: Study design
    allowed_values: [RCT]
  - name: brand_new
    description: A new variable, which must not be created
    type: datetime
  - name: sample_size
    type: text
    description: Twice
"""
    response = await put_codebook(client, headers, pid, bad, "application/yaml")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_codebook"
    problems = {(p["variable"], p["field"]): p["message"] for p in body["problems"]}
    assert len(body["problems"]) == 5, body["problems"]  # all of them, not the first
    assert '[{"value": …, "snippet": …}]' in problems[("sample_size", "examples")]
    assert "[240]" in problems[("sample_size", "examples")]
    assert "at least two allowed values" in problems[("design", None)]
    assert "one of: text, integer" in problems[("brand_new", "type")]
    assert "already used by entry 1" in problems[("sample_size", "name")]
    assert "from 1 to 20" in problems[(None, "group_size")]
    for problem in body["problems"]:
        assert problem["message"] in body["detail"]
        assert "Input should be" not in problem["message"]  # sentences, not parser output
    assert await codebook_state(client, headers, pid) == before
    assert (await client.get(f"{API}/{pid}", headers=headers)).json()["group_size"] == 1


async def test_spreadsheet_problems_name_their_rows(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    csv_file = (
        b"name,type,description,allowed_values,examples\r\n"
        b"ok_one,text,Fine,,\r\n"
        b"\r\n"
        b"age,integer,Age,,forty\r\n"
        b"Bad Name,category,Design,RCT;Cohort,\r\n"
    )
    response = await put_codebook(client, headers, pid, csv_file, "text/csv")
    assert response.status_code == 400
    rows = {p["row"]: p["message"] for p in response.json()["problems"]}
    assert set(rows) == {4, 5}
    assert rows[4].startswith("Row 4 (variable 'age')") and "Example 1" in rows[4]
    assert rows[5].startswith("Row 5 (variable 'Bad Name')")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"a: &x [1, 2]\nvariables: *x\n", "anchor or alias"),
        (b"variables: [\n", "not valid YAML on line 2"),
        (b"!!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
        (b"variables:\n  - name: a\n    name: b\n", "appears twice"),
        (b"just text\n", "a codebook is a mapping"),
        (b"variables:\n  - {? [a]: 1}\n", "keys are plain names"),
        (b"variables:\n" + b"- " * 5000 + b"x\n", "nested too deeply"),
    ],
)
async def test_hostile_or_broken_yaml_gets_a_sentence(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], content: bytes, needle: str
) -> None:
    headers, pid = owner
    response = await put_codebook(client, headers, pid, content, "application/yaml")
    assert response.status_code == 400, response.text
    assert needle in response.json()["detail"]


async def test_a_billion_laughs_file_is_refused_without_expanding(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    lines = ['a0: &a0 ["lol"]'] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)
    ]
    response = await put_codebook(
        client, headers, pid, "\n".join(lines).encode(), "application/yaml"
    )
    assert response.status_code == 400
    assert "anchor or alias" in response.json()["detail"]


async def test_an_oversized_file_is_refused(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    response = await put_codebook(
        client, headers, pid, b"#" * (2 * 1024 * 1024 + 1), "application/yaml"
    )
    assert response.status_code == 413
    assert "larger than 2 MB" in response.json()["detail"]


async def test_import_matches_by_name_keeps_versions_and_keeps_or_deletes_the_rest(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    exported = (
        await client.get(codebook_url(pid), params={"format": "json"}, headers=headers)
    ).json()
    variables = exported["variables"]
    title = next(v for v in variables if v["name"] == "title")
    title["description"] = "The full title of the trial"
    exported["variables"] = [title, next(v for v in variables if v["name"] == "design")]

    response = await put_codebook(
        client, headers, pid, json.dumps(exported).encode(), "application/json"
    )
    assert response.status_code == 200, response.text
    result = response.json()
    # design only moved (first → second place): updated, but its prompt is the same one.
    assert result["updated"] == ["title", "design"] and result["unchanged"] == []
    assert result["created"] == [] and result["deleted"] == []
    names = [v["name"] for v in result["variables"]]
    assert names[:2] == ["title", "design"] and len(names) == len(RICH)
    versions = {v["name"]: v["prompt_version"] for v in result["variables"]}
    assert versions["title"] == 2 and versions["design"] == 1

    deleted = await put_codebook(
        client,
        headers,
        pid,
        json.dumps(exported).encode(),
        "application/json",
        delete_missing="true",
    )
    assert sorted(deleted.json()["deleted"]) == sorted(
        v["name"] for v in RICH if v["name"] not in ("title", "design")
    )
    assert [v["name"] for v in deleted.json()["variables"]] == ["title", "design"]


async def test_prompt_versions_list_their_text_and_runs_and_an_old_text_is_reused(
    client: httpx.AsyncClient, app: FastAPI, fake_llm: FakeLLM
) -> None:
    await prompt_versions_are_listed_and_reused(app, client, fake_llm)


@pytest.mark.postgres
async def test_codebook_import_and_prompt_versions_on_postgresql(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    with temporary_postgres_database("quarry_codebook") as database_url:
        settings = make_settings(tmp_path, fake_llm, database_url=database_url)
        async with running_app(settings) as (app, client):
            await prompt_versions_are_listed_and_reused(app, client, fake_llm)
            headers = await sign_up(app, client, "pg-codebook@example.org")
            pid = (await create_project(client, headers))["id"]
            bad = b"variables:\n  - {name: ok, type: text, description: Fine}\n  - {name: ok}\n"
            refused = await put_codebook(client, headers, pid, bad, "application/yaml")
            assert refused.status_code == 400
            listed = await client.get(f"{API}/{pid}/variables", headers=headers)
            assert listed.json()["items"] == []  # nothing was created
            good = await put_codebook(client, headers, pid, EXAMPLE_CODEBOOK.read_bytes())
            assert good.status_code == 200, good.text
            again = await put_codebook(client, headers, pid, EXAMPLE_CODEBOOK.read_bytes())
            assert len(again.json()["unchanged"]) == 7


async def prompt_versions_are_listed_and_reused(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers = await sign_up(app, client, "versions@example.org")
    pid = (await create_project(client, headers))["id"]
    variable = await add_variable(
        client, headers, pid, name="site", type="text", description="Where the trial ran"
    )
    vid = variable["id"]
    await upload(client, headers, pid, [("t.txt", b"It ran in Leeds.\n", "text/plain")])
    await wait_for_documents(client, headers, pid)
    run = (await client.post(f"{API}/{pid}/runs", json={}, headers=headers)).json()
    await wait_for_run(client, headers, pid, run["id"])

    edited = await client.patch(
        f"{API}/{pid}/variables/{vid}",
        json={"description": "The city the trial ran in"},
        headers=headers,
    )
    assert edited.json()["prompt_version"] == 2
    back = await client.patch(
        f"{API}/{pid}/variables/{vid}", json={"description": "Where the trial ran"}, headers=headers
    )
    assert back.json()["prompt_version"] == 1  # the earlier text's version, not a third one

    listed = await client.get(f"{API}/{pid}/variables/{vid}/prompt-versions", headers=headers)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [(v["version"], v["current"]) for v in items] == [(1, True), (2, False)]
    assert "Where the trial ran" in items[0]["prompt"]
    assert "The city the trial ran in" in items[1]["prompt"]
    assert [r["id"] for r in items[0]["runs"]] == [run["id"]]
    assert items[1]["runs"] == []

    # A new run uses version 1 again, so it is answered from the cache: no new call.
    calls = fake_llm.calls()
    again = (await client.post(f"{API}/{pid}/runs", json={}, headers=headers)).json()
    await wait_for_run(client, headers, pid, again["id"])
    assert fake_llm.calls() == calls
    items = (
        await client.get(f"{API}/{pid}/variables/{vid}/prompt-versions", headers=headers)
    ).json()["items"]
    assert {r["id"] for r in items[0]["runs"]} == {run["id"], again["id"]}


async def test_the_example_codebook_imports(client: httpx.AsyncClient, app: FastAPI) -> None:
    headers = await sign_up(app, client, "example@example.org")
    pid = (await create_project(client, headers))["id"]
    # Sent as curl --data-binary sends it: the format is found from the bytes.
    response = await put_codebook(
        client, headers, pid, EXAMPLE_CODEBOOK.read_bytes(), "application/x-www-form-urlencoded"
    )
    assert response.status_code == 200, response.text
    assert [v["name"] for v in response.json()["variables"]][:2] == ["sample_size", "design"]


async def test_another_users_codebook_is_not_found(
    client: httpx.AsyncClient, app: FastAPI, owner: tuple[dict[str, str], str]
) -> None:
    _, pid = owner
    stranger = await sign_up(app, client, "stranger@example.org")
    assert (await client.get(codebook_url(pid), headers=stranger)).status_code == 404
    response = await put_codebook(client, stranger, pid, EXAMPLE_CODEBOOK.read_bytes())
    assert response.status_code == 404


async def test_a_codebook_with_control_characters_downloads_as_xlsx(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Found by the contract fuzzer: a description holding a control character made the
    xlsx download a 500 (openpyxl refuses XML-illegal characters)."""
    headers = await sign_up(app, client, "control@example.org")
    pid = (await create_project(client, headers, "Control"))["id"]
    await add_variable(client, headers, pid, name="n", type="integer", description="N\x0bof\x01it")
    response = await client.patch(
        f"/api/v1/projects/{pid}", json={"llm_model": "model\x01x"}, headers=headers
    )
    assert response.status_code == 200, response.text
    response = await client.get(
        f"/api/v1/projects/{pid}/codebook", params={"format": "xlsx"}, headers=headers
    )
    assert response.status_code == 200, response.text
    sheet = openpyxl.load_workbook(io.BytesIO(response.content))["Variables"]
    assert [c.value for c in sheet[2]][3] == "N of it"
    settings = openpyxl.load_workbook(io.BytesIO(response.content))["Settings"]
    assert [c.value for c in settings[2]] == ["llm_model", "model x"]
    yaml_text = await client.get(
        f"/api/v1/projects/{pid}/codebook", params={"format": "yaml"}, headers=headers
    )
    assert yaml_text.status_code == 200
