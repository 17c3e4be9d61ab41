"""Route a stored file to the parser for its kind."""

from __future__ import annotations

from pathlib import Path

from quarry.documents.parsing.model import DocumentKind, ParsedDocument
from quarry.documents.parsing.text import parse_text


def parse_document(path: Path, kind: DocumentKind) -> ParsedDocument:
    """Extract the cleaned, paginated text of the file at `path`, in this process.

    Synchronous and CPU-bound, and it runs C libraries over untrusted bytes: the service
    calls it only in a child process (`quarry.documents.parsing.isolation`). Raises
    `DocumentParseError` with a user-facing reason when the text cannot be read.
    """
    # Imported here so that a child parsing a text file does not load PyMuPDF and lxml.
    if kind is DocumentKind.PDF:
        from quarry.documents.parsing.pdf import parse_pdf

        return parse_pdf(path)
    if kind is DocumentKind.DOCX:
        from quarry.documents.parsing.docx import parse_docx

        return parse_docx(path)
    return parse_text(path)
