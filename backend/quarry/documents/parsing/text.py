"""Plain-text and Markdown documents: decode, then split pages on form feeds."""

from __future__ import annotations

import codecs
from pathlib import Path

from quarry.documents.parsing.model import DocumentParseError, ParsedDocument, build_document

NO_TEXT_REASON = "The document contains no text."

# Checked longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOM_ENCODINGS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def detect_text_encoding(data: bytes) -> tuple[str, int]:
    """The codec to decode `data` with and the length of its byte-order mark (0 if none).

    Without a BOM the text is taken to be UTF-8: it is what every current editor writes.
    """
    for bom, encoding in _BOM_ENCODINGS:
        if data.startswith(bom):
            return encoding, len(bom)
    return "utf-8", 0


def decode_text(data: bytes) -> str:
    """Decode a text file, replacing invalid byte sequences instead of failing.

    One stray byte from a legacy encoding should cost one character (shown as U+FFFD),
    not the whole document.
    """
    encoding, bom_length = detect_text_encoding(data)
    return data[bom_length:].decode(encoding, errors="replace")


def parse_text(path: Path) -> ParsedDocument:
    """Read a UTF-8 or UTF-16 (with BOM) text file; each form feed starts a new page."""
    page_texts = decode_text(path.read_bytes()).split("\f")
    # Printer-style text ends every page with a form feed; that last one opens no new page.
    if len(page_texts) > 1 and not page_texts[-1].strip():
        page_texts.pop()
    document = build_document(page_texts)
    if not document.text.strip():
        raise DocumentParseError(NO_TEXT_REASON)
    return document
