"""Text extraction from PDF, DOCX and plain text, with pages and offsets users can rely on."""

# PyMuPDF ships py.typed but leaves most of its API unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import pymupdf
import pytest
from docx.enum.section import WD_SECTION
from docx.oxml import parse_xml
from docx.oxml.ns import nsdecls, qn

from quarry.documents.parsing import (
    PAGE_SEPARATOR,
    DocumentKind,
    DocumentParseError,
    ParsedDocument,
    build_document,
    page_for_offset,
    parse_document,
)
from tests.support.documents import (
    make_docx,
    make_encrypted_pdf,
    make_image_only_pdf,
    make_pdf,
)


def parse_bytes(tmp_path: Path, data: bytes, kind: DocumentKind) -> ParsedDocument:
    path = tmp_path / "stored.bin"
    path.write_bytes(data)
    document = parse_document(path, kind)
    assert_offsets_consistent(document)
    return document


def parse_error(tmp_path: Path, data: bytes, kind: DocumentKind) -> str:
    with pytest.raises(DocumentParseError) as caught:
        parse_bytes(tmp_path, data, kind)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


def page_texts(document: ParsedDocument) -> list[str]:
    return [page.text for page in document.pages]


def assert_offsets_consistent(document: ParsedDocument) -> None:
    assert document.text == PAGE_SEPARATOR.join(page_texts(document))
    for number, page in enumerate(document.pages, start=1):
        assert page.number == number
        assert document.text[page.char_start : page.char_end] == page.text


# --- pages, offsets and cleaning -------------------------------------------------------------


def test_pages_are_laid_out_with_offsets_and_empty_pages_keep_their_number() -> None:
    document = build_document(["First page", "", "Third page"])
    assert_offsets_consistent(document)
    assert document.text == "First page\n\n\n\nThird page"
    assert [(p.number, p.char_start, p.char_end) for p in document.pages] == [
        (1, 0, 10),
        (2, 12, 12),
        (3, 14, 24),
    ]


def test_page_for_offset_maps_evidence_back_to_its_page() -> None:
    document = build_document(["Alpha", "Beta", "Gamma"])
    assert page_for_offset(document.pages, 0) == 1
    assert page_for_offset(document.pages, document.text.index("Beta")) == 2
    assert page_for_offset(document.pages, document.text.index("Gamma") + 4) == 3
    assert page_for_offset(document.pages, len(document.text)) == 3  # exclusive span end
    assert page_for_offset(document.pages, document.text.index("Beta") - 1) == 1  # separator
    with pytest.raises(ValueError, match="outside"):
        page_for_offset(document.pages, len(document.text) + 1)


def test_cleaning_keeps_text_storable_and_tidy() -> None:
    raw = (
        "\n\n  \nTitle\x00 line   \r\n  second\tline\rthird\x07\x1b line"
        "\n\n\n\n\n\nlast\x0bline  \n\n"
    )
    [page] = build_document([raw]).pages
    # NUL and bell/escape go; CR/CRLF become \n; tabs and leading spaces stay; at most two
    # blank lines in a row; no blank lines at the edges; vertical tab is a line break.
    assert page.text == "Title line\n  second\tline\nthird line\n\n\nlast\nline"


def test_cleaning_keeps_unicode_line_separators_as_characters() -> None:
    # str.splitlines() would split here and shift every offset after it.
    [page] = build_document(["a\u2028b\x85c  \n"]).pages
    assert page.text == "a\u2028b\x85c"


# --- PDF -------------------------------------------------------------------------------------


def test_pdf_pages_come_back_in_order_with_their_text(tmp_path: Path) -> None:
    pdf = make_pdf(["Alpha page one", "Beta page two\nsecond line", "Gamma page three"])
    document = parse_bytes(tmp_path, pdf, DocumentKind.PDF)
    assert page_texts(document) == [
        "Alpha page one",
        "Beta page two\nsecond line",
        "Gamma page three",
    ]
    assert page_for_offset(document.pages, document.text.index("second line")) == 2


