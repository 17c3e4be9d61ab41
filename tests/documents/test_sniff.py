"""What kind of document an upload is, judged by its content rather than its name."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from quarry.documents.parsing import (
    DocumentKind,
    UnsupportedFileType,
    content_type_for,
    sniff_kind,
)
from tests.support.documents import make_docx, make_pdf

PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02"
OLE2_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def sniff_bytes(tmp_path: Path, filename: str, data: bytes) -> DocumentKind:
    # Stored under a neutral name, as uploads are: only the bytes may decide.
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return sniff_kind(path, filename)


def unsupported_reason(tmp_path: Path, filename: str, data: bytes) -> str:
    with pytest.raises(UnsupportedFileType) as caught:
        sniff_bytes(tmp_path, filename, data)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_pdf_is_recognised_whatever_its_name(tmp_path: Path) -> None:
    assert sniff_bytes(tmp_path, "report.pdf", make_pdf(["Hello"])) is DocumentKind.PDF
    assert sniff_bytes(tmp_path, "notes.txt", make_pdf(["Hello"])) is DocumentKind.PDF


def test_pdf_with_junk_before_its_header_is_still_a_pdf(tmp_path: Path) -> None:
    # Mail gateways and broken exporters prepend bytes; PDF readers tolerate 1 KiB of them.
    data = b"X-Mailer: something\r\n" * 40 + make_pdf(["Hello"])
    assert sniff_bytes(tmp_path, "scan.pdf", data) is DocumentKind.PDF


def test_a_broken_png_named_pdf_is_rejected_as_a_damaged_image(tmp_path: Path) -> None:
    reason = unsupported_reason(tmp_path, "report.pdf", PNG_HEADER + b"\x00" * 100)
    assert reason == (
        "report.pdf looks like an image but it is damaged or incomplete; save or export it "
        "again and upload it again."
    )


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
        b"II*\x00\x08\x00\x00\x00",
        b"RIFF\x24\x00\x00\x00WEBPVP8 ",
        PNG_HEADER + b"\x00\x00\x00\x0dIHDR",
    ],
)
def test_an_image_cut_off_inside_its_header_is_damaged(tmp_path: Path, data: bytes) -> None:
    assert "damaged or incomplete" in unsupported_reason(tmp_path, "scan.png", data)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"GIF89a\x01\x00\x01\x00", "GIF image"),
        (b"\x7fELF\x02\x01\x01\x00", "program"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "gzip"),
        (b"{\\rtf1\\ansi Hello}", "RTF document"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC image"),
    ],
)
def test_well_known_binary_formats_are_named(tmp_path: Path, data: bytes, named: str) -> None:
    assert named in unsupported_reason(tmp_path, "upload.txt", data)


def test_legacy_word_doc_is_rejected_with_a_hint_to_save_as_docx(tmp_path: Path) -> None:
    reason = unsupported_reason(tmp_path, "protocol.doc", OLE2_HEADER)
    assert "protocol.doc is a legacy Word .doc file" in reason
    assert "save it as .docx" in reason


@pytest.mark.parametrize("filename", ["locked.docx", "locked.bin"])
def test_password_protected_docx_is_accepted_as_a_word_document(
    tmp_path: Path, filename: str
) -> None:
    # Office stores an encrypted .docx as an OLE2 file with an "EncryptedPackage" stream. It
    # is accepted, as a password-protected PDF is, so that parsing ends it `failed` saying
    # why (tests/documents/test_hostile_files.py) instead of calling it a legacy .doc.
    data = OLE2_HEADER + "EncryptedPackage".encode("utf-16-le") + b"\x00" * 64
    assert sniff_bytes(tmp_path, filename, data) is DocumentKind.DOCX


def test_password_protected_excel_file_is_named(tmp_path: Path) -> None:
    reason = unsupported_reason(tmp_path, "budget.xlsx", OLE2_HEADER)
    assert reason.startswith("budget.xlsx is a password-protected Excel workbook;")


def test_legacy_excel_file_is_named_by_its_extension(tmp_path: Path) -> None:
    assert "legacy Excel .xls" in unsupported_reason(tmp_path, "data.xls", OLE2_HEADER)


def test_random_binary_data_is_rejected(tmp_path: Path) -> None:
    junk = bytes((i * 73 + 41) % 256 for i in range(4096))
    reason = unsupported_reason(tmp_path, "mystery.txt", junk)
    assert reason == (
        "mystery.txt is a binary file, not text; Quarry reads PDF, DOCX, TXT and Markdown "
        "files and JPEG, PNG, TIFF and WebP images."
    )


def test_text_with_nul_bytes_is_treated_as_binary(tmp_path: Path) -> None:
    assert "binary" in unsupported_reason(tmp_path, "dump.txt", b"abc\x00def" * 20)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    assert unsupported_reason(tmp_path, "blank.txt", b"") == "blank.txt is empty."


def test_docx_is_recognised_even_when_misnamed(tmp_path: Path) -> None:
    assert sniff_bytes(tmp_path, "letter.docx", make_docx(["Hi"])) is DocumentKind.DOCX
    assert sniff_bytes(tmp_path, "letter.zip", make_docx(["Hi"])) is DocumentKind.DOCX


def test_excel_workbook_is_named(tmp_path: Path) -> None:
    xlsx = zip_bytes({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})
    assert "an Excel workbook (.xlsx)" in unsupported_reason(tmp_path, "data.docx", xlsx)


def test_opendocument_text_is_named_with_a_hint(tmp_path: Path) -> None:
    odt = zip_bytes(
        {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"}
    )
    reason = unsupported_reason(tmp_path, "essay.odt", odt)
    assert "OpenDocument text file (.odt)" in reason
    assert "save it as .docx" in reason


def test_zip_without_a_word_document_is_rejected(tmp_path: Path) -> None:
    data = zip_bytes({"notes/readme.txt": b"hello"})
    assert unsupported_reason(tmp_path, "archive.docx", data) == (
        "archive.docx is a ZIP archive; Quarry reads PDF, DOCX, TXT and Markdown files and "
        "JPEG, PNG, TIFF and WebP images."
    )


def test_truncated_docx_is_reported_as_damaged(tmp_path: Path) -> None:
    data = make_docx(["Some paragraph"])
    reason = unsupported_reason(tmp_path, "cut.docx", data[: len(data) // 2])
    assert "damaged or incomplete" in reason


@pytest.mark.parametrize(
    "data",
    [
        b"Plain ASCII notes\nwith two lines\n",
        "Café, naïve, 東京, emoji 🙂\r\n".encode(),
        "\ufeffUTF-8 with a BOM".encode(),
        "\ufeffUTF-16 little endian, ünïcödé".encode("utf-16-le"),
        "\ufeffUTF-16 big endian".encode("utf-16-be"),
        b"Page one\fPage two\tTabbed",
        # A legacy-encoded accent or two is text with a few bad bytes, not a binary file.
        "Caf\xe9 au lait, cr\xe8me br\xfbl\xe9e and a long enough sentence".encode("cp1252"),
    ],
)
def test_text_files_are_text(tmp_path: Path, data: bytes) -> None:
    assert sniff_bytes(tmp_path, "notes.txt", data) is DocumentKind.TEXT


def test_multibyte_character_cut_at_the_sample_boundary_is_still_text(tmp_path: Path) -> None:
    data = ("é" * 40_000).encode()  # 80 KB: the 64 KiB sample ends mid-character
    assert sniff_bytes(tmp_path, "accents.txt", data) is DocumentKind.TEXT


def test_markdown_is_text_served_as_markdown(tmp_path: Path) -> None:
    kind = sniff_bytes(tmp_path, "README.md", b"# Title\n\n- item one\n- item two\n")
    assert kind is DocumentKind.TEXT
    assert content_type_for(kind, "README.md") == "text/markdown"
    assert content_type_for(kind, "notes.MARKDOWN") == "text/markdown"


@pytest.mark.parametrize(
    ("kind", "filename", "expected"),
    [
        (DocumentKind.PDF, "a.pdf", "application/pdf"),
        (DocumentKind.PDF, "a.md", "application/pdf"),
        (DocumentKind.DOCX, "a.docx", DOCX_MIME),
        (DocumentKind.TEXT, "a.txt", "text/plain"),
        (DocumentKind.TEXT, "no_extension", "text/plain"),
    ],
)
def test_content_types(kind: DocumentKind, filename: str, expected: str) -> None:
    assert content_type_for(kind, filename) == expected


def test_text_wholly_in_a_legacy_encoding_asks_for_utf8(tmp_path: Path) -> None:
    data = "Протокол исследования: рандомизированное контролируемое".encode("cp1251")
    reason = unsupported_reason(tmp_path, "protocol.txt", data)
    assert reason == (
        "protocol.txt is text in an encoding Quarry cannot read; "
        "save it as UTF-8 (or UTF-16) text and upload it again."
    )


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html>\n<html><body>Sign in to download</body></html>",
        b"\n\n   <html lang='en'><head><title>Paywall</title></head></html>",
        "\ufeff<!-- saved page --><!doctype HTML><p>x</p>".encode(),
        b'<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"></html>',
    ],
    ids=["doctype", "bare-html", "bom-and-comment", "xhtml"],
)
def test_a_web_page_named_pdf_is_rejected_saying_what_it_is(tmp_path: Path, data: bytes) -> None:
    reason = unsupported_reason(tmp_path, "paper.pdf", data)
    assert reason.startswith("paper.pdf is a web page (HTML);")
    assert "download the document itself" in reason


def test_markdown_mentioning_html_is_still_text(tmp_path: Path) -> None:
    data = b"# Notes\n\nThe page starts with <html> and a <!DOCTYPE html> line.\n"
    assert sniff_bytes(tmp_path, "notes.md", data) is DocumentKind.TEXT
