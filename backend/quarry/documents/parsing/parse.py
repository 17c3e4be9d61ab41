"""Route a stored file to the parser for its kind."""

from __future__ import annotations

from pathlib import Path

from quarry.documents.parsing.docx import parse_docx
from quarry.documents.parsing.model import DocumentKind, ParsedDocument
from quarry.documents.parsing.pdf import parse_pdf
from quarry.documents.parsing.text import parse_text


def parse_document(path: Path, kind: DocumentKind) -> ParsedDocument:
    """Extract the cleaned, paginated text of the file at `path`.

    Synchronous and CPU-bound: call it off the event loop (e.g. `asyncio.to_thread`).
    Raises `DocumentParseError` with a user-facing reason when the text cannot be read.
    """
    if kind is DocumentKind.PDF:
        return parse_pdf(path)
    if kind is DocumentKind.DOCX:
        return parse_docx(path)
    return parse_text(path)
