"""What the client asks of a Quarry server, once, for the sync and the async client alike.

Every operation is a generator that yields the steps it needs — a `Call` (one HTTP request)
or a `Pause` (a wait between polls) — and is sent each call's `httpx.Response`; it returns
the operation's result. `Quarry` runs the steps with `httpx.Client` and `time.sleep`,
`AsyncQuarry` with `httpx.AsyncClient` and `asyncio.sleep`: request building, pagination,
polling, error handling and the typed results exist only here.

The results are the server's own response schemas (the API's contract), so a field the API
documents is a typed attribute here.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
from pydantic import BaseModel

from quarry.auth.schemas import TokenOut, UserOut
from quarry.client.frames import long_frame, wide_frame
from quarry.documents.schemas import DocumentOut, UploadItemOut
from quarry.evaluation.schemas import EvaluationOut
from quarry.extract.codebook import Codebook, load_codebook
from quarry.extract.inputs import find_documents
from quarry.extractions.schemas import ExtractionOut, ReviewOut
from quarry.projects.schemas import ProjectOut
from quarry.runs.schemas import RunEstimate, RunOut
from quarry.variables.codebook_files import codebook_document
from quarry.variables.schemas import VariableOut

API = "/api/v1"
#: The most items the API gives per page.
PAGE_SIZE = 500
#: Files sent per upload request.
UPLOAD_BATCH = 20
_ACTIVE_RUN = frozenset({"preparing", "queued", "running"})

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class QuarryAPIError(Exception):
    """The server answered with an error: its status, its code and its sentence."""

    def __init__(self, status_code: int, error: str, detail: str) -> None:
        super().__init__(f"{status_code} {error}: {detail}")
        self.status_code = status_code
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class Call:
    """One HTTP request to the API (the path is relative to `/api/v1`)."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    data: Mapping[str, Any] | None = None
    files: Sequence[tuple[str, tuple[str, bytes, str]]] | None = None


@dataclass(frozen=True)
class Pause:
    seconds: float


Step = Call | Pause
Operation = Generator[Step, httpx.Response | None, T]
ProgressCallback = Callable[[RunOut], None]


@dataclass
class Session:
    """What the two clients share: the server's address and the signed-in token."""

    base_url: str
    token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, client: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        headers = dict(self.headers)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return client.build_request(
            call.method,
            f"{self.base_url.rstrip('/')}{API}{call.path}",
            params={k: v for k, v in (call.params or {}).items() if v is not None},
            json=call.json,
            data=call.data,
            files=call.files,
            headers=headers,
        )


def _checked(response: httpx.Response | None) -> httpx.Response:
    assert response is not None, "a Call step is always sent its response"
    if response.status_code >= 400:
        try:
            body = response.json()
            error, detail = str(body.get("error", "error")), str(body.get("detail", body))
        except (ValueError, AttributeError):
            error, detail = "error", response.text[:500]
        raise QuarryAPIError(response.status_code, error, detail)
    return response


def _ask(call: Call) -> Generator[Step, httpx.Response | None, httpx.Response]:
    response = yield call
    return _checked(response)


def _one(call: Call, model: type[M]) -> Operation[M]:
    response = yield from _ask(call)
    return model.model_validate(response.json())


def _every(
    path: str, model: type[M], params: Mapping[str, Any] | None = None
) -> Operation[list[M]]:
    """Every item of a paginated list."""
    items: list[M] = []
    while True:
        response = yield from _ask(
            Call("GET", path, params={**(params or {}), "limit": PAGE_SIZE, "offset": len(items)})
        )
        page = response.json()
        items += [model.model_validate(item) for item in page["items"]]
        if len(items) >= page["total"] or not page["items"]:
            return items


def _project(project: ProjectOut | uuid.UUID | str) -> str:
    return str(project.id if isinstance(project, ProjectOut) else project)


ProjectRef = ProjectOut | uuid.UUID | str


# ---------------------------------------------------------------------------------------------
# Sign-in and projects


def sign_in(email: str, password: str) -> Operation[TokenOut]:
    response = yield from _ask(
        Call("POST", "/auth/token", data={"username": email, "password": password})
    )
    return TokenOut.model_validate(response.json())


def me() -> Operation[UserOut]:
    return _one(Call("GET", "/users/me"), UserOut)


