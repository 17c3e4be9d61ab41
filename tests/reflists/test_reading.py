"""Reading uploaded reference lists: what spreadsheets write, and which rows are bad."""

from __future__ import annotations

import io

import openpyxl
import pytest

from quarry.reflists.reading import ListFileError, read_reference_list


def test_semicolons_and_windows_1252_are_read() -> None:
    data = "client_id;name\r\nC1;José Müller\r\n\r\nC2;Ann\r\n".encode("cp1252")
    table = read_reference_list(data, "clients.csv")
    assert table.columns == ["client_id", "name"]
    assert table.rows == [
        (2, {"client_id": "C1", "name": "José Müller"}),
        (4, {"client_id": "C2", "name": "Ann"}),
    ]
    assert table.encoding == "cp1252"


@pytest.mark.parametrize("bad_row", [b"", b"9,Zed,y,extra\n"])
def test_short_rows_are_padded_and_quoted_line_breaks_kept_in_one_row(bad_row: bytes) -> None:
    # Rows are numbered as a spreadsheet shows them: a quoted cell with a line break is one
    # row. The same whether the file has a bad row (read row by row) or not.
    data = b'id,name,note\n1,"Ann\nLee"\n2,Bob,x\n' + bad_row
    if bad_row:
        with pytest.raises(ListFileError, match="row 4 has 4 cells for 3 columns"):
            read_reference_list(data, "l.csv")
        return
    table = read_reference_list(data, "l.csv")
    assert table.rows == [
        (2, {"id": "1", "name": "Ann Lee", "note": ""}),
        (3, {"id": "2", "name": "Bob", "note": "x"}),
    ]


def test_every_bad_row_is_named_by_its_row_number() -> None:
    data = b"id,name\n1,Ann\n2,Bob,extra\n3,Cy\n4,Di,x,y\n"
    with pytest.raises(ListFileError) as caught:
        read_reference_list(data, "l.csv")
    message = str(caught.value)
    assert "2 bad row(s)" in message
    assert "row 3 has 3 cells for 2 columns" in message
    assert "row 5 has 4 cells for 2 columns" in message


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"id,id\n1,2\n", "twice"),
        (b"id,,name\n1,2,3\n", r"no name in column\(s\) 2"),
        (b"id,name\n", "no rows"),
        ("id\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_unusable_files_say_why(data: bytes, says: str) -> None:
    with pytest.raises(ListFileError, match=says):
        read_reference_list(data, "l.csv")


def test_xlsx_cells_become_text_identifiers_and_dates_as_written() -> None:
    import datetime as dt

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["client_id", "name", "date_of_birth", "policy"])
    sheet.append([1001, "Ann Lee", dt.datetime(1980, 5, 1), "007"])
    sheet.append([None, None, None, None])
    sheet.append([1002, "Bob", dt.date(1975, 11, 23), 12.5])
    buffer = io.BytesIO()
    book.save(buffer)
    table = read_reference_list(buffer.getvalue(), "clients.xlsx")
    assert table.columns == ["client_id", "name", "date_of_birth", "policy"]
    assert table.rows == [
        (
            2,
            {
                "client_id": "1001",
                "name": "Ann Lee",
                "date_of_birth": "1980-05-01",
                "policy": "007",
            },
        ),
        (4, {"client_id": "1002", "name": "Bob", "date_of_birth": "1975-11-23", "policy": "12.5"}),
    ]
