"""OCR accuracy and speed of Quarry's parser on scans of known text (run by hand).

    .venv/bin/python benchmarks/ocr.py [--pages 2] [--only dpi,pdf]

Renders pages of known text with PyMuPDF's built-in fonts (Helvetica, Times, Courier) to
images at 150, 200 and 300 dpi, with the damage scans have (a slight turn, noise), a
two-column page and a ruled table, as PNG images and as image-only PDFs; parses each with
Quarry's parser (`parse_document`, with the settings' OCR options, in this process); and
prints the character error rate (CER: edit distance ÷ length of the known text, whitespace
collapsed) and pages per second per condition. Targets (issue 13): CER ≤ 2 % at 300 dpi and
≤ 5 % at 150 dpi on clean renders. Results go in benchmarks/RESULTS.md with the machine.
"""

# PyMuPDF ships py.typed but leaves most of its API unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pymupdf
from PIL import Image, ImageFilter
from rapidfuzz.distance import Levenshtein

from quarry.documents.parsing import DocumentKind, parse_document
from quarry.settings import Settings

WORDS = [
    "patients",
    "trial",
    "randomised",
    "placebo",
    "aspirin",
    "outcome",
    "stroke",
    "baseline",
    "mean",
    "age",
    "years",
    "follow-up",
    "months",
    "hospital",
    "admission",
    "dose",
    "daily",
    "tablets",
    "blood",
    "pressure",
    "systolic",
    "diastolic",
    "cholesterol",
    "events",
    "reported",
    "adverse",
    "serious",
    "bleeding",
    "primary",
    "secondary",
    "analysis",
    "interval",
    "confidence",
    "hazard",
    "ratio",
    "significant",
    "groups",
    "enrolled",
    "centres",
    "eligible",
    "excluded",
    "consent",
    "criteria",
    "diabetes",
    "history",
    "smoking",
    "weight",
    "height",
    "index",
]


def paragraph(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
        if rng.random() < 0.5:
            words.insert(rng.randint(0, len(words)), f"{rng.randint(2, 980)}")
        if rng.random() < 0.3:
            words.insert(rng.randint(0, len(words)), f"{rng.randint(1, 99)}.{rng.randint(0, 9)}%")
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


@dataclass
class Page:
    """A born-digital page and the text a perfect reader gets from it."""

    pdf: bytes
    expected: str


def text_page(rng: random.Random, font: str) -> Page:
    text = "\n\n".join(paragraph(rng, 4) for _ in range(3))
    document = pymupdf.open()
    page = document.new_page()
    box = pymupdf.Rect(72, 72, page.rect.width - 72, page.rect.height - 72)
    page.insert_textbox(box, text, fontsize=11, fontname=font)
    return Page(bytes(document.tobytes()), text)


def two_column_page(rng: random.Random) -> Page:
    left, right = paragraph(rng, 7), paragraph(rng, 7)
    document = pymupdf.open()
    page = document.new_page()
    page.insert_textbox(pymupdf.Rect(54, 72, 290, 770), left, fontsize=10, fontname="tiro")
    page.insert_textbox(pymupdf.Rect(310, 72, 546, 770), right, fontsize=10, fontname="tiro")
    return Page(bytes(document.tobytes()), f"{left}\n{right}")


def table_page(rng: random.Random) -> Page:
    rows = [["Arm", "Patients", "Mean age", "Events"]]
    for arm in ("Placebo", "Aspirin", "Clopidogrel", "Combination"):
        rows.append(
            [arm, str(rng.randint(40, 400)), f"{rng.uniform(40, 80):.1f}", str(rng.randint(0, 60))]
        )
    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 80), "Table 2. Outcomes by arm", fontsize=12, fontname="helv")
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            rect = pymupdf.Rect(72 + c * 110, 100 + r * 24, 182 + c * 110, 124 + r * 24)
            page.draw_rect(rect, color=(0, 0, 0), width=0.8)
            page.insert_text((rect.x0 + 5, rect.y1 - 8), cell, fontsize=10, fontname="helv")
    expected = "Table 2. Outcomes by arm\n" + "\n".join(" ".join(row) for row in rows)
    return Page(bytes(document.tobytes()), expected)


def render(pdf: bytes, dpi: int) -> Image.Image:
    with pymupdf.open(stream=pdf, filetype="pdf") as document:
        pixmap = document[0].get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        return Image.frombytes("L", (pixmap.width, pixmap.height), pixmap.samples)


