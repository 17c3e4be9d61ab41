"""PDF text extraction with PyMuPDF: the text layer, tables as rows, OCR of scanned pages.

A page keeps its text layer when it has one. A page without a usable one (under
`_MIN_TEXT_LAYER_CHARS` characters) that shows an image is a scan: it is rendered at
`OcrOptions.dpi` and read by OCR (`ocr.py`), so a mixed PDF OCRs only its scanned pages.
Tables found by PyMuPDF's table finder (ruled tables) become `cell | cell | cell` lines, as
DOCX tables do, in place of their cells' text.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pymupdf

from quarry.documents.parsing.layout import RawLayout, RawWord, TextSource
from quarry.documents.parsing.model import DocumentParseError, ParsedDocument, build_document
from quarry.documents.parsing.ocr import OcrOptions, recognise

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
    "The PDF has no text layer (it may be a scanned image) and OCR is turned off on this "
    "server (QUARRY_OCR_ENABLED)."
)
NOTHING_READ_REASON = (
    "No text could be read from the PDF: it has no text layer (it may be a scanned image), "
    "and OCR found no words on its pages."
)
#: A page with fewer characters of text than this, and an image, is a scan to OCR.
_MIN_TEXT_LAYER_CHARS = 16
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


def parse_pdf(
    path: Path, ocr: OcrOptions | None = None, work_dir: Path | None = None
) -> ParsedDocument:
    """One page of text per PDF page, read top to bottom, with its words' boxes.

    Lines are kept as laid out on the page: a sentence that wraps in the PDF contains a
    newline where it wraps; a ruled table becomes one `cell | cell` line per row. Pages
    without a text layer are OCRed when `ocr` is enabled. Raises `DocumentParseError` for
    encrypted, damaged and unreadable PDFs.
    """
    ocr = ocr or OcrOptions(enabled=False)
    with _PYMUPDF_LOCK:
        pages, was_repaired, scanned = _extract_pages(path, ocr, work_dir or Path.cwd())
    document = build_document([text for text, _ in pages], [layout for _, layout in pages])
    if not document.text.strip():
        # MuPDF silently rebuilds broken files; if that recovered nothing, say "damaged"
        # rather than blaming a missing text layer.
        if was_repaired:
            raise DocumentParseError(DAMAGED_REASON)
        if scanned and ocr.enabled:
            failures = [layout.note for _, layout in pages if layout is not None and layout.note]
            raise DocumentParseError(failures[0] if failures else NOTHING_READ_REASON)
        raise DocumentParseError(NO_TEXT_LAYER_REASON)
    return document


def _extract_pages(
    path: Path, ocr: OcrOptions, work_dir: Path
) -> tuple[list[tuple[str, RawLayout | None]], bool, bool]:
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
            pages: list[tuple[str, RawLayout | None]] = []
            scanned = False
            for page in pdf.pages():
                text, layout = _page_text(page)
                if len("".join(text.split())) < _MIN_TEXT_LAYER_CHARS and _shows_image(page):
                    scanned = True
                    if ocr.enabled:
                        text, layout = _ocr_page(page, ocr, work_dir)
                pages.append((text, layout))
        except _PYMUPDF_ERRORS as exc:
            raise DocumentParseError(DAMAGED_REASON) from exc
        return pages, bool(pdf.is_repaired), scanned


def _shows_image(page: pymupdf.Page) -> bool:
    # Image info, not the image list: it also sees inline images, which some scanners write.
    return bool(page.get_image_info())


def _page_text(page: pymupdf.Page) -> tuple[str, RawLayout]:
    # Content-stream order, not sort=True: sorting joins text sharing a baseline, which keeps
    # table rows together but interleaves side-by-side columns line by line, scrambling the
    # sentences of two-column papers (most of what researchers upload). Quotes still ground
    # across the resulting line breaks because evidence matching normalises whitespace.
    # One text page for the text and the words: building it is most of the cost.
    textpage = page.get_textpage(flags=_TEXT_FLAGS)
    text: str = page.get_text("text", textpage=textpage)  # type: ignore[no-untyped-call]
    # Tables only where there is text to arrange (and after it: a page built to exhaust
    # memory fails in the text extraction, with the memory reason).
    tables = _tables(page) if text.strip() else []
    if tables:
        text = _text_with_tables(page, tables)
    words = [
        RawWord(str(w[4]), float(w[0]), float(w[1]), float(w[2]), float(w[3]))
        for w in page.get_text("words", textpage=textpage)  # type: ignore[no-untyped-call]
    ]
    rect = page.rect
    return str(text), RawLayout(TextSource.TEXT_LAYER, rect.width, rect.height, words)


#: (bounding box, rows of cells) of each table on a page.
_Table = tuple[pymupdf.Rect, list[list[str]]]


def _tables(page: pymupdf.Page) -> list[_Table]:
    # Only ruled tables (the finder's "lines" strategy): guessing tables from text alignment
    # alone would turn ordinary two-column text into rows.
    if not page.get_drawings():
        return []
    try:
        found = page.find_tables()  # type: ignore[no-untyped-call]
    except (*_PYMUPDF_ERRORS, IndexError, ZeroDivisionError):
        return []
    tables: list[_Table] = []
    for table in found.tables:
        rows = [[" ".join((cell or "").split()) for cell in row] for row in table.extract()]
        rows = [row for row in rows if any(row)]
        if len(rows) >= 1 and max(len(row) for row in rows) >= 2:
            tables.append((pymupdf.Rect(table.bbox), rows))  # type: ignore[no-untyped-call]
    return tables


def _text_with_tables(page: pymupdf.Page, tables: list[_Table]) -> str:
    """The page's text blocks in content order, each table's rows in place of the blocks
    inside it, before the first block below the table's top."""
    pending = sorted(tables, key=lambda t: t[0].y0)
    parts: list[str] = []
    blocks = page.get_text("blocks", flags=_TEXT_FLAGS)  # type: ignore[no-untyped-call]
    for x0, y0, x1, y1, text, _number, kind in blocks:
        if kind != 0:
            continue
        centre = pymupdf.Point((x0 + x1) / 2, (y0 + y1) / 2)  # type: ignore[no-untyped-call]
        if any(centre in rect for rect, _ in tables):
            continue
        while pending and pending[0][0].y0 <= y0:
            parts.append(_table_text(pending.pop(0)[1]))
        parts.append(text if text.endswith("\n") else text + "\n")
    parts.extend(_table_text(rows) for _, rows in pending)
    return "".join(parts)


