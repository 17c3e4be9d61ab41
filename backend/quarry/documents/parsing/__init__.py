"""Turn uploaded files into cleaned, paginated text: pure functions, no I/O beyond the file.

`sniff_kind` decides what a file is from its bytes, `parse_document` extracts its pages,
and `page_for_offset` maps a character offset in the text back to a page number.
"""

from quarry.documents.parsing.images import ImageTooLarge
from quarry.documents.parsing.layout import Box, PageLayout, TextSource
from quarry.documents.parsing.model import (
    PAGE_SEPARATOR,
    DocumentKind,
    DocumentParseError,
    ParsedDocument,
    ParsedPage,
    UnsupportedFileType,
    build_document,
    content_type_for,
    page_for_offset,
    reading_notes,
)
from quarry.documents.parsing.ocr import OcrOptions
from quarry.documents.parsing.parse import parse_document
from quarry.documents.parsing.sniff import sniff_document, sniff_kind

__all__ = [
    "PAGE_SEPARATOR",
    "Box",
    "DocumentKind",
    "DocumentParseError",
    "ImageTooLarge",
    "OcrOptions",
    "PageLayout",
    "ParsedDocument",
    "ParsedPage",
    "TextSource",
    "UnsupportedFileType",
    "build_document",
    "content_type_for",
    "page_for_offset",
    "parse_document",
    "reading_notes",
    "sniff_document",
    "sniff_kind",
]