def test_pdf_phrase_wrapped_across_lines_contains_a_newline(tmp_path: Path) -> None:
    # Text is kept as laid out: where the PDF wraps a line, the extracted text has "\n"
    # instead of the space. Evidence matching therefore has to treat whitespace loosely.
    sentence = " ".join(f"word{i:02d}" for i in range(40))
    document = parse_bytes(tmp_path, make_pdf([sentence]), DocumentKind.PDF)
    text = document.pages[0].text
    assert "\n" in text
    assert " ".join(text.split()) == sentence
    first_line, second_line = text.split("\n")[:2]
    last_word, next_word = first_line.split()[-1], second_line.split()[0]
    assert f"{last_word}\n{next_word}" in text
    assert f"{last_word} {next_word}" not in text


def test_pdf_two_columns_read_column_by_column(tmp_path: Path) -> None:
    # Two-column papers: each column's sentences must stay whole, not interleaved by line.
    pdf = pymupdf.open()
    page = pdf.new_page()
    left = ["The left column starts", "and the left column ends."]
    right = ["The right column starts", "and the right column ends."]
    for x, lines in ((72, left), (320, right)):
        for y, line in enumerate(lines):
            page.insert_text((x, 100 + 15 * y), line)
    document = parse_bytes(tmp_path, pdf.tobytes(), DocumentKind.PDF)
    assert document.text.split("\n") == [*left, *right]


def test_pdf_ligatures_are_expanded_to_plain_letters(tmp_path: Path) -> None:
    pdf = pymupdf.open()
    page = pdf.new_page()
    writer = pymupdf.TextWriter(page.rect)
    writer.append((72, 100), "the \ufb01rst \ufb02oor", font=pymupdf.Font("cjk"))
    writer.write_text(page)
    pdf.subset_fonts()
    document = parse_bytes(tmp_path, pdf.tobytes(), DocumentKind.PDF)
    assert document.text == "the first floor"


def test_password_protected_pdf_is_refused_with_a_reason(tmp_path: Path) -> None:
    reason = parse_error(tmp_path, make_encrypted_pdf("Confidential"), DocumentKind.PDF)
    assert "password-protected" in reason


def test_image_only_pdf_without_ocr_says_there_is_no_text_layer(tmp_path: Path) -> None:
    reason = parse_error(tmp_path, make_image_only_pdf(), DocumentKind.PDF)
    assert reason == (
        "The PDF has no text layer (it may be a scanned image) and OCR is turned off on this "
        "server (QUARRY_OCR_ENABLED)."
    )


@pytest.mark.parametrize("kept", [0.05, 0.3])
def test_truncated_pdf_is_reported_as_damaged(tmp_path: Path, kept: float) -> None:
    # A stub is unopenable; a larger fragment is "repaired" by MuPDF into empty pages.
    # Either way the user hears the file is damaged, not that it lacks a text layer.
    pdf = make_pdf(["One", "Two", "Three"])
    reason = parse_error(tmp_path, pdf[: int(len(pdf) * kept)], DocumentKind.PDF)
    assert "damaged" in reason


def test_pdf_cut_off_near_the_end_still_yields_its_readable_pages(tmp_path: Path) -> None:
    pdf = make_pdf(["One", "Two", "Three"])
    document = parse_bytes(tmp_path, pdf[: int(len(pdf) * 0.95)], DocumentKind.PDF)
    assert page_texts(document) == ["One", "Two", "Three"]


def test_garbage_stored_as_pdf_is_refused_with_a_reason(tmp_path: Path) -> None:
    reason = parse_error(tmp_path, b"%PDF-1.7\n this is not really a PDF", DocumentKind.PDF)
    assert reason == (
        "The file could not be opened as a PDF; it may be damaged, incomplete or not a PDF at all."
    )


# --- DOCX ------------------------------------------------------------------------------------


def docx_with_body_xml(*fragments: str) -> bytes:
    """A .docx whose body holds raw WordprocessingML `fragments` (w: prefix declared)."""
    document = docx.Document()
    section_properties = document.element.body.find(qn("w:sectPr"))
    for fragment in fragments:
        section_properties.addprevious(parse_xml(f"<w:root {nsdecls('w')}>{fragment}</w:root>")[0])
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def save(document: object) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)  # type: ignore[attr-defined]
    return buffer.getvalue()


