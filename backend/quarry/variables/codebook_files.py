"""Codebook files: YAML, JSON, CSV and XLSX read into a checked :class:`Codebook`, and written.

YAML and JSON hold the whole format (codebook_format.py). CSV and XLSX hold one row per
variable under a header of the variable fields (in any order, any case; `position` and
`prompt_version`, which the results workbook's Codebook sheet adds, are ignored); in a cell,
allowed values go one per line (or separated by `;` on one line) and examples one per line as
`value — snippet` (or a JSON list of `{"value", "snippet"}`). An XLSX file may add a sheet
`Settings` (columns `setting`, `value`) for the project settings; a CSV file has none.

YAML is read by a loader hardened for files from strangers: anchors and aliases are refused
(an alias-expanding "billion laughs" file is a few hundred bytes), so are tags for Python
objects (it is PyYAML's safe loader), and only YAML 1.2's `true`/`false` and plain decimal
numbers are typed — `yes`, `no`, `on`, `2019-03-01`, `010` and `1:30` stay the text written,
which is what an allowed value or an example means.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import pandas as pd
import yaml

from quarry.errors import BadRequest, PayloadTooLarge
from quarry.exports.cells import clean_xlsx_text
from quarry.variables.codebook_format import (
    FORMAT_VERSION,
    SETTINGS_KEYS,
    VARIABLE_KEYS,
    Codebook,
    CodebookProblem,
    InvalidCodebook,
    check_codebook,
)
from quarry.variables.values import show

MAX_CODEBOOK_BYTES = 2 * 1024 * 1024
#: What the XLSX file's parts may expand to: a 2 MB zip of a codebook is far below it.
_MAX_XLSX_UNZIPPED = 50 * 1024 * 1024
_IGNORED_COLUMNS = frozenset({"position", "prompt_version", "id"})
_EXAMPLE_SEPARATOR = " — "
_VARIABLES_SHEET = "Variables"
_SETTINGS_SHEET = "Settings"
_ZIP_MAGIC = b"PK\x03\x04"


class CodebookFormat(StrEnum):
    YAML = "yaml"
    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"


MEDIA_TYPES: dict[CodebookFormat, str] = {
    CodebookFormat.YAML: "application/yaml",
    CodebookFormat.JSON: "application/json",
    CodebookFormat.CSV: "text/csv; charset=utf-8",
    CodebookFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_FORMATS_BY_MEDIA_TYPE = {
    "application/yaml": CodebookFormat.YAML,
    "application/x-yaml": CodebookFormat.YAML,
    "text/yaml": CodebookFormat.YAML,
    "text/x-yaml": CodebookFormat.YAML,
    "application/json": CodebookFormat.JSON,
    "text/json": CodebookFormat.JSON,
    "text/csv": CodebookFormat.CSV,
    "application/csv": CodebookFormat.CSV,
    MEDIA_TYPES[CodebookFormat.XLSX]: CodebookFormat.XLSX,
}


def format_from_media_type(content_type: str | None) -> CodebookFormat | None:
    """The codebook format a Content-Type names, or None when it names none."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return _FORMATS_BY_MEDIA_TYPE.get(media)


def format_from_filename(filename: str) -> CodebookFormat | None:
    """The format a file's extension names (.yaml/.yml, .json, .csv, .xlsx), or None."""
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix == "yml":
        suffix = "yaml"
    return CodebookFormat(suffix) if suffix in CodebookFormat.__members__.values() else None


def _unreadable(message: str) -> InvalidCodebook:
    return InvalidCodebook([CodebookProblem(message)])


# ---------------------------------------------------------------------------------------------
# YAML


class _Refused(Exception):
    pass


