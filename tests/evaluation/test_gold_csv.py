"""Reading gold CSVs the way spreadsheets write them, and refusing what cannot be read."""

from __future__ import annotations

import pytest

from quarry.evaluation.gold_csv import GoldFileError, read_gold_csv


def test_a_plain_csv_is_read_by_filename_column() -> None:
    table = read_gold_csv(b'Filename,title,sample_size\r\na.pdf,Alpha,12\r\nb.pdf,"Beta, two",\r\n')
    assert table.key_column == "Filename" and table.columns == ["title", "sample_size"]
    assert [(r.filename, r.cells) for r in table.rows] == [
        ("a.pdf", {"title": "Alpha", "sample_size": "12"}),
        ("b.pdf", {"title": "Beta, two", "sample_size": ""}),
    ]
    assert table.warnings == []


def test_excel_habits_are_understood() -> None:
    # A BOM, semicolons (Excel in many locales), a "Document" key, blank lines, a short row.
    data = '\ufeffDocument;title;drugs\n\nå.pdf;Älpha;"a; b"\nb.pdf\n'.encode()
    table = read_gold_csv(data)
    assert table.key_column == "Document" and table.encoding == "utf-8-sig"
    assert table.rows[0].cells == {"title": "Älpha", "drugs": "a; b"}
    assert table.rows[1].cells == {"title": "", "drugs": ""}  # missing cells are blank
    tabbed = read_gold_csv(b"filename\ttitle\na.pdf\tAlpha\n")
    assert tabbed.rows[0].cells == {"title": "Alpha"}


def test_windows_1252_is_read_and_said() -> None:
    table = read_gold_csv("filename,title\ncafé.pdf,Naïve “trial”\n".encode("cp1252"))
    assert table.rows[0].filename == "café.pdf"
    assert table.rows[0].cells["title"] == "Naïve “trial”"
    assert table.warnings == ["The gold CSV is not UTF-8; it was read as Windows-1252."]
    latin = read_gold_csv(b"filename,title\na.pdf,\x81\xe9\n")  # 0x81 is not Windows-1252
    assert latin.encoding == "latin-1" and latin.rows[0].cells["title"] == "\x81é"


def test_filename_wins_over_document_and_export_columns_are_ignored() -> None:
    table = read_gold_csv(b"document_id,document,filename,title,title\n1,x,a.pdf,A,B\n")
    assert table.key_column == "filename" and table.columns == ["document", "title"]
    assert table.rows[0].cells == {"document": "x", "title": "A"}
    assert table.warnings == ["Column 'title' appears more than once; only the first is used."]


def test_rows_without_a_filename_are_skipped_with_a_warning() -> None:
    table = read_gold_csv(b"filename,title\n,Orphan\na.pdf,A\n")
    assert [r.filename for r in table.rows] == ["a.pdf"]
    assert table.warnings == ["Line 2 has no filename; it was skipped."]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf \r\n\r\n", "empty"),
        (b"name,title\na.pdf,A\n", "needs a 'filename'"),
        (b"filename,title\n", "no rows"),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook"),
        ("filename,title\n".encode("utf-16"), "not a text CSV"),
        (b'filename,title\na.pdf,"' + b"x" * 200_000 + b'"\n', "could not be read"),
    ],
)
def test_unusable_files_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(GoldFileError, match=message):
        read_gold_csv(data)