def test_docx_keeps_paragraphs_and_tables_in_reading_order(tmp_path: Path) -> None:
    data = make_docx(
        ["Before the table", [["Name", "Dose"], ["Aspirin", "100 mg"]], "After the table"]
    )
    document = parse_bytes(tmp_path, data, DocumentKind.DOCX)
    assert page_texts(document) == [
        "Before the table\nName | Dose\nAspirin | 100 mg\nAfter the table"
    ]


def test_docx_merged_cells_are_not_repeated(tmp_path: Path) -> None:
    word = docx.Document()
    table = word.add_table(rows=3, cols=3)
    table.cell(0, 0).merge(table.cell(0, 1)).text = "Wide header"
    table.cell(0, 2).text = "Right"
    table.cell(1, 0).merge(table.cell(2, 0)).text = "Tall"
    for row, label in ((1, "b"), (2, "c")):
        table.cell(row, 1).text = f"{label}1"
        table.cell(row, 2).text = f"{label}2"
    document = parse_bytes(tmp_path, save(word), DocumentKind.DOCX)
    assert document.text == "Wide header | Right\nTall | b1 | b2\n | c1 | c2"


def test_docx_nested_table_stays_on_its_row(tmp_path: Path) -> None:
    word = docx.Document()
    outer = word.add_table(rows=1, cols=2)
    outer.cell(0, 0).text = "Arms"
    inner = outer.cell(0, 1).add_table(rows=2, cols=2)
    for r, row in enumerate([["A", "10"], ["B", "12"]]):
        for c, value in enumerate(row):
            inner.cell(r, c).text = value
    document = parse_bytes(tmp_path, save(word), DocumentKind.DOCX)
    assert document.text == "Arms | A | 10; B | 12"


def test_docx_hard_page_breaks_start_new_pages(tmp_path: Path) -> None:
    data = make_docx(["Page one", "Still one", "Page two", "Page three"], {1, 2})
    document = parse_bytes(tmp_path, data, DocumentKind.DOCX)
    assert page_texts(document) == ["Page one\nStill one", "Page two", "Page three"]
    assert page_for_offset(document.pages, document.text.index("three")) == 3


def test_docx_page_break_inside_a_paragraph_splits_it(tmp_path: Path) -> None:
    data = docx_with_body_xml(
        '<w:p><w:r><w:t>End of one</w:t><w:br w:type="page"/><w:t>start of two</w:t></w:r></w:p>'
    )
    document = parse_bytes(tmp_path, data, DocumentKind.DOCX)
    assert page_texts(document) == ["End of one", "start of two"]


def test_docx_page_break_before_and_section_breaks_start_new_pages(tmp_path: Path) -> None:
    word = docx.Document()
    word.add_paragraph("Title page")
    word.add_paragraph("Chapter 1").paragraph_format.page_break_before = True
    word.add_section(WD_SECTION.NEW_PAGE)
    word.add_paragraph("Appendix")
    word.add_section(WD_SECTION.CONTINUOUS)
    word.add_paragraph("Same page as the appendix")
    document = parse_bytes(tmp_path, save(word), DocumentKind.DOCX)
    # python-docx (like Word) ends each section with an empty paragraph: hence the blank line.
    assert page_texts(document) == [
        "Title page",
        "Chapter 1",
        "Appendix\n\nSame page as the appendix",
    ]


def test_docx_page_break_before_on_the_first_paragraph_adds_no_blank_page(
    tmp_path: Path,
) -> None:
    word = docx.Document()
    word.add_paragraph("Opening").paragraph_format.page_break_before = True
    document = parse_bytes(tmp_path, save(word), DocumentKind.DOCX)
    assert page_texts(document) == ["Opening"]


