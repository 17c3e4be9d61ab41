"""A document's page as an image (PNG or WebP) for the review panel; runs in the parser's child.

PDF pages are rendered by MuPDF at the width asked; image documents' pages are their frames,
scaled (never enlarged past their own size).
"""

from __future__ import annotations

import io
from pathlib import Path

from quarry.documents.parsing.model import DocumentKind, DocumentParseError

#: Formats a page image may be asked in, and their MIME types.
IMAGE_FORMATS = {"png": "image/png", "webp": "image/webp"}
MIN_WIDTH, MAX_WIDTH = 16, 4000


def render_page(path: Path, kind: DocumentKind, number: int, width: int, fmt: str) -> bytes:
    """Page `number` (1-based) of the document at `path`, `width` pixels wide, encoded."""
    from PIL import Image

    if fmt not in IMAGE_FORMATS or not MIN_WIDTH <= width <= MAX_WIDTH:
        raise DocumentParseError("The page cannot be shown in that format or width.")
    if kind is DocumentKind.PDF:
        from quarry.documents.parsing.pdf import render_page as render_pdf_page

        samples, w, h = render_pdf_page(path, number, width)
        image = Image.frombytes("RGB", (w, h), samples)
    elif kind is DocumentKind.IMAGE:
        from quarry.documents.parsing.images import frame

        try:
            image = frame(path, number)
        except EOFError as exc:
            raise DocumentParseError("The document has no such page.") from exc
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        if width < image.width:
            height = max(1, round(image.height * width / image.width))
            image = image.resize((width, height), Image.Resampling.LANCZOS)
    else:
        raise DocumentParseError("Only PDF and image documents have page images.")
    out = io.BytesIO()
    if fmt == "webp":
        image.save(out, format="WEBP", quality=80, method=4)
    else:
        image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()
