"""Images (JPEG, PNG, TIFF, WebP) as documents: checked before decoding, then OCRed per page.

A multi-page TIFF is a multi-page document. The header check (`check_image`) runs at upload,
in the API: Pillow's `Image.open` reads only the header, so a decompression bomb (a tiny file
declaring 60,000 × 60,000 pixels) is refused before a byte of it is decoded. Decoding and
OCR happen in the parser's child (`parse_image`), which checks every frame again.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from quarry.documents.parsing.layout import RawLayout, RawWord, TextSource
from quarry.documents.parsing.model import DocumentParseError, UnsupportedFileType
from quarry.documents.parsing.ocr import OcrOptions, recognise

#: The most pixels one page may have: a 600 dpi A3 scan is 70 million.
MAX_IMAGE_PIXELS = 90_000_000
#: The most pages (frames) one image file may have.
MAX_IMAGE_PAGES = 1_000
#: Larger images are scaled down to this many pixels on their long side before OCR: past
#: about 400 dpi Tesseract reads no better, only slower.
OCR_MAX_SIDE = 4_800
#: Pages smaller than this on a side (in pixels) hold no readable text and are not OCRed.
_MIN_OCR_SIDE = 16

# Pillow's own bomb check (a warning past its limit, an error past twice it) is replaced by
# ours, which says what the limit is; it stays as a second guard at twice ours.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS * 2

_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP")
_NAMES = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "TIFF": "TIFF", "WEBP": "WebP"}
# What Pillow raises on a damaged or truncated file (its plugins parse with `struct`).
_ERRORS = (OSError, ValueError, SyntaxError, EOFError, UnidentifiedImageError, struct.error)


class ImageTooLarge(UnsupportedFileType):
    """An image with more pixels than Quarry decodes (answered 413 at upload)."""


def too_large_reason(filename: str, width: int, height: int) -> str:
    return (
        f"{filename} is an image of {width:,} × {height:,} pixels; Quarry reads images of up "
        f"to {MAX_IMAGE_PIXELS // 1_000_000} million pixels per page (about A3 at 600 dpi). "
        "Scan or export it at a lower resolution and upload it again."
    )


def check_image(path: Path, filename: str) -> str:
    """The image's format name, after checking its header without decoding it.

    Raises `ImageTooLarge` for a page over `MAX_IMAGE_PIXELS`, `UnsupportedFileType` for a
    file that is not a readable image.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns of every oddity of a hostile header; the checks below decide.
            warnings.simplefilter("ignore")
            with Image.open(path, formats=_FORMATS) as image:
                width, height = image.size
                name = _NAMES.get(image.format or "", image.format or "image")
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"{filename} is an image with more pixels than Quarry reads (over "
            f"{MAX_IMAGE_PIXELS // 1_000_000} million per page)."
        ) from exc
    except _ERRORS as exc:
        raise UnsupportedFileType(
            f"{filename} looks like an image but it is damaged or incomplete; save or "
            "export it again and upload it again."
        ) from exc
    if width <= 0 or height <= 0:
        raise UnsupportedFileType(f"{filename} is an image with no pixels.")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(too_large_reason(filename, width, height))
    return name


def parse_image(
    path: Path, options: OcrOptions, work_dir: Path
) -> tuple[list[str], list[RawLayout]]:
    """Each frame's OCR text and layout (boxes in the frame's pixels)."""
    if not options.enabled:
        raise DocumentParseError(
            "The file is an image and OCR is turned off on this server (QUARRY_OCR_ENABLED), "
            "so it has no text to read."
        )
    texts: list[str] = []
    layouts: list[RawLayout] = []
    try:
        for frame, dpi in _frames(path):
            width, height = frame.size
            scale = min(1.0, OCR_MAX_SIDE / max(width, height))
            grey = frame.convert("L")
            if scale < 1.0:
                grey = grey.resize((max(1, round(width * scale)), max(1, round(height * scale))))
                dpi = round(dpi * scale) if dpi else None
            if min(grey.size) < _MIN_OCR_SIDE:
                # Too small to hold a line of text: nothing to ask Tesseract.
                texts.append("")
                layouts.append(RawLayout(TextSource.OCR, float(width), float(height), []))
                continue
            result = recognise(grey, options, dpi=dpi, work_dir=work_dir)
            words = result.words
            if scale < 1.0:
                words = [
                    RawWord(
                        w.text, w.x0 / scale, w.y0 / scale, w.x1 / scale, w.y1 / scale, w.confidence
                    )
                    for w in words
                ]
            texts.append(result.text)
            layouts.append(
                RawLayout(
                    TextSource.OCR,
                    float(width),
                    float(height),
                    words,
                    result.confidence,
                    result.failure,
                )
            )
    except DocumentParseError:
        raise
    except MemoryError:
        raise
    except _ERRORS as exc:
        if texts:
            # A truncated multi-page file: the pages before the damage are kept.
            return texts, layouts
        raise DocumentParseError(
            "The image is damaged or incomplete and could not be decoded; export or scan it "
            "again and upload it again."
        ) from exc
    return texts, layouts


def _frames(path: Path) -> Iterator[tuple[Image.Image, int | None]]:
    """Each page of the image, decoded, upright as its EXIF says, with its dpi if known."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path, formats=_FORMATS) as image:
            # Counted first (TIFF's directories are walked, nothing decoded), so that a file
            # of a million tiny pages is refused at once rather than read page by page.
            if getattr(image, "n_frames", 1) > MAX_IMAGE_PAGES:
                raise DocumentParseError(
                    f"The image has more than {MAX_IMAGE_PAGES:,} pages; Quarry reads "
                    f"images of up to {MAX_IMAGE_PAGES:,} pages."
                )
            index = 0
            while True:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DocumentParseError(
                        too_large_reason(f"Page {index + 1} of the image", width, height)
                    )
                image.load()
                yield ImageOps.exif_transpose(image) or image, _dpi(image)
                index += 1
                try:
                    image.seek(index)
                except EOFError:
                    return


def _dpi(image: Image.Image) -> int | None:
    dpi = image.info.get("dpi")
    try:
        value = round(float(dpi[0])) if dpi else None
    except (TypeError, ValueError, IndexError):
        return None
    return value if value and 50 <= value <= 2400 else None


def frame(path: Path, number: int) -> Image.Image:
    """Page `number` (1-based) of the image, decoded and upright (for page images)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = Image.open(path, formats=_FORMATS)
        if number > 1:
            image.seek(number - 1)
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise DocumentParseError(too_large_reason("The page", width, height))
        image.load()
        return ImageOps.exif_transpose(image) or image
