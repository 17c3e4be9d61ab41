"""Scans read by OCR, tables kept as rows, and every page's words tied to boxes (in process)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from quarry.documents.parsing import (
    DocumentKind,
    DocumentParseError,
    OcrOptions,
    ParsedDocument,
    TextSource,
    parse_document,
)
from quarry.documents.parsing.layout import boxes_for_span
from tests.support import scans
from tests.support.documents import make_pdf

# CI installs Tesseract (.ci/run); elsewhere these tests need it installed.
pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None and not os.environ.get("CI"),
    reason="Tesseract is not installed (apt: tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd)",
)

PAGES = [
    "Trial report. In total 240 participants were randomised to aspirin or placebo.",
    "Methods. The primary outcome was stroke within two years of follow-up.",
    "Results. Mean age at baseline was 64.5 years in both arms.",
]


def ocr(**overrides: object) -> OcrOptions:
    options = {
        "enabled": True,
        "languages": "eng",
        "page_timeout_seconds": 60.0,
        "dpi": 300,
        **overrides,
    }
    return OcrOptions.resolve(**options)  # type: ignore[arg-type]


def parse(
    tmp_path: Path, name: str, data: bytes, kind: DocumentKind, **options: object
) -> ParsedDocument:
    path = tmp_path / name
    path.write_bytes(data)
    return parse_document(path, kind, ocr(**options), tmp_path)


def words_of(text: str) -> list[str]:
    return text.split()


def test_a_scanned_pdf_reads_as_its_born_digital_original(tmp_path: Path) -> None:
    scanned = scans.image_only_pdf(scans.render_pages(make_pdf(PAGES)))
    document = parse(tmp_path, "scan.pdf", scanned, DocumentKind.PDF)
    assert [words_of(page.text) for page in document.pages] == [words_of(p) for p in PAGES]
    for page in document.pages:
        assert page.layout is not None and page.layout.source is TextSource.OCR
        assert page.layout.ocr_confidence is not None and page.layout.ocr_confidence > 80


def test_a_three_page_tiff_is_a_three_page_document(tmp_path: Path) -> None:
    data = scans.tiff(scans.render_pages(make_pdf(PAGES)))
    document = parse(tmp_path, "fax.tiff", data, DocumentKind.IMAGE)
    assert [words_of(page.text) for page in document.pages] == [words_of(p) for p in PAGES]


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_page_scanned_sideways_or_upside_down_still_reads(tmp_path: Path, degrees: int) -> None:
    page = scans.render_pages(make_pdf(PAGES[:1]))[0].rotate(degrees, expand=True)
    document = parse(tmp_path, "turned.png", scans.png(page), DocumentKind.IMAGE)
    assert words_of(document.text) == words_of(PAGES[0])
    # The boxes are on the image as it is: "240" on a page turned a quarter is tall, not wide.
    layout = document.pages[0].layout
    assert layout is not None and (layout.width, layout.height) == page.size
    start = document.text.index("240")
    [box], _ = boxes_for_span(1, layout.words, start, start + 3)
    tall = box.y1 - box.y0 > box.x1 - box.x0
    assert tall is (degrees in (90, 270))
    crop = page.crop((round(box.x0), round(box.y0), round(box.x1), round(box.y1)))
    assert crop.getextrema()[0] < 100  # ink inside the box


def test_a_photographed_png_and_a_webp_read(tmp_path: Path) -> None:
    [image] = scans.render_pages(make_pdf(PAGES[:1]))
    photo = parse(tmp_path, "photo.png", scans.png(scans.photographed(image)), DocumentKind.IMAGE)
    assert words_of(photo.text) == words_of(PAGES[0])
    webp = parse(tmp_path, "page.webp", scans.webp(image), DocumentKind.IMAGE)
    assert words_of(webp.text) == words_of(PAGES[0])


def test_a_mixed_pdf_ocrs_only_its_scanned_pages(tmp_path: Path) -> None:
    data = scans.mixed_pdf(PAGES[:2], PAGES[2:])
    document = parse(tmp_path, "mixed.pdf", data, DocumentKind.PDF)
    born = parse_document(_written(tmp_path, "born.pdf", make_pdf(PAGES[:2])), DocumentKind.PDF)
    sources = [page.layout.source if page.layout else None for page in document.pages]
    assert sources == [TextSource.TEXT_LAYER, TextSource.TEXT_LAYER, TextSource.OCR]
    # The text pages are their text layer, character for character.
    assert [p.text for p in document.pages[:2]] == [p.text for p in born.pages]
    assert document.pages[0].layout is not None and document.pages[0].layout.ocr_confidence is None
    assert words_of(document.pages[2].text) == words_of(PAGES[2])


def test_a_page_whose_ocr_times_out_is_left_empty_and_the_rest_parses(tmp_path: Path) -> None:
    data = scans.mixed_pdf(PAGES[:1], PAGES[1:2])
    document = parse(tmp_path, "mixed.pdf", data, DocumentKind.PDF, page_timeout_seconds=0.001)
    assert words_of(document.pages[0].text) == words_of(PAGES[0])
    assert document.pages[1].text == ""
    layout = document.pages[1].layout
    assert layout is not None and layout.note is not None and "took longer than" in layout.note


def test_with_ocr_turned_off_an_image_fails_saying_so(tmp_path: Path) -> None:
    [image] = scans.render_pages(make_pdf(PAGES[:1]))
    with pytest.raises(DocumentParseError, match="OCR is turned off"):
        parse(tmp_path, "page.png", scans.png(image), DocumentKind.IMAGE, enabled=False)


def test_a_ruled_table_becomes_rows_of_cells(tmp_path: Path) -> None:
    rows = [["Arm", "N", "Mean age"], ["Placebo", "60", "54.3"], ["Aspirin", "58", "55.1"]]
    document = parse(
        tmp_path, "table.pdf", scans.table_pdf("Table 1. Baseline", rows), DocumentKind.PDF
    )
    lines = document.text.splitlines()
    assert "Arm | N | Mean age" in lines
    assert "Placebo | 60 | 54.3" in lines and "Aspirin | 58 | 55.1" in lines
    assert lines.index("Arm | N | Mean age") > lines.index("Table 1. Baseline")
    assert lines[-1] == "Values are counts and means."


def test_text_layer_words_map_a_span_to_its_place_on_the_page(tmp_path: Path) -> None:
    document = parse_document(_written(tmp_path, "born.pdf", make_pdf(PAGES)), DocumentKind.PDF)
    page = document.pages[0]
    assert page.layout is not None and page.layout.source is TextSource.TEXT_LAYER
    start = page.text.index("240 participants")
    [box], confidences = boxes_for_span(1, page.layout.words, start, start + 16)
    assert confidences == []  # a text layer has no OCR confidence
    # make_pdf writes from one inch (72 pt) in, 11 pt type: the first line's top.
    assert 72 < box.x0 < box.x1 < 540 and 70 <= box.y0 < box.y1 < 90


def test_scan_boxes_land_where_the_born_digital_words_are(tmp_path: Path) -> None:
    born = parse_document(_written(tmp_path, "born.pdf", make_pdf(PAGES)), DocumentKind.PDF)
    dpi = 200
    scanned = parse(
        tmp_path,
        "fax.tiff",
        scans.tiff(scans.render_pages(make_pdf(PAGES), dpi), dpi),
        DocumentKind.IMAGE,
    )
    for quote, number in [("240 participants", 1), ("stroke", 2), ("64.5 years", 3)]:
        expected = _box_of(born, number, quote, scale=1.0)
        found = _box_of(scanned, number, quote, scale=72 / dpi)  # pixels → points
        # A text layer's box spans the font's whole line height, OCR's the ink: the ink sits
        # inside the line, and both span the same letters across.
        centre = ((found[0] + found[2]) / 2, (found[1] + found[3]) / 2)
        assert expected[0] < centre[0] < expected[2] and expected[1] < centre[1] < expected[3]
        assert _across(expected, found) > 0.9, (quote, expected, found)


def _box_of(document: ParsedDocument, number: int, quote: str, scale: float) -> tuple[float, ...]:
    page = document.pages[number - 1]
    assert page.layout is not None
    start = page.text.index(quote)
    [box], _ = boxes_for_span(number, page.layout.words, start, start + len(quote))
    return (box.x0 * scale, box.y0 * scale, box.x1 * scale, box.y1 * scale)


def _across(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """How much of their joint width two rectangles share (1.0: the same left and right)."""
    shared = min(a[2], b[2]) - max(a[0], b[0])
    return max(0.0, shared) / (max(a[2], b[2]) - min(a[0], b[0]))


def _written(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    from quarry.documents.parsing import ImageTooLarge, sniff_kind

    path = _written(tmp_path, "bomb.png", scans.png_declaring(60_000, 60_000))
    with pytest.raises(ImageTooLarge):
        sniff_kind(path, "bomb.png")
    path = _written(tmp_path, "big.png", scans.png_declaring(10_000, 10_000))
    with pytest.raises(ImageTooLarge, match="10,000 × 10,000 pixels"):
        sniff_kind(path, "big.png")
    assert Image.MAX_IMAGE_PIXELS is not None
