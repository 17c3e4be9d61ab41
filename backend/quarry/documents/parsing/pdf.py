"""PDF text extraction with PyMuPDF."""

from __future__ import annotations

import threading
from pathlib import Path

import pymupdf

from quarry.documents.parsing.model import DocumentParseError, ParsedDocument, build_document

ENCRYPTED_REASON = (
    "The PDF is password-protected; remove the password (for example by printing it to a "
    "new PDF) and upload it again."
)
UNREADABLE_REASON = (
    "The file could not be opened as a PDF; it may be damaged, incomplete or not a PDF at all."
)
DAMAGED_REASON = (
    "The PDF is damaged or incomplete and no text could be recovered from it; "
    "try downloading or exporting it again."
)
NO_TEXT_LAYER_REASON = (
    "The PDF has no text layer (it may be a scanned image); OCR is not supported yet."
)
#: More pages than any real document Quarry is for; a page tree can claim millions cheaply.
MAX_PAGES = 20_000

# PyMuPDF documents that it must not be called from several threads at once (it can crash
# the interpreter), and callers run parsing in worker threads; one lock for the process.
_PYMUPDF_LOCK = threading.Lock()
# Expand ligature glyphs (ﬁ → fi) so that the model, users' searches and evidence quotes
# see ordinary letters.
_TEXT_FLAGS = pymupdf.TEXTFLAGS_TEXT & ~pymupdf.TEXT_PRESERVE_LIGATURES
# Errors MuPDF raises while opening or reading a malformed file.
_PYMUPDF_ERRORS = (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase)


def parse_pdf(path: Path) -> ParsedDocument:
    """One page of text per PDF page, read top to bottom.

    Lines are kept as laid out on the page: a sentence that wraps in the PDF contains a
    newline where it wraps, and text sharing a baseline (a table row) becomes one line with
    runs of spaces between its cells. Raises `DocumentParseError` for encrypted, damaged
    and image-only PDFs.
    """
    with _PYMUPDF_LOCK:
        page_texts, was_repaired = _extract_page_texts(path)
    document = build_document(page_texts)
    if not document.text.strip():
        # MuPDF silently rebuilds broken files; if that recovered nothing, say "damaged"
        # rather than blaming a missing text layer.
        raise DocumentParseError(DAMAGED_REASON if was_repaired else NO_TEXT_LAYER_REASON)
    return document


def _extract_page_texts(path: Path) -> tuple[list[str], bool]:
    if not path.is_file():
        # pymupdf raises its own FileNotFoundError (a RuntimeError); a missing stored file
        # is a server fault, not a property of the user's document.
        raise FileNotFoundError(path)
    try:
        pdf = pymupdf.open(path, filetype="pdf")  # type: ignore[no-untyped-call]
    except _PYMUPDF_ERRORS as exc:
        raise DocumentParseError(UNREADABLE_REASON) from exc
    with pdf:
        if pdf.needs_pass:
            raise DocumentParseError(ENCRYPTED_REASON)
        try:
            page_count = pdf.page_count
            if page_count > MAX_PAGES:
                raise DocumentParseError(
                    f"The PDF has {page_count:,} pages; Quarry reads PDFs of up to "
                    f"{MAX_PAGES:,} pages."
                )
            page_texts = [_page_text(page) for page in pdf.pages()]
        except _PYMUPDF_ERRORS as exc:
            raise DocumentParseError(DAMAGED_REASON) from exc
        return page_texts, bool(pdf.is_repaired)


def _page_text(page: pymupdf.Page) -> str:
    # Content-stream order, not sort=True: sorting joins text sharing a baseline, which keeps
    # table rows together but interleaves side-by-side columns line by line, scrambling the
    # sentences of two-column papers (most of what researchers upload). Quotes still ground
    # across the resulting line breaks because evidence matching normalises whitespace.
    text: str = page.get_text("text", flags=_TEXT_FLAGS)  # type: ignore[no-untyped-call]
    return text
