from __future__ import annotations

from enum import StrEnum


class ExportFormat(StrEnum):
    CSV = "csv"
    XLSX = "xlsx"
    JSON = "json"


class ExportLayout(StrEnum):
    WIDE = "wide"
    LONG = "long"
    CASES = "cases"