class _CodebookLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints
    """PyYAML's safe loader without aliases, anchors, duplicate keys or YAML 1.1's guesses."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1
            raise _Refused(
                f"The YAML file uses an anchor or alias (&… or *…) on line {line}; codebook "
                "files may not, so that a small file cannot expand into a huge one. Write "
                "each value out."
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                raise _Refused(
                    f"A key on line {key_node.start_mark.line + 1} is a list or a mapping; "
                    "keys are plain names."
                )
            if isinstance(key, str) and key in seen:
                raise _Refused(
                    f"The key '{key}' appears twice in one mapping on line "
                    f"{key_node.start_mark.line + 1}; each key may appear once."
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


# Only YAML 1.2 core booleans and plain numbers are typed; every other plain scalar is text.
_CodebookLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CodebookLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CodebookLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_CodebookLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?$"),
    list("-+0123456789."),
)


def _decode_text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _unreadable(f"The {what} file is not UTF-8 text; save it as UTF-8.") from None


def _read_yaml(data: bytes) -> object:
    text = _decode_text(data, "YAML")
    try:
        return yaml.load(text, Loader=_CodebookLoader)  # noqa: S506 - a safe loader, hardened
    except _Refused as exc:
        raise _unreadable(str(exc)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" on line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or "it is not valid YAML"
        raise _unreadable(f"The file is not valid YAML{where}: {problem}.") from None
    except yaml.YAMLError:
        raise _unreadable("The file is not valid YAML.") from None
    except RecursionError:
        raise _unreadable("The YAML file is nested too deeply to be a codebook.") from None


# ---------------------------------------------------------------------------------------------
# JSON


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"The key '{key}' appears twice in one object; each may appear once.")
        result[key] = value
    return result


def _read_json(data: bytes) -> object:
    text = _decode_text(data, "JSON")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _Refused as exc:
        raise _unreadable(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise _unreadable(
            f"The file is not valid JSON: {exc.msg} on line {exc.lineno}, column {exc.colno}."
        ) from None
    except RecursionError:
        raise _unreadable("The JSON file is nested too deeply to be a codebook.") from None


# ---------------------------------------------------------------------------------------------
# CSV and XLSX: one row per variable


def _cell_text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = str(value).strip()
    # A quote that neutralised a formula on export (see _neutral) is not part of the text.
    if text.startswith("'") and len(text) > 1 and text[1] in "=+-@\t\r":
        text = text[1:]
    return text


def _split_allowed(text: str) -> list[str]:
    separator = "\n" if "\n" in text else ";"
    return [part.strip() for part in text.split(separator) if part.strip()]


def _split_examples(text: str) -> list[Any]:
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            pass
        else:
            return parsed if isinstance(parsed, list) else [parsed]
    examples: list[Any] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        value, _, snippet = line.partition(_EXAMPLE_SEPARATOR)
        example: dict[str, Any] = {"value": value.strip()}
        if snippet.strip():
            example["snippet"] = snippet.strip()
        examples.append(example)
    return examples


_TRUE_CELLS = frozenset({"true", "yes", "y", "1", "x"})
_FALSE_CELLS = frozenset({"false", "no", "n", "0", ""})


def _variable_from_row(row: Mapping[str, str]) -> dict[str, Any]:
    """A codebook variable from a row's cells; blank cells are absent fields."""
    variable: dict[str, Any] = {}
    for key, text in row.items():
        if key in ("allowed_values",):
            if text:
                variable[key] = _split_allowed(text)
        elif key == "examples":
            if text:
                variable[key] = _split_examples(text)
        elif key == "required":
            lowered = text.lower()
            variable[key] = (
                lowered in _TRUE_CELLS if lowered in _TRUE_CELLS | _FALSE_CELLS else text
            )
        elif text:
            variable[key] = text
    return variable


def _rows_to_codebook(frame: pd.DataFrame, what: str) -> tuple[dict[str, Any], list[int]]:
    """The codebook mapping of a sheet's rows, and the spreadsheet row number of each
    variable (the header is row 1; blank rows are skipped but keep the numbering)."""
    headers = [str(column).strip().lower() for column in frame.columns]
    problems = [
        CodebookProblem(
            f"The {what} has the column '{column}', which is not a codebook field; the "
            f"columns are {', '.join(VARIABLE_KEYS)}.",
            field=str(column),
        )
        for column in headers
        if column not in VARIABLE_KEYS and column not in _IGNORED_COLUMNS
        and not column.startswith("unnamed:")
    ]  # fmt: skip
    if "name" not in headers:
        problems.append(
            CodebookProblem(
                f"The {what} has no 'name' column; its first row must name the columns "
                f"({', '.join(VARIABLE_KEYS)})."
            )
        )
    if problems:
        raise InvalidCodebook(problems)
    keep = [i for i, column in enumerate(headers) if column in VARIABLE_KEYS]
    variables: list[dict[str, Any]] = []
    row_numbers: list[int] = []
    for number, values in enumerate(frame.itertuples(index=False, name=None), start=2):
        row = {headers[i]: _cell_text(values[i]) for i in keep}
        if any(row.values()):
            variables.append(_variable_from_row(row))
            row_numbers.append(number)
    return {"variables": variables}, row_numbers