def projects() -> Operation[list[ProjectOut]]:
    return _every("/projects", ProjectOut)


def project(ref: ProjectRef) -> Operation[ProjectOut]:
    return _one(Call("GET", f"/projects/{_project(ref)}"), ProjectOut)


def create_project(name: str, **settings: Any) -> Operation[ProjectOut]:
    return _one(Call("POST", "/projects", json={"name": name, **settings}), ProjectOut)


def update_project(ref: ProjectRef, **changes: Any) -> Operation[ProjectOut]:
    return _one(Call("PATCH", f"/projects/{_project(ref)}", json=changes), ProjectOut)


def delete_project(ref: ProjectRef) -> Operation[None]:
    yield from _ask(Call("DELETE", f"/projects/{_project(ref)}"))
    return None


# ---------------------------------------------------------------------------------------------
# The codebook


def variables(ref: ProjectRef) -> Operation[list[VariableOut]]:
    response = yield from _ask(Call("GET", f"/projects/{_project(ref)}/variables"))
    return [VariableOut.model_validate(item) for item in response.json()["items"]]


def _as_codebook(codebook: Codebook | str | Path) -> Codebook:
    return codebook if isinstance(codebook, Codebook) else load_codebook(Path(codebook))


def import_codebook(
    ref: ProjectRef, codebook: Codebook | str | Path, *, remove_others: bool = True
) -> Operation[list[VariableOut]]:
    """Make the project's codebook the file's, all or nothing, through `PUT …/codebook`:
    variables matched by name (in its order: an unchanged variable keeps its prompt
    version), its settings applied, and with `remove_others` the variables it does not name
    deleted. The file is checked here first (`CodebookError`, every problem listed)."""
    checked = _as_codebook(codebook).checked
    response = yield from _ask(
        Call(
            "PUT",
            f"/projects/{_project(ref)}/codebook",
            params={"format": "json", "delete_missing": str(remove_others).lower()},
            json=codebook_document(checked),
        )
    )
    return [VariableOut.model_validate(item) for item in response.json()["variables"]]


# ---------------------------------------------------------------------------------------------
# Documents


def upload(ref: ProjectRef, paths: Sequence[str | Path]) -> Operation[list[UploadItemOut]]:
    """Upload files, folders (their PDF, DOCX, TXT and Markdown files) and globs, a batch
    of files per request; an item per file, in order (`duplicate_of` set for bytes the
    project holds already)."""
    files = find_documents([str(p) for p in paths])
    pid = _project(ref)
    items: list[UploadItemOut] = []
    for start in range(0, len(files), UPLOAD_BATCH):
        batch = files[start : start + UPLOAD_BATCH]
        parts = [
            ("files", (path.name, path.read_bytes(), "application/octet-stream")) for path in batch
        ]
        response = yield from _ask(Call("POST", f"/projects/{pid}/documents", files=parts))
        items += [UploadItemOut.model_validate(item) for item in response.json()["items"]]
    return items


def documents(ref: ProjectRef) -> Operation[list[DocumentOut]]:
    return _every(f"/projects/{_project(ref)}/documents", DocumentOut)


