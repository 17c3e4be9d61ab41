"""Exports as pandas DataFrames with a column type per variable type.

Built from the JSON export (values keep their JSON types; nothing is formula-neutralised, as
CSV and Excel cells are), so a cell holds the value itself:

=================  ==============================  ============================================
variable type      column dtype                    "not stated"
=================  ==============================  ============================================
integer            ``Int64``                       ``<NA>``
number             ``Float64``                     ``<NA>``
boolean            ``boolean``                     ``<NA>``
date               ``datetime64[ns]`` when every   ``NaT`` (``<NA>`` as text)
                   value is a full date; a column
                   with partial dates (``2021``,
                   ``2021-03``) keeps them as
                   ``string``, since a timestamp
                   would invent the missing day
text, category     ``string``                      ``<NA>``
multi_category,    ``object``: Python lists        ``None`` (``[]``: none of the values apply)
list
=================  ==============================  ============================================

`document_id` and `filename` are ``string``. The long layout keeps `value` and
`extracted_value` as Python objects (their type differs per row) and types its other columns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from quarry.exports.table import LONG_COLUMNS
from quarry.variables.schemas import VariableOut
from quarry.variables.types import VariableType

_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SCALAR_DTYPES = {
    VariableType.INTEGER: "Int64",
    VariableType.NUMBER: "Float64",
    VariableType.BOOLEAN: "boolean",
    VariableType.TEXT: "string",
    VariableType.CATEGORY: "string",
}
_LONG_DTYPES = {
    "document_id": "string",
    "filename": "string",
    "variable": "string",
    "status": "string",
    "evidence": "string",
    "page": "Int64",
    "confidence": "Float64",
    "grounded": "boolean",
    "review_status": "string",
    "model": "string",
    "prompt_version": "Int64",
    "run_id": "string",
    "error": "string",
    "support": "string",
}


def typed_column(values: Sequence[Any], kind: VariableType, name: str) -> pd.Series:
    """One variable's values as a column of the dtype its type has (module docstring)."""
    dtype = _SCALAR_DTYPES.get(kind)
    if dtype is not None:
        return pd.Series(list(values), dtype=dtype, name=name)
    if kind is VariableType.DATE:
        present = [v for v in values if v is not None]
        if all(isinstance(v, str) and _FULL_DATE.match(v) for v in present):
            return pd.Series(pd.to_datetime(list(values), format="%Y-%m-%d"), name=name).astype(
                "datetime64[ns]"
            )
        return pd.Series(list(values), dtype="string", name=name)
    return pd.Series(list(values), dtype=object, name=name)


def wide_frame(rows: Sequence[dict[str, Any]], variables: Sequence[VariableOut]) -> pd.DataFrame:
    """The wide export (a row per document, a column per variable, in codebook order)."""
    columns: dict[str, pd.Series] = {
        "document_id": pd.Series([r["document_id"] for r in rows], dtype="string"),
        "filename": pd.Series([r["filename"] for r in rows], dtype="string"),
    }
    for variable in variables:
        values = [r.get(variable.name) for r in rows]
        columns[variable.name] = typed_column(values, variable.type, variable.name)
    return pd.DataFrame(columns)


def long_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The long export (a row per document × variable)."""
    columns: dict[str, pd.Series] = {}
    for column in LONG_COLUMNS:
        values = [r.get(column) for r in rows]
        dtype = _LONG_DTYPES.get(column, object)
        columns[column] = pd.Series(values, dtype=dtype, name=column)
    return pd.DataFrame(columns)