def _table_text(rows: list[list[str]]) -> str:
    return "\n".join(" | ".join(row) for row in rows) + "\n\n"


def _ocr_page(page: pymupdf.Page, ocr: OcrOptions, work_dir: Path) -> tuple[str, RawLayout]:
    from PIL import Image

    rect = page.rect
    # Grey is all OCR needs, a third of the memory of colour at the same resolution.
    pixmap = page.get_pixmap(dpi=ocr.dpi, colorspace=pymupdf.csGRAY)
    image = Image.frombytes("L", (pixmap.width, pixmap.height), pixmap.samples)
    del pixmap
    result = recognise(image, ocr, dpi=ocr.dpi, work_dir=work_dir)
    sx, sy = rect.width / image.width, rect.height / image.height
    words = [
        RawWord(w.text, w.x0 * sx, w.y0 * sy, w.x1 * sx, w.y1 * sy, w.confidence)
        for w in result.words
    ]
    layout = RawLayout(
        TextSource.OCR, rect.width, rect.height, words, result.confidence, result.failure
    )
    return result.text, layout


def render_page(path: Path, number: int, width: int) -> tuple[bytes, int, int]:
    """Page `number` (1-based) as raw RGB samples `width` pixels wide: (samples, w, h)."""
    with _PYMUPDF_LOCK:
        try:
            pdf = pymupdf.open(path, filetype="pdf")  # type: ignore[no-untyped-call]
        except _PYMUPDF_ERRORS as exc:
            raise DocumentParseError(UNREADABLE_REASON) from exc
        with pdf:
            if pdf.needs_pass or not 1 <= number <= pdf.page_count:
                raise DocumentParseError("The document has no such page.")
            page = pdf[number - 1]
            zoom = width / max(page.rect.width, 1.0)
            matrix = pymupdf.Matrix(zoom, zoom)  # type: ignore[no-untyped-call]
            pixmap = page.get_pixmap(matrix=matrix, colorspace=pymupdf.csRGB, alpha=False)
            return bytes(pixmap.samples), pixmap.width, pixmap.height
