"""What parsing produces: document kinds, pages of text with offsets, and user-facing errors."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath

from quarry.documents.parsing.cleaning import clean_page_text
from quarry.documents.parsing.layout import PageLayout, RawLayout

PAGE_SEPARATOR = "\n\n"

_MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})


class DocumentKind(StrEnum):
    """The document formats Quarry can read, decided from a file's content (see `sniff_kind`)."""

    PDF = "pdf"
    DOCX = "docx"
    TEXT = "text"
    #: JPEG, PNG, TIFF (one page per frame) or WebP, read by OCR.
    IMAGE = "image"


_CONTENT_TYPES = {
    DocumentKind.PDF: "application/pdf",
    DocumentKind.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    DocumentKind.TEXT: "text/plain",
    DocumentKind.IMAGE: "application/octet-stream",
}


def content_type_for(kind: DocumentKind, filename: str) -> str:
    """The MIME type to store and serve for a document of `kind` (an image's is its
    format's: `sniff_document`).

    The filename only refines plain text into Markdown; it never changes the kind.
    """
    if kind is DocumentKind.TEXT and PurePath(filename).suffix.lower() in _MARKDOWN_SUFFIXES:
        return "text/markdown"
    return _CONTENT_TYPES[kind]


# What a filename's suffix promises, for the formats Quarry reads (and .doc, which a user
# names a Word file whatever it holds).
_KIND_BY_SUFFIX = {
    ".pdf": DocumentKind.PDF,
    ".docx": DocumentKind.DOCX,
    ".docm": DocumentKind.DOCX,
    ".doc": DocumentKind.DOCX,
    ".txt": DocumentKind.TEXT,
    ".text": DocumentKind.TEXT,
    ".md": DocumentKind.TEXT,
    ".markdown": DocumentKind.TEXT,
    ".png": DocumentKind.IMAGE,
    ".jpg": DocumentKind.IMAGE,
    ".jpeg": DocumentKind.IMAGE,
    ".tif": DocumentKind.IMAGE,
    ".tiff": DocumentKind.IMAGE,
    ".webp": DocumentKind.IMAGE,
}
_KIND_NAMES = {
    DocumentKind.PDF: "a PDF",
    DocumentKind.DOCX: "a Word document",
    DocumentKind.TEXT: "plain text",
    DocumentKind.IMAGE: "an image",
}


def reading_notes(kind: DocumentKind, filename: str) -> list[str]:
    """Sentences telling the user how a document was read where it is not what they expect.

    Today one: the name promised another format than the content has (a text file named
    .docx). Such a file is accepted and read by its content, as every file is, but the user
    expected something else and must hear so. Derived from what is stored (the kind and the
    name), so every document has its notes without a column of its own.
    """
    promised = _KIND_BY_SUFFIX.get(PurePath(filename).suffix.lower())
    if promised is None or promised is kind:
        return []
    return [f"Read as {_KIND_NAMES[kind]}: the file is not {_KIND_NAMES[promised]}."]


class UnsupportedFileType(Exception):
    """The upload is not a format Quarry reads. `reason` is a sentence to show the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DocumentParseError(Exception):
    """A supported file whose text could not be extracted. `reason` is a sentence for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedPage:
    """One page of text; `char_start:char_end` is its span in `ParsedDocument.text`."""

    number: int
    text: str
    char_start: int
    char_end: int
    #: How the page was read and where its words are; None for formats without geometry
    #: (DOCX, text).
    layout: PageLayout | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """The cleaned text of a document, whole and per page.

    `text == PAGE_SEPARATOR.join(page.text for page in pages)`, so evidence located in `text`
    can be mapped back to a page with `page_for_offset`.
    """

    pages: list[ParsedPage]
    text: str


def build_document(
    page_texts: list[str], layouts: Sequence[RawLayout | None] | None = None
) -> ParsedDocument:
    """Clean each page's raw text and lay the pages out one after another with offsets.

    Empty pages are kept so that page numbers match the source document. `layouts` (one per
    page, when the parser knows where words are) get their words tied to the cleaned text.
    """
    pages: list[ParsedPage] = []
    cursor = 0
    for number, raw in enumerate(page_texts, start=1):
        text = clean_page_text(raw)
        raw_layout = layouts[number - 1] if layouts and number <= len(layouts) else None
        layout = PageLayout.place(raw_layout, text) if raw_layout is not None else None
        pages.append(ParsedPage(number, text, cursor, cursor + len(text), layout))
        cursor += len(text) + len(PAGE_SEPARATOR)
    return ParsedDocument(pages=pages, text=PAGE_SEPARATOR.join(page.text for page in pages))


def page_for_offset(pages: Sequence[ParsedPage], offset: int) -> int:
    """The number of the page holding character `offset` of the document text.

    An offset inside a page separator belongs to the page before it, and `len(text)` (an
    exclusive span end) to the last page.
    """
    if not pages:
        raise ValueError("a document without pages has no offsets")
    if offset < 0 or offset > pages[-1].char_end:
        raise ValueError(f"offset {offset} is outside the document text")
    index = bisect.bisect_right([page.char_start for page in pages], offset) - 1
    return pages[index].number