def _read_csv(data: bytes) -> tuple[dict[str, Any], list[int]]:
    if data.startswith(_ZIP_MAGIC):
        raise _unreadable("The file is an Excel workbook (or another zip file), not a CSV.")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = data.decode("latin-1")
    first_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first_line.count)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            quoting=csv.QUOTE_MINIMAL,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise _unreadable(
            f"The file is not a CSV table a codebook can be read from: {exc}."
        ) from exc
    return _rows_to_codebook(frame, "CSV file")


def _check_xlsx_container(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile:
        raise _unreadable("The file is not an Excel workbook (.xlsx).") from None
    if len(members) > 1000 or sum(m.file_size for m in members) > _MAX_XLSX_UNZIPPED:
        raise _unreadable("The workbook expands to far more than a codebook; it was not read.")


def _read_xlsx(data: bytes) -> tuple[dict[str, Any], list[int]]:
    _check_xlsx_container(data)
    try:
        sheets = pd.read_excel(
            io.BytesIO(data), sheet_name=None, dtype=str, keep_default_na=False, engine="openpyxl"
        )
    except Exception as exc:  # openpyxl raises many kinds on a damaged workbook
        raise _unreadable(f"The workbook could not be read: {type(exc).__name__}.") from exc
    if not sheets:
        raise _unreadable("The workbook has no sheets.")
    names = {name.strip().lower(): name for name in sheets}
    variables_sheet = names.get(_VARIABLES_SHEET.lower()) or names.get("codebook")
    variables_sheet = variables_sheet or next(iter(sheets))
    codebook, rows = _rows_to_codebook(sheets[variables_sheet], f"sheet '{variables_sheet}'")
    settings_sheet = names.get(_SETTINGS_SHEET.lower())
    if settings_sheet is not None:
        codebook["settings"] = _settings_from_sheet(sheets[settings_sheet])
    return codebook, rows


def _settings_from_sheet(frame: pd.DataFrame) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for values in frame.itertuples(index=False, name=None):
        if len(values) < 2:
            continue
        key, text = _cell_text(values[0]), _cell_text(values[1])
        if not key:
            continue
        if key in ("group_size",) and re.fullmatch(r"-?\d+", text):
            settings[key] = int(text)
        elif key == "llm_temperature" and text:
            try:
                settings[key] = float(text)
            except ValueError:
                settings[key] = text
        else:
            settings[key] = text or None
    return settings


# ---------------------------------------------------------------------------------------------


def read_codebook(data: bytes, file_format: CodebookFormat) -> Codebook:
    """Read and check a whole codebook file; raises InvalidCodebook listing every problem
    (413 past :data:`MAX_CODEBOOK_BYTES`). The service the API and the CLI both use."""
    if len(data) > MAX_CODEBOOK_BYTES:
        raise PayloadTooLarge(
            f"The codebook file is larger than {MAX_CODEBOOK_BYTES // (1024 * 1024)} MB."
        )
    if not data.strip():
        raise _unreadable("The codebook file is empty.")
    match file_format:
        case CodebookFormat.YAML:
            return check_codebook(_read_yaml(data))
        case CodebookFormat.JSON:
            return check_codebook(_read_json(data))
        case CodebookFormat.CSV:
            table, rows = _read_csv(data)
        case CodebookFormat.XLSX:
            table, rows = _read_xlsx(data)
    return check_codebook(table, row_numbers=rows)


def codebook_document(codebook: Codebook) -> dict[str, Any]:
    """The codebook as the YAML/JSON format's mapping: every field a prompt depends on, and
    the empty ones left out for a readable file."""
    variables = []
    for variable in codebook.variables:
        entry: dict[str, Any] = {
            "name": variable.name,
            "label": variable.label or variable.name,
            "type": str(variable.type),
            "description": variable.description,
        }
        if variable.allowed_values:
            entry["allowed_values"] = list(variable.allowed_values)
        if variable.unit:
            entry["unit"] = variable.unit
        if variable.examples:
            entry["examples"] = [
                {"value": e.value, **({"snippet": e.snippet} if e.snippet else {})}
                for e in variable.examples
            ]
        if variable.instructions:
            entry["instructions"] = variable.instructions
        if variable.required:
            entry["required"] = True
        variables.append(entry)
    document: dict[str, Any] = {"quarry_codebook": FORMAT_VERSION}
    if codebook.name is not None:
        document["name"] = codebook.name
    if codebook.description:
        document["description"] = codebook.description
    document["settings"] = {key: codebook.settings.get(key) for key in SETTINGS_KEYS}
    document["variables"] = variables
    return document


def _neutral(text: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading quote (read back without it)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _example_cell(examples: list[dict[str, Any]]) -> str:
    lines = []
    for example in examples:
        value = example["value"]
        if isinstance(value, list):
            shown = "; ".join(str(item) for item in value)
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        else:
            shown = str(value)
        snippet = example.get("snippet") or ""
        awkward = (
            any(c in shown + snippet for c in "\n\r")
            or _EXAMPLE_SEPARATOR.strip() in shown
            or shown.startswith("[")
            or shown != shown.strip()
            or snippet != snippet.strip()
            or (isinstance(value, list) and any(";" in str(item) for item in value))
        )
        if awkward:
            # Not writable as lines: the cell holds JSON instead, which the reader accepts.
            return json.dumps(examples, ensure_ascii=False)
        lines.append(f"{shown}{_EXAMPLE_SEPARATOR}{snippet}" if snippet else shown)
    return "\n".join(lines)


def _rows(document: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for entry in document["variables"]:
        rows.append(
            [
                _neutral(entry["name"]),
                _neutral(entry["label"]),
                entry["type"],
                _neutral(entry["description"]),
                _neutral("\n".join(entry.get("allowed_values", []))),
                _neutral(entry.get("unit") or ""),
                _neutral(_example_cell(entry.get("examples", []))),
                _neutral(entry.get("instructions", "")),
                "true" if entry.get("required") else "false",
            ]
        )
    return rows


def write_codebook(codebook: Codebook, file_format: CodebookFormat) -> bytes:
    """The codebook as a file of ``file_format`` that :func:`read_codebook` reads back equal."""
    document = codebook_document(codebook)
    match file_format:
        case CodebookFormat.YAML:
            text: str = yaml.safe_dump(
                document, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
            )
            return text.encode()
        case CodebookFormat.JSON:
            return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
        case CodebookFormat.CSV:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\r\n")
            writer.writerow(VARIABLE_KEYS)
            writer.writerows(_rows(document))
            return ("\ufeff" + buffer.getvalue()).encode()  # the BOM makes Excel read UTF-8
        case CodebookFormat.XLSX:
            return _xlsx(document)


def _xlsx(document: Mapping[str, Any]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None  # a new workbook has one sheet
    sheet.title = _VARIABLES_SHEET
    sheet.append(list(VARIABLE_KEYS))
    for row in _rows(document):
        # XML has no place for most control characters (openpyxl refuses them): spaces, as
        # in the results workbook; YAML, JSON and CSV keep the text exactly.
        sheet.append([clean_xlsx_text(c) if isinstance(c, str) else c for c in row])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            cell.data_type = "s"  # text, never a formula, whatever it starts with
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    widths = (20, 24, 14, 50, 24, 10, 40, 40, 10)
    for column, width in zip("ABCDEFGHI", widths, strict=True):
        sheet.column_dimensions[column].width = width
    sheet.freeze_panes = "A2"
    settings = workbook.create_sheet(_SETTINGS_SHEET)
    settings.append(["setting", "value"])
    for key in SETTINGS_KEYS:
        value = document["settings"].get(key)
        if isinstance(value, str):
            value = clean_xlsx_text(value)
        settings.append([key, "" if value is None else value])
    for cell in settings[1]:
        cell.font = Font(bold=True)
    buffer = io.BytesIO()
    workbook.save(buffer)
    content: bytes = buffer.getvalue()
    return content


def require_format(value: str | None) -> CodebookFormat:
    """A format given by name; BadRequest with the choices otherwise."""
    try:
        return CodebookFormat((value or "").strip().lower())
    except ValueError:
        raise BadRequest(
            f"Unknown codebook format {show(value)}; use one of: {', '.join(CodebookFormat)}."
        ) from None


def sniff_format(data: bytes) -> CodebookFormat:
    """The format of a file sent without a usable Content-Type (curl's --data-binary sends
    application/x-www-form-urlencoded): a zip is XLSX, `{`/`[` JSON, a first line of
    separated names with no `:` CSV, anything else YAML."""
    if data.startswith(_ZIP_MAGIC):
        return CodebookFormat.XLSX
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        return CodebookFormat.JSON
    first_line = text.split(b"\n", 1)[0]
    if (
        not first_line.startswith(b"#")
        and b":" not in first_line
        and any(separator in first_line for separator in (b",", b";", b"\t"))
    ):
        return CodebookFormat.CSV
    return CodebookFormat.YAML