def turned(image: Image.Image, degrees: float = 1.5) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)


def noisy(image: Image.Image) -> Image.Image:
    blurred = image.filter(ImageFilter.GaussianBlur(0.5))
    return Image.blend(blurred, Image.effect_noise(image.size, 40), 0.15)


def as_png(image: Image.Image, dpi: int) -> tuple[bytes, DocumentKind]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", dpi=(dpi, dpi))
    return buffer.getvalue(), DocumentKind.IMAGE


def as_pdf(image: Image.Image, dpi: int) -> tuple[bytes, DocumentKind]:
    document = pymupdf.open()
    page = document.new_page(width=image.width * 72 / dpi, height=image.height * 72 / dpi)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    page.insert_image(page.rect, stream=buffer.getvalue())
    return bytes(document.tobytes()), DocumentKind.PDF


@dataclass
class Condition:
    group: str
    name: str
    make_page: Callable[[random.Random], Page]
    scan: Callable[[Page], tuple[bytes, DocumentKind]]


def conditions() -> list[Condition]:
    out: list[Condition] = []
    for font, label in (("helv", "Helvetica"), ("tiro", "Times"), ("cour", "Courier")):
        for dpi in (150, 200, 300):
            out.append(
                Condition(
                    "dpi",
                    f"{label}, {dpi} dpi, clean PNG",
                    lambda rng, f=font: text_page(rng, f),  # type: ignore[misc]
                    lambda page, d=dpi: as_png(render(page.pdf, d), d),  # type: ignore[misc]
                )
            )
    out += [
        Condition(
            "damage",
            "Times, 300 dpi, turned 1.5°",
            lambda rng: text_page(rng, "tiro"),
            lambda page: as_png(turned(render(page.pdf, 300)), 300),
        ),
        Condition(
            "damage",
            "Times, 200 dpi, blur + noise",
            lambda rng: text_page(rng, "tiro"),
            lambda page: as_png(noisy(render(page.pdf, 200)), 200),
        ),
        Condition(
            "layout",
            "two columns, Times 10 pt, 300 dpi",
            two_column_page,
            lambda page: as_png(render(page.pdf, 300), 300),
        ),
        Condition(
            "layout",
            "ruled table, 300 dpi",
            table_page,
            lambda page: as_png(render(page.pdf, 300), 300),
        ),
        Condition(
            "pdf",
            "image-only PDF, scanned at 200 dpi",
            lambda rng: text_page(rng, "helv"),
            lambda page: as_pdf(render(page.pdf, 200), 200),
        ),
        Condition(
            "pdf",
            "image-only PDF, scanned at 300 dpi",
            lambda rng: text_page(rng, "helv"),
            lambda page: as_pdf(render(page.pdf, 300), 300),
        ),
    ]
    return out


def normalise(text: str) -> str:
    # Table cells come back as "a | b" rows; the known text has them space-separated.
    return " ".join(text.replace(" | ", " ").split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2, help="pages per condition")
    parser.add_argument("--only", default="", help="groups to run: dpi,damage,layout,pdf")
    args = parser.parse_args()
    groups = {g for g in args.only.split(",") if g}
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    options = settings.ocr_options()
    if options.tesseract is None:
        raise SystemExit("Tesseract is not installed (apt-get install tesseract-ocr …)")
    print(
        f"# {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}; OCR {options.languages}, "
        f"PDF pages rendered at {options.dpi} dpi"
    )
    print("| condition | pages | CER | pages/s |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="quarry-ocr-bench-") as scratch:
        work = Path(scratch)
        for number, condition in enumerate(conditions()):
            if groups and condition.group not in groups:
                continue
            rng = random.Random(number)
            errors = length = 0
            seconds = 0.0
            for index in range(args.pages):
                page = condition.make_page(rng)
                data, kind = condition.scan(page)
                path = work / f"page-{number}-{index}"
                path.write_bytes(data)
                started = time.perf_counter()
                document = parse_document(path, kind, options, work)
                seconds += time.perf_counter() - started
                expected, got = normalise(page.expected), normalise(document.text)
                errors += Levenshtein.distance(expected, got)
                length += len(expected)
            print(
                f"| {condition.name} | {args.pages} | {100 * errors / length:.2f} % | "
                f"{args.pages / seconds:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