def test_docx_reads_links_insertions_and_content_controls_but_not_deletions(
    tmp_path: Path,
) -> None:
    data = docx_with_body_xml(
        "<w:p>"
        "<w:r><w:t xml:space='preserve'>See </w:t></w:r>"
        "<w:hyperlink><w:r><w:t>the protocol</w:t></w:r></w:hyperlink>"
        "<w:del><w:r><w:delText> (draft)</w:delText></w:r></w:del>"
        "<w:ins><w:r><w:t xml:space='preserve'> version 2</w:t></w:r></w:ins>"
        "<w:r><w:tab/><w:t>n=</w:t></w:r>"
        "<w:sdt><w:sdtContent><w:r><w:t>120</w:t></w:r></w:sdtContent></w:sdt>"
        "<w:r><w:br/><w:t>next line</w:t></w:r>"
        "</w:p>",
        "<w:sdt><w:sdtContent><w:p><w:r><w:t>Inside a block control</w:t></w:r></w:p>"
        "</w:sdtContent></w:sdt>",
    )
    document = parse_bytes(tmp_path, data, DocumentKind.DOCX)
    assert document.text == "See the protocol version 2\tn=120\nnext line\nInside a block control"


def test_empty_docx_says_it_contains_no_text(tmp_path: Path) -> None:
    reason = parse_error(tmp_path, make_docx(["", [["", ""]]]), DocumentKind.DOCX)
    assert reason == "The document contains no text."


def test_zip_without_a_word_document_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a word document")
    reason = parse_error(tmp_path, buffer.getvalue(), DocumentKind.DOCX)
    assert reason == "The file is a ZIP archive but not a complete Word document."


def test_truncated_docx_is_reported_as_damaged(tmp_path: Path) -> None:
    data = make_docx(["Some text"])
    reason = parse_error(tmp_path, data[: len(data) // 2], DocumentKind.DOCX)
    assert "damaged or incomplete" in reason


def test_docx_with_broken_xml_is_reported_as_damaged(tmp_path: Path) -> None:
    source = zipfile.ZipFile(io.BytesIO(make_docx(["Some text"])))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in source.namelist():
            broken = name == "word/document.xml"
            archive.writestr(name, b"<w:document" if broken else source.read(name))
    assert "damaged" in parse_error(tmp_path, buffer.getvalue(), DocumentKind.DOCX)


# --- plain text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "Dose: 5 µg\r\nDay 1".encode(),
        "\ufeffDose: 5 µg\nDay 1".encode(),
        "\ufeffDose: 5 µg\nDay 1".encode("utf-16-le"),
        "\ufeffDose: 5 µg\nDay 1".encode("utf-16-be"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le", "utf-16-be"],
)
def test_text_encodings_decode_to_the_same_text(tmp_path: Path, data: bytes) -> None:
    document = parse_bytes(tmp_path, data, DocumentKind.TEXT)
    assert document.text == "Dose: 5 µg\nDay 1"  # and no BOM character in front


def test_invalid_utf8_bytes_are_replaced_not_fatal(tmp_path: Path) -> None:
    document = parse_bytes(tmp_path, b"Caf\xe9 au lait, 2 cups", DocumentKind.TEXT)
    assert document.text == "Caf\ufffd au lait, 2 cups"


def test_nul_and_control_bytes_are_stripped(tmp_path: Path) -> None:
    document = parse_bytes(tmp_path, b"Pat\x00ient\x00 42\x01\n", DocumentKind.TEXT)
    assert document.text == "Patient 42"


def test_form_feeds_split_text_into_pages(tmp_path: Path) -> None:
    data = b"Page one\n\x0cPage two\n\x0c\n\x0cPage four\n\x0c"
    document = parse_bytes(tmp_path, data, DocumentKind.TEXT)
    # The empty third page keeps later page numbers right; the final form feed opens none.
    assert page_texts(document) == ["Page one", "Page two", "", "Page four"]
    assert page_for_offset(document.pages, document.text.index("four")) == 4


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n\x0c  \n", b"\xef\xbb\xbf"])
def test_blank_text_file_says_it_contains_no_text(tmp_path: Path, data: bytes) -> None:
    assert parse_error(tmp_path, data, DocumentKind.TEXT) == "The document contains no text."
