"""Typing an export's columns by their variables' types (quarry.client.frames)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from quarry.client.frames import wide_frame
from quarry.variables.schemas import VariableOut


def _variable(name: str, kind: str) -> VariableOut:
    now = datetime.now(UTC)
    return VariableOut(
        id=uuid.uuid4(),
        project_id=uuid.uuid4(),
        name=name,
        label=name,
        description=name,
        type=kind,  # type: ignore[arg-type]
        allowed_values=[],
        unit=None,
        examples=[],
        instructions="",
        required=False,
        position=0,
        prompt_version=1,
        created_at=now,
        updated_at=now,
    )


def _rows(**columns: list[Any]) -> list[dict[str, Any]]:
    count = len(next(iter(columns.values())))
    return [
        {"document_id": str(i), "filename": f"{i}.txt", **{k: v[i] for k, v in columns.items()}}
        for i in range(count)
    ]


def test_a_date_column_with_partial_dates_keeps_them_as_text() -> None:
    variables = [_variable("full", "date"), _variable("partial", "date")]
    frame = wide_frame(_rows(full=["2021-03-04", None], partial=["2021", "2021-03-04"]), variables)
    assert str(frame["full"].dtype) == "datetime64[ns]" and pd.isna(frame["full"][1])
    assert str(frame["partial"].dtype) == "string"
    assert frame["partial"].tolist() == ["2021", "2021-03-04"]


def test_not_stated_is_missing_and_none_apply_is_an_empty_list() -> None:
    variables = [
        _variable("n", "integer"),
        _variable("ok", "boolean"),
        _variable("tags", "multi_category"),
    ]
    frame = wide_frame(_rows(n=[None, 3], ok=[False, None], tags=[[], None]), variables)
    assert pd.isna(frame["n"][0]) and frame["n"][1] == 3 and str(frame["n"].dtype) == "Int64"
    assert frame["ok"].tolist()[0] is False and pd.isna(frame["ok"][1])
    assert str(frame["ok"].dtype) == "boolean"
    assert frame["tags"].tolist() == [[], None]


def test_an_export_without_documents_is_an_empty_frame_with_its_columns() -> None:
    frame = wide_frame([], [_variable("n", "integer"), _variable("when", "date")])
    assert list(frame.columns) == ["document_id", "filename", "n", "when"]
    assert len(frame) == 0 and str(frame["n"].dtype) == "Int64"
