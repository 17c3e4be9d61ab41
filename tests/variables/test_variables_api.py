"""The codebook through the API: every type, validation sentences, prompt versions, order."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support.api import add_variable, create_project, sign_up

Owner = tuple[dict[str, str], str]

EVERY_TYPE: list[dict[str, Any]] = [
    {"name": "title", "description": "The trial's title", "type": "text"},
    {
        "name": "sample_size",
        "description": "Participants randomised",
        "type": "integer",
        "examples": [{"value": "1,234", "snippet": "1,234 patients were randomised"}],
    },
    {"name": "mean_age", "description": "Mean age", "type": "number", "unit": "years"},
    {"name": "randomised", "description": "Was allocation randomised?", "type": "boolean"},
    {
        "name": "start_date",
        "description": "When recruitment started",
        "type": "date",
        "examples": [{"value": "2020-03"}],
    },
    {
        "name": "design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort", "Case-control"],
    },
    {
        "name": "outcomes",
        "description": "Outcomes reported",
        "type": "multi_category",
        "allowed_values": ["Mortality", "Quality of life"],
    },
    {"name": "drugs", "description": "Drugs given", "type": "list"},
]


@pytest.fixture
async def owner(app: FastAPI, client: httpx.AsyncClient) -> Owner:
    headers = await sign_up(app, client, "coder@example.org")
    project = await create_project(client, headers, "Codebook")
    return headers, project["id"]


def url(pid: str, *parts: str) -> str:
    return "/".join([f"/api/v1/projects/{pid}/variables", *parts])


def assert_error(response: httpx.Response, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    detail: str = body["detail"]
    assert isinstance(detail, str) and " " in detail, detail
    for needle in needles:
        assert needle in detail, detail
    return detail


async def variable_names(client: httpx.AsyncClient, owner: Owner) -> list[str]:
    headers, pid = owner
    response = await client.get(url(pid), headers=headers)
    assert response.status_code == 200, response.text
    return [v["name"] for v in response.json()["items"]]


async def test_every_type_can_be_created_and_read_back(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    for spec in EVERY_TYPE:
        created = await add_variable(client, headers, pid, **spec)
        assert created["type"] == spec["type"]
        assert created["label"] == spec["name"]  # defaults to the name
        assert created["prompt_version"] == 1
        read = await client.get(url(pid, created["id"]), headers=headers)
        assert read.status_code == 200 and read.json() == created

    listing = (await client.get(url(pid), headers=headers)).json()
    variables = {v["name"]: v for v in listing["items"]}
    assert list(variables) == [spec["name"] for spec in EVERY_TYPE]
    assert variables["mean_age"]["unit"] == "years"
    assert variables["design"]["allowed_values"] == ["RCT", "Cohort", "Case-control"]
    # Examples are stored in the variable's type: "1,234" is the integer 1234.
    assert variables["sample_size"]["examples"] == [
        {"value": 1234, "snippet": "1,234 patients were randomised"}
    ]
    assert variables["start_date"]["examples"] == [{"value": "2020-03", "snippet": None}]


# (what is wrong, the fields sent, words the answer must contain)
CODEBOOK_MISTAKES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("category without values", {"type": "category"}, ("category", "allowed values")),
    (
        "category with one value",
        {"type": "category", "allowed_values": ["Only one"]},
        ("at least two",),
    ),
    ("multi_category without values", {"type": "multi_category"}, ("allowed value",)),
    (
        "integer with allowed values",
        {"type": "integer", "allowed_values": ["1", "2"]},
        ("allowed values", "integer"),
    ),
    ("text with a unit", {"type": "text", "unit": "mg"}, ("unit", "text")),
    ("integer example abc", {"type": "integer", "examples": [{"value": "abc"}]}, ("Example 1",)),
    ("date example someday", {"type": "date", "examples": [{"value": "someday"}]}, ("Example 1",)),
    (
        "category example not allowed",
        {"type": "category", "allowed_values": ["A", "B"], "examples": [{"value": "C"}]},
        ("Example 1", "allowed values"),
    ),
    (
        "allowed value listed twice",
        {"type": "category", "allowed_values": ["Yes", "yes"]},
        ("more than once",),
    ),
    ("reserved document_id", {"type": "text", "name": "document_id"}, ("document_id", "reserved")),
    ("reserved filename", {"type": "text", "name": "filename"}, ("filename", "reserved")),
]

# Request-shape errors: (what is wrong, the fields sent, the field the answer names)
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("slug with a space", {"name": "Sample Size"}, "name"),
    ("slug with a leading digit", {"name": "1st"}, "name"),
    ("empty name", {"name": ""}, "name"),
    ("unknown type", {"type": "percentage"}, "type"),
    ("empty description", {"description": ""}, "description"),
    ("unknown field", {"colour": "red"}, "colour"),
    ("negative position", {"position": -1}, "position"),
]


async def test_a_codebook_mistake_is_400_with_a_sentence(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    for case, fields, needles in CODEBOOK_MISTAKES:
        body = {"name": "thing", "description": "Something to extract", **fields}
        response = await client.post(url(pid), json=body, headers=headers)
        try:
            assert_error(response, 400, *needles)
            assert response.json()["error"] == "bad_request"
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from exc
    assert await variable_names(client, owner) == []


async def test_a_malformed_request_is_422_naming_the_field(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    for case, fields, field in MALFORMED:
        body = {"name": "thing", "description": "Something", "type": "text", **fields}
        response = await client.post(url(pid), json=body, headers=headers)
        try:
            assert_error(response, 422, field)
            assert response.json()["error"] == "validation_error"
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from exc
    assert await variable_names(client, owner) == []


async def test_a_duplicate_name_is_409(client: httpx.AsyncClient, owner: Owner) -> None:
    headers, pid = owner
    await add_variable(client, headers, pid, name="title", description="Title", type="text")
    other = await add_variable(client, headers, pid, name="other", description="x", type="text")

    response = await client.post(
        url(pid), json={"name": "title", "description": "Again", "type": "text"}, headers=headers
    )
    assert_error(response, 409, "title")
    # Renaming another variable onto the name is the same conflict.
    response = await client.patch(url(pid, other["id"]), json={"name": "title"}, headers=headers)
    assert_error(response, 409, "title")
    assert await variable_names(client, owner) == ["title", "other"]


async def test_the_same_name_is_fine_in_another_project(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    other = (await create_project(client, headers, "Other"))["id"]
    await add_variable(client, headers, pid, name="title", description="Title", type="text")
    await add_variable(client, headers, other, name="title", description="Title", type="text")


async def test_editing_what_the_model_is_asked_makes_a_new_prompt_version(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    variable = await add_variable(
        client, headers, pid, name="sample_size", description="Participants", type="integer"
    )
    vid = variable["id"]
    prompt = (await client.get(url(pid, vid, "prompt"), headers=headers)).json()
    assert prompt["version"] == 1
    assert "What to extract: Participants" in prompt["variable_prompt"]

    response = await client.patch(
        url(pid, vid), json={"description": "Participants randomised"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["prompt_version"] == 2
    new_prompt = (await client.get(url(pid, vid, "prompt"), headers=headers)).json()
    assert new_prompt["version"] == 2
    assert new_prompt["spec_hash"] != prompt["spec_hash"]
    assert "What to extract: Participants randomised" in new_prompt["variable_prompt"]
    assert new_prompt["system"] == prompt["system"]  # the shared part never changes

    # Fields the model never sees leave the version alone.
    for change in ({"required": True}, {"position": 7}, {"required": False, "position": 3}):
        response = await client.patch(url(pid, vid), json=change, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["prompt_version"] == 2
        assert all(response.json()[k] == v for k, v in change.items())
    # Sending the same description again is not an edit either.
    response = await client.patch(
        url(pid, vid), json={"description": "Participants randomised"}, headers=headers
    )
    assert response.json()["prompt_version"] == 2
    assert (await client.get(url(pid, vid, "prompt"), headers=headers)).json()["version"] == 2


async def test_null_leaves_a_required_field_as_it_was(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    variable = await add_variable(
        client,
        headers,
        pid,
        name="dose",
        label="Daily dose",
        description="The daily dose",
        type="number",
        unit="mg",
        instructions="Convert grams to milligrams.",
    )
    response = await client.patch(
        url(pid, variable["id"]),
        json={
            "name": None,
            "label": None,
            "description": None,
            "type": None,
            "instructions": None,
            "required": None,
            "position": None,
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {**variable, "updated_at": response.json()["updated_at"]}
    assert response.json()["prompt_version"] == 1


async def test_changing_the_type_checks_the_new_definition(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    variable = await add_variable(
        client,
        headers,
        pid,
        name="design",
        description="Study design",
        type="text",
        examples=[{"value": "RCT"}],
    )
    vid = variable["id"]

    response = await client.patch(url(pid, vid), json={"type": "category"}, headers=headers)
    assert_error(response, 400, "allowed values")
    unchanged = (await client.get(url(pid, vid), headers=headers)).json()
    assert unchanged == variable

    response = await client.patch(
        url(pid, vid),
        json={"type": "category", "allowed_values": ["RCT", "Cohort"]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["type"] == "category" and changed["allowed_values"] == ["RCT", "Cohort"]
    assert changed["examples"] == []  # the text examples do not carry over to a new type
    assert changed["prompt_version"] == 2


async def test_the_codebook_is_listed_in_position_order(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    first = await add_variable(client, headers, pid, name="a", description="A", type="text")
    await add_variable(client, headers, pid, name="b", description="B", type="text", position=0)
    await add_variable(client, headers, pid, name="c", description="C", type="text")
    # "a" got position 0 by default, "b" asked for 0 too (ties go by creation), and "c"
    # defaults to after the last one.
    assert await variable_names(client, owner) == ["a", "b", "c"]

    response = await client.patch(url(pid, first["id"]), json={"position": 99}, headers=headers)
    assert response.status_code == 200, response.text
    assert await variable_names(client, owner) == ["b", "c", "a"]

    listing = (await client.get(url(pid), headers=headers)).json()
    assert listing["total"] == 3 and listing["offset"] == 0
    positions = [v["position"] for v in listing["items"]]
    assert positions == sorted(positions)


async def test_a_deleted_variable_is_404_afterwards(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    variable = await add_variable(client, headers, pid, name="title", description="T", type="text")
    keep = await add_variable(client, headers, pid, name="keep", description="K", type="text")

    response = await client.delete(url(pid, variable["id"]), headers=headers)
    assert response.status_code == 204, response.text

    for method, path in (
        ("GET", url(pid, variable["id"])),
        ("GET", url(pid, variable["id"], "prompt")),
        ("PATCH", url(pid, variable["id"])),
        ("DELETE", url(pid, variable["id"])),
    ):
        json = {"description": "x"} if method == "PATCH" else None
        response = await client.request(method, path, json=json, headers=headers)
        assert_error(response, 404, "variable")
    assert await variable_names(client, owner) == ["keep"]
    # The name is free again.
    await add_variable(client, headers, pid, name="title", description="T", type="text")
    assert (await client.get(url(pid, keep["id"]), headers=headers)).status_code == 200


async def test_a_bare_example_value_is_told_the_shape_an_example_has(
    client: httpx.AsyncClient, owner: Owner
) -> None:
    headers, pid = owner
    spec = {"name": "n", "description": "Participants", "type": "integer", "examples": [240]}
    response = await client.post(url(pid), json=spec, headers=headers)
    detail = assert_error(response, 422, 'shaped like {"value": …, "snippet": …}', "not 240")
    assert "Input should be" not in detail and "Value error" not in detail
