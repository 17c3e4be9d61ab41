"""Route a stored file to the parser for its kind."""

from __future__ import annotations

from pathlib import Path

from quarry.documents.parsing.model import (
    DocumentKind,
    DocumentParseError,
    ParsedDocument,
    build_document,
)
from quarry.documents.parsing.ocr import OcrOptions
from quarry.documents.parsing.text import parse_text

NOTHING_READ_REASON = "No text could be read from the image: OCR found no words on it."


def parse_document(
    path: Path, kind: DocumentKind, ocr: OcrOptions | None = None, work_dir: Path | None = None
) -> ParsedDocument:
    """Extract the cleaned, paginated text of the file at `path`, in this process.

    Synchronous and CPU-bound, and it runs C libraries over untrusted bytes: the service
    calls it only in a child process (`quarry.documents.parsing.isolation`). Raises
    `DocumentParseError` with a user-facing reason when the text cannot be read. `ocr`
    says how pages without text are read (None: not at all); `work_dir` holds OCR's
    scratch files (default: the working directory).
    """
    # Imported here so that a child parsing a text file does not load PyMuPDF and lxml.
    if kind is DocumentKind.PDF:
        from quarry.documents.parsing.pdf import parse_pdf

        return parse_pdf(path, ocr, work_dir)
    if kind is DocumentKind.DOCX:
        from quarry.documents.parsing.docx import parse_docx

        return parse_docx(path)
    if kind is DocumentKind.IMAGE:
        from quarry.documents.parsing.images import parse_image

        texts, layouts = parse_image(path, ocr or OcrOptions(enabled=False), work_dir or Path.cwd())
        document = build_document(texts, layouts)
        if not document.text.strip():
            notes = [layout.note for layout in layouts if layout.note]
            raise DocumentParseError(notes[0] if notes else NOTHING_READ_REASON)
        return document
    return parse_text(path)
