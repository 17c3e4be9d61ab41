"""GET …/results, the review grid, on SQLite and PostgreSQL: each cell holds what the exports
hold (final value, flags, the one flag by the xlsx's precedence); rows are sorted and
filtered on the server, with counts per filter value under the other filters."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta
from typing import Any

from quarry.exports.table import FLAG_PRECEDENCE
from quarry.exports.xlsx_writer import FLAG_FILLS
from quarry.extractions.schemas import GridFlag
from quarry.models import ExtractionStatus
from tests.exports.conftest import T0, Project, add_documents, add_extraction, add_review, add_run
from tests.exports.test_export_api import cells_of_every_kind

S = ExtractionStatus
MINUTE = timedelta(minutes=1)


async def grid(project: Project, expect: int = 200, **params: Any) -> dict[str, Any]:
    response = await project.client.get(
        f"/api/v1/projects/{project.id}/results",
        params={k: str(v) for k, v in params.items()},
        headers=project.headers,
    )
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def names(page: dict[str, Any]) -> list[str]:
    return [row["document"]["filename"] for row in page["items"]]


def cell(page: dict[str, Any], filename: str, variable_id: uuid.UUID) -> dict[str, Any]:
    row = next(r for r in page["items"] if r["document"]["filename"] == filename)
    return next(c for c in row["cells"] if c["variable_id"] == str(variable_id))


def counts(page: dict[str, Any], facet: str) -> dict[str, int]:
    return {c["value"]: c["documents"] for c in page["counts"][facet] if c["documents"]}


async def test_each_cell_holds_what_the_exports_hold(project: Project) -> None:
    await cells_of_every_kind(project)
    page = await grid(project)
    n, title = project.variables["n"], project.variables["title"]
    assert names(page) == [f"{x}.txt" for x in "abcdef"]  # the exports' order
    assert (page["total"], page["documents_total"], page["limit"], page["offset"]) == (6, 6, 50, 0)

    response = await project.export("csv", "wide", flags="true")
    wide = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    for row in wide:
        for name, variable_id in (("n", n), ("title", title)):
            shown = cell(page, row["filename"], variable_id)
            exported = row[name]
            assert ("" if shown["value"] is None else str(shown["value"])) == exported
            assert "; ".join(shown["flags"]) == row[f"{name}__flag"]

    # The one flag is the xlsx fill's: the first by its precedence.
    assert cell(page, "f.txt", n)["flag"] == "failed"
    assert cell(page, "c.txt", n)["flag"] == "review_disagrees"
    assert cell(page, "c.txt", title)["flag"] == "not_found"
    assert cell(page, "d.txt", title)["flag"] == "ungrounded"
    assert cell(page, "a.txt", n)["flag"] is None
    # The extraction and the review beside the final value.
    corrected = cell(page, "b.txt", n)
    assert corrected["value"] == 7
    assert corrected["review"] == {"status": "corrected", "value": 7}
    assert corrected["extraction"]["value"] == 5
    assert corrected["extraction"]["confidence"] == 0.1
    assert cell(page, "e.txt", title) == {
        "variable_id": str(title),
        "extraction": None,
        "review": None,
        "value": None,
        "flags": [],
        "flag": None,
        "finding": False,
        "model_hidden": False,
        "dual_review": None,
    }
    assert cell(page, "a.txt", title)["extraction"]["status"] == "succeeded"  # not the failure


def test_one_precedence_for_the_grid_and_the_workbook() -> None:
    assert [name for name, _, _ in FLAG_FILLS] == list(FLAG_PRECEDENCE)
    assert [f.value for f in GridFlag] == [*FLAG_PRECEDENCE, "finding"]


async def test_rows_are_filtered_with_counts_per_filter_value(project: Project) -> None:
    await cells_of_every_kind(project)
    n = project.variables["n"]

    everything = await grid(project)
    # a: both cells answered, unreviewed; b: both reviewed; c: n reviewed, title not;
    # d: unreviewed; e: only a review; f: n failed (unreviewed), title never extracted.
    assert counts(everything, "review") == {"unreviewed": 4, "reviewed": 2}
    assert counts(everything, "flag") == {
        "failed": 1,
        "review_disagrees": 1,
        "not_found": 1,
        "ungrounded": 1,
        "low_confidence": 1,
    }
    assert counts(everything, "status") == {
        "succeeded": 4,
        "not_found": 1,
        "failed": 1,  # a's title failed, but its older answer is the current one
        "not_extracted": 2,  # e (a review only), f's title
    }
    cells = {c["value"]: c["cells"] for c in everything["counts"]["review"]}
    assert cells == {"reviewed": 4, "unreviewed": 6}

    unreviewed = await grid(project, review="unreviewed")
    assert names(unreviewed) == ["a.txt", "c.txt", "d.txt", "f.txt"]
    assert unreviewed["total"] == 4 and unreviewed["documents_total"] == 6
    # Faceted: the review counts ignore the review filter, the others obey it.
    assert counts(unreviewed, "review") == counts(everything, "review")
    assert counts(unreviewed, "flag") == {
        "failed": 1,
        "review_disagrees": 1,
        "not_found": 1,
        "ungrounded": 1,
        "low_confidence": 1,
    }
    reviewed = await grid(project, review="reviewed")
    assert names(reviewed) == ["b.txt", "e.txt"]
    assert counts(reviewed, "flag") == {}

    low = await grid(project, flag="low_confidence")
    assert names(low) == ["d.txt"]
    assert counts(low, "review") == {"unreviewed": 1}

    # A column: only its cells count.
    failed_n = await grid(project, status="failed", variable_id=n)
    assert names(failed_n) == ["f.txt"]
    succeeded_n = await grid(project, status="succeeded", variable_id=n)
    assert names(succeeded_n) == ["a.txt", "b.txt", "c.txt", "d.txt"]
    assert counts(await grid(project, variable_id=n), "review") == {"unreviewed": 3, "reviewed": 3}

    # Searches, case-folded; the value search reads final values only.
    assert names(await grid(project, name="D.TX")) == ["d.txt"]
    assert names(await grid(project, value="TITLE")) == ["a.txt", "d.txt"]  # b's was rejected
    assert names(await grid(project, value="7")) == ["b.txt"]  # corrected 5 → 7
    assert names(await grid(project, value="title", variable_id=n)) == []
    both = await grid(project, value="title", flag="ungrounded")
    assert names(both) == ["d.txt"]
    assert counts(both, "flag") == {"ungrounded": 1, "low_confidence": 1}


async def test_rows_are_sorted_on_the_server_and_paged(project: Project) -> None:
    names_in_upload_order = ["copy 10.txt", "Copy 2.txt", "copy 1.txt", "b.txt", "a.txt"]
    ids = await add_documents(project, names_in_upload_order)
    run = await add_run(project)
    values = [30, None, 4, 200, None]
    for document_id, value in zip(ids, values, strict=True):
        status = S.SUCCEEDED if value is not None else S.NOT_FOUND
        await add_extraction(project, run, document_id, "n", value=value, status=status)
    await add_extraction(project, run, ids[0], "title", value="t", confidence=0.2)
    await add_extraction(project, run, ids[3], "title", status=S.FAILED)
    n, title = project.variables["n"], project.variables["title"]

    assert names(await grid(project)) == names_in_upload_order
    assert names(await grid(project, order="desc")) == names_in_upload_order[::-1]
    assert names(await grid(project, sort="filename")) == [
        "a.txt",
        "b.txt",
        "copy 1.txt",
        "Copy 2.txt",
        "copy 10.txt",
    ]
    by_value = await grid(project, sort="value", sort_variable_id=n)
    assert names(by_value) == ["copy 1.txt", "copy 10.txt", "b.txt", "Copy 2.txt", "a.txt"]
    by_value = await grid(project, sort="value", sort_variable_id=n, order="desc")
    # Cells without a value stay last, in upload order.
    assert names(by_value) == ["b.txt", "copy 10.txt", "copy 1.txt", "Copy 2.txt", "a.txt"]
    by_flag = await grid(project, sort="flag", sort_variable_id=title)
    assert names(by_flag)[:2] == ["b.txt", "copy 10.txt"]  # failed, then low confidence
    by_flag = await grid(project, sort="flag")
    # failed (b), then not stated (Copy 2, a), then low confidence (copy 10); copy 1 unflagged.
    assert names(by_flag) == ["b.txt", "Copy 2.txt", "a.txt", "copy 10.txt", "copy 1.txt"]

    first = await grid(project, sort="filename", limit=2)
    second = await grid(project, sort="filename", limit=2, offset=2)
    assert names(first) + names(second) == ["a.txt", "b.txt", "copy 1.txt", "Copy 2.txt"]
    assert first["total"] == second["total"] == 5


async def test_a_task_that_will_never_start_reads_cancelled(project: Project) -> None:
    [document] = await add_documents(project, ["a.txt"])
    run = await add_run(project)  # completed
    await add_extraction(project, run, document, "n", status=S.PENDING, finished_at=T0)
    page = await grid(project, status="cancelled")
    assert names(page) == ["a.txt"]
    assert cell(page, "a.txt", project.variables["n"])["extraction"]["status"] == "cancelled"
    assert counts(page, "review") == {}  # nothing to review


async def test_bad_grid_requests_are_told_why(project: Project) -> None:
    await add_documents(project, ["a.txt"])
    missing = await grid(project, expect=400, sort="value")
    assert "sort_variable_id" in missing["detail"]
    unknown = await grid(project, expect=400, variable_id=uuid.uuid4())
    assert "no such variable" in unknown["detail"]
    await grid(project, expect=422, flag="nonsense")
    await grid(project, expect=422, name="x" * 201)
    await grid(project, expect=422, document_id="not-an-id")
    too_many = await project.client.get(
        f"/api/v1/projects/{project.id}/results",
        params={"document_id": [str(uuid.uuid4()) for _ in range(501)]},
        headers=project.headers,
    )
    assert too_many.status_code == 422, too_many.text
    # A document of no one's (or deleted since the link was made) is simply not there.
    assert (await grid(project, document_id=uuid.uuid4()))["total"] == 0


async def test_a_review_newer_than_a_reextraction_clears_the_flags(project: Project) -> None:
    [document] = await add_documents(project, ["a.txt"])
    run = await add_run(project)
    await add_extraction(project, run, document, "n", value=3, confidence=0.2)
    assert (await grid(project, flag="low_confidence"))["total"] == 1
    await add_review(project, document, "n", "accepted", 3, at=T0 + MINUTE)
    page = await grid(project, review="reviewed", variable_id=project.variables["n"])
    assert names(page) == ["a.txt"]
    assert (await grid(project, flag="low_confidence"))["total"] == 0


async def test_a_page_read_alone_is_the_page_read_with_every_cell(project: Project) -> None:
    """counts=false in upload or name order without cell filters reads only the page's
    cells: the same rows and cells as the full reading, without counts."""
    await cells_of_every_kind(project)
    n = project.variables["n"]
    for params in (
        {"limit": 2, "offset": 2},
        {"limit": 4, "offset": 1, "order": "desc"},
        {"limit": 3, "sort": "filename", "order": "desc", "name": ".TXT"},
    ):
        full = await grid(project, **params)
        alone = await grid(project, counts="false", **params)
        assert alone["counts"] is None and full["counts"] is not None
        assert {k: v for k, v in alone.items() if k != "counts"} == {
            k: v for k, v in full.items() if k != "counts"
        }
    # With a cell filter the whole project is read still, counted or not.
    filtered = await grid(project, counts="false", flag="failed", variable_id=n)
    assert names(filtered) == ["f.txt"] and filtered["counts"] is None
