"""Scans of born-digital test documents, made in the test: pages rendered to images, as a
scanner, a fax or a phone camera would, then packed as image-only PDFs, TIFFs or PNGs."""

# PyMuPDF ships py.typed but leaves most of its API unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import io
import struct
import zlib

import pymupdf
from PIL import Image, ImageFilter

from tests.support.documents import make_pdf


def render_pages(pdf: bytes, dpi: int = 200) -> list[Image.Image]:
    """Each page of `pdf` as a greyscale image at `dpi`, as a flatbed scanner gives it."""
    with pymupdf.open(stream=pdf, filetype="pdf") as document:
        images = []
        for page in document:
            pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
            images.append(Image.frombytes("L", (pixmap.width, pixmap.height), pixmap.samples))
        return images


def image_only_pdf(images: list[Image.Image], dpi: int = 200) -> bytes:
    """A PDF of one page per image, each page the image at `dpi`: no text layer at all."""
    document = pymupdf.open()
    for image in images:
        page = document.new_page(width=image.width * 72 / dpi, height=image.height * 72 / dpi)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        page.insert_image(page.rect, stream=buffer.getvalue())
    return bytes(document.tobytes())


def mixed_pdf(text_pages: list[str], scanned_pages: list[str], dpi: int = 200) -> bytes:
    """A PDF whose first pages have a text layer and whose last pages are scans."""
    document = pymupdf.open(stream=make_pdf(text_pages), filetype="pdf")
    scans = pymupdf.open(stream=image_only_pdf(render_pages(make_pdf(scanned_pages), dpi), dpi))
    document.insert_pdf(scans)
    return bytes(document.tobytes())


def tiff(images: list[Image.Image], dpi: int = 200) -> bytes:
    """A multi-page TIFF (one frame per image, Group 4 fax compression, as scanners write)."""
    buffer = io.BytesIO()
    frames = [image.convert("1") for image in images]
    frames[0].save(
        buffer,
        format="TIFF",
        save_all=True,
        append_images=frames[1:],
        compression="group4",
        dpi=(dpi, dpi),
    )
    return buffer.getvalue()


def photographed(image: Image.Image, degrees: float = 1.2) -> Image.Image:
    """A phone photo of the page: slightly turned, greyish paper, a little blur and noise."""
    turned = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    paper = turned.point(lambda v: 40 + v * 0.78)
    blurred = paper.filter(ImageFilter.GaussianBlur(0.6))
    noise = Image.effect_noise(blurred.size, 24)  # grey noise around 128
    return Image.blend(blurred, noise, 0.1).convert("RGB")


def png(image: Image.Image, dpi: int | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **({"dpi": (dpi, dpi)} if dpi else {}))
    return buffer.getvalue()


def webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=90)
    return buffer.getvalue()


def table_pdf(title: str, rows: list[list[str]]) -> bytes:
    """A one-page PDF with a ruled table (every cell boxed in lines, as reports draw them)."""
    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 80), title, fontsize=12)
    x0, y0, widths, height = 72, 100, [150, 90, 90], 22
    for r, row in enumerate(rows):
        x = x0
        for width, cell in zip(widths, row, strict=True):
            rect = pymupdf.Rect(x, y0 + r * height, x + width, y0 + (r + 1) * height)
            page.draw_rect(rect, color=(0, 0, 0), width=0.8)
            page.insert_text((rect.x0 + 4, rect.y1 - 7), cell, fontsize=10)
            x += width
    page.insert_text(
        (72, y0 + len(rows) * height + 30), "Values are counts and means.", fontsize=11
    )
    return bytes(document.tobytes())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A PNG whose header declares `width` × `height` pixels (greyscale), with a tiny IDAT:
    a decompression bomb when the size is huge, a truncated image when it is not."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = idat if idat is not None else zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def many_page_tiff(pages: int) -> bytes:
    """A TIFF of `pages` 1 × 1 frames: tiny, with a page count no document has."""
    frame = Image.new("1", (1, 1), 1)
    buffer = io.BytesIO()
    frame.save(buffer, format="TIFF", save_all=True, append_images=[frame] * (pages - 1))
    return buffer.getvalue()
