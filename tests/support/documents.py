"""Builders for real document files (as bytes) used by parsing and API tests."""

# PyMuPDF ships py.typed but leaves most of its API unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import io
from collections.abc import Set

import docx
import pymupdf

# Letter-size page with one-inch margins, 11 pt Helvetica: roughly 85 characters per line.
_PAGE_MARGINS = (72, 72, -72, -72)
_FONT_SIZE = 11


def make_pdf(pages: list[str]) -> bytes:
    """A PDF with one text page per string.

    Newlines in a string start new lines, and lines too long for the page wrap at word
    boundaries, as they would in a real PDF.
    """
    pdf = pymupdf.open()
    for text in pages:
        page = pdf.new_page()
        spare_height = page.insert_textbox(page.rect + _PAGE_MARGINS, text, fontsize=_FONT_SIZE)
        if spare_height < 0:
            raise ValueError(f"text does not fit on one PDF page: {text[:40]!r}…")
    return bytes(pdf.tobytes())


def make_docx(
    blocks: list[str | list[list[str]]], page_break_after: Set[int] = frozenset()
) -> bytes:
    """A .docx whose body is `blocks` in order: a string is a paragraph, a list of rows a table.

    A hard page break follows every block whose index is in `page_break_after`.
    """
    document = docx.Document()
    for index, block in enumerate(blocks):
        if isinstance(block, str):
            document.add_paragraph(block)
        else:
            columns = max((len(row) for row in block), default=0)
            table = document.add_table(rows=len(block), cols=columns)
            for row, values in zip(table.rows, block, strict=True):
                for cell, value in zip(row.cells, values, strict=False):
                    cell.text = value
        if index in page_break_after:
            document.add_page_break()
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_encrypted_pdf(text: str, password: str = "secret") -> bytes:  # noqa: S107 - test fixture
    """A one-page PDF that cannot be opened without `password` (AES-256)."""
    pdf = pymupdf.open(stream=make_pdf([text]), filetype="pdf")
    return bytes(
        pdf.tobytes(
            encryption=pymupdf.mupdf.PDF_ENCRYPT_AES_256,
            user_pw=password,
            owner_pw=f"{password}-owner",
        )
    )


def make_image_only_pdf() -> bytes:
    """A one-page PDF holding only a drawn shape and a raster image, like a scan: no text."""
    pdf = pymupdf.open()
    page = pdf.new_page()
    page.draw_rect(pymupdf.Rect(72, 72, 300, 200), color=(0, 0, 0), fill=(0.8, 0.8, 0.8))
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 16, 16), False)
    pixmap.clear_with(128)
    page.insert_image(pymupdf.Rect(72, 250, 272, 450), pixmap=pixmap)
    return bytes(pdf.tobytes())