def wait_for_documents(
    ref: ProjectRef, *, poll_seconds: float = 0.5, timeout: float | None = None
) -> Operation[list[DocumentOut]]:
    """Wait until no document is still being parsed; returns them all (`ready` or
    `failed`, with its reason in `error`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = yield from documents(ref)
        if all(d.status in ("ready", "failed") for d in found):
            return found
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"documents still being parsed after {timeout} s")
        yield Pause(poll_seconds)


# ---------------------------------------------------------------------------------------------
# Runs


def _run_body(**fields: Any) -> dict[str, Any]:
    body = {k: v for k, v in fields.items() if v is not None and v is not False}
    for key in ("document_ids", "variable_ids"):
        if key in body:
            body[key] = [str(i) for i in body[key]]
    return body


def start_run(ref: ProjectRef, **fields: Any) -> Operation[RunOut]:
    return _one(Call("POST", f"/projects/{_project(ref)}/runs", json=_run_body(**fields)), RunOut)


def estimate_run(ref: ProjectRef, **fields: Any) -> Operation[RunEstimate]:
    body = {**_run_body(**fields), "dry_run": True}
    return _one(Call("POST", f"/projects/{_project(ref)}/runs", json=body), RunEstimate)


def run(ref: ProjectRef, run_id: uuid.UUID | str) -> Operation[RunOut]:
    return _one(Call("GET", f"/projects/{_project(ref)}/runs/{run_id}"), RunOut)


def runs(ref: ProjectRef) -> Operation[list[RunOut]]:
    return _every(f"/projects/{_project(ref)}/runs", RunOut)


def cancel_run(ref: ProjectRef, run_id: uuid.UUID | str) -> Operation[RunOut]:
    return _one(Call("POST", f"/projects/{_project(ref)}/runs/{run_id}/cancel"), RunOut)


def retry_run(ref: ProjectRef, run_id: uuid.UUID | str, **fields: Any) -> Operation[RunOut]:
    path = f"/projects/{_project(ref)}/runs/{run_id}/retry"
    return _one(Call("POST", path, json=fields or None), RunOut)


def wait_for_run(
    ref: ProjectRef,
    run_id: uuid.UUID | str,
    *,
    progress: ProgressCallback | None = None,
    poll_seconds: float = 1.0,
    timeout: float | None = None,
) -> Operation[RunOut]:
    """Poll the run until it is over, calling `progress` with each reading; returns it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = yield from run(ref, run_id)
        if progress is not None:
            progress(current)
        if current.status not in _ACTIVE_RUN:
            return current
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {current.status} after {timeout} s")
        yield Pause(poll_seconds)


# ---------------------------------------------------------------------------------------------
# Results, reviews, evaluation, exports


def extractions(ref: ProjectRef, **filters: Any) -> Operation[list[ExtractionOut]]:
    """The project's extractions, filtered by run_id, document_id, variable_id, status…"""
    params = {k: str(v) for k, v in filters.items() if v is not None}
    return _every(f"/projects/{_project(ref)}/extractions", ExtractionOut, params)


def review(
    ref: ProjectRef,
    document_id: uuid.UUID | str,
    variable_id: uuid.UUID | str,
    status: str,
    value: Any = None,
    note: str = "",
) -> Operation[ReviewOut]:
    path = f"/projects/{_project(ref)}/reviews/{document_id}/{variable_id}"
    body = {"status": status, "value": value, "note": note}
    return _one(Call("PUT", path, json=body), ReviewOut)


def evaluate(
    ref: ProjectRef,
    gold: str | Path | bytes | pd.DataFrame,
    *,
    run_id: uuid.UUID | str | None = None,
    **tolerance: float,
) -> Operation[EvaluationOut]:
    """Measure the values against gold values: a CSV (a path, its bytes, or a DataFrame in
    the wide export's shape: a `filename` column and a column per variable)."""
    if isinstance(gold, pd.DataFrame):
        content = gold.to_csv(index=False).encode()
    elif isinstance(gold, bytes):
        content = gold
    else:
        content = Path(gold).read_bytes()
    data = {"run_id": str(run_id)} if run_id is not None else None
    call = Call(
        "POST",
        f"/projects/{_project(ref)}/evaluation",
        params=tolerance,
        data=data,
        files=[("gold", ("gold.csv", content, "text/csv"))],
    )
    return _one(call, EvaluationOut)


def evaluate_reviews(
    ref: ProjectRef, *, run_id: uuid.UUID | str | None = None, **tolerance: float
) -> Operation[EvaluationOut]:
    params = {"gold": "reviews", "run_id": str(run_id) if run_id else None, **tolerance}
    return _one(Call("GET", f"/projects/{_project(ref)}/evaluation", params=params), EvaluationOut)


def export(ref: ProjectRef, format: str = "csv", layout: str = "wide") -> Operation[bytes]:
    """The export file's bytes (csv, xlsx or json; wide or long)."""
    params = {"format": format, "layout": layout}
    response = yield from _ask(Call("GET", f"/projects/{_project(ref)}/export", params=params))
    return response.content


def export_dataframe(ref: ProjectRef, layout: str = "wide") -> Operation[pd.DataFrame]:
    """The export as a DataFrame with typed columns (see `quarry.client.frames`)."""
    rows = json.loads((yield from export(ref, "json", layout)))
    if layout == "long":
        return long_frame(rows)
    return wide_frame(rows, (yield from variables(ref)))
