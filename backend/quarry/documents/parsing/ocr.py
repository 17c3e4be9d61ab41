"""Optical character recognition of one page image with the Tesseract command-line program.

Runs in the parser's child process (`child.py`), under its limits: Tesseract is a grandchild
that inherits them, is killed at the page's deadline (`OcrOptions.page_timeout_seconds`) and
dies with the child. The command line, not a binding: Debian's `tesseract-ocr` is all it
needs, its TSV output gives every word's box and confidence, and a hung or crashing
Tesseract costs one page, never the child.

A page scanned sideways or upside down reads as gibberish at low confidence; such a page is
asked again after Tesseract's orientation detection (`--psm 0`), turned upright, and the
words' boxes are turned back to the page as it is.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quarry.documents.parsing.layout import RawWord

if TYPE_CHECKING:
    from PIL.Image import Image

#: A first reading less sure than this (mean word confidence, 0..100) is checked for a page
#: turned on its side.
_RECHECK_BELOW = 70.0
#: Tesseract's orientation confidence below which its guess is not acted on.
_MIN_ORIENTATION_CONFIDENCE = 1.0
_ROTATE = re.compile(rb"Rotate:\s*(\d+)")
_ORIENTATION_CONFIDENCE = re.compile(rb"Orientation confidence:\s*([\d.]+)")
_LANGUAGES = re.compile(r"[A-Za-z_]+(?:\+[A-Za-z_]+)*")
_PR_SET_PDEATHSIG = 1

NOT_INSTALLED_REASON = (
    "This page has no text layer and Tesseract (the OCR program) is not installed on the "
    "server, so it was left empty."
)


@dataclass(frozen=True)
class OcrOptions:
    """How pages without a text layer are read (`QUARRY_OCR_*`)."""

    enabled: bool = True
    languages: str = "eng"
    page_timeout_seconds: float = 60.0
    dpi: int = 300
    #: The Tesseract program, resolved by the parent (the child has no PATH); None = absent.
    tesseract: str | None = None

    def argv(self) -> list[str]:
        """The child's command-line arguments for these options."""
        return [
            f"--ocr-enabled={int(self.enabled)}",
            f"--ocr-languages={self.languages}",
            f"--ocr-page-timeout={self.page_timeout_seconds:g}",
            f"--ocr-dpi={self.dpi}",
            f"--tesseract={self.tesseract or ''}",
        ]

    @classmethod
    def resolve(
        cls, *, enabled: bool, languages: str, page_timeout_seconds: float, dpi: int
    ) -> OcrOptions:
        if not _LANGUAGES.fullmatch(languages):
            raise ValueError(f"not a Tesseract language list: {languages!r}")
        return cls(enabled, languages, page_timeout_seconds, dpi, shutil.which("tesseract"))


@dataclass(frozen=True)
class OcrResult:
    """A page's words in reading order, as text (lines, blank lines between paragraphs)."""

    text: str
    words: list[RawWord]
    #: Mean word confidence, 0..100; None when no word was read.
    confidence: float | None
    #: Why the page could not be read, for the user; None when it was.
    failure: str | None = None


def recognise(image: Image, options: OcrOptions, *, dpi: int | None, work_dir: Path) -> OcrResult:
    """The words of `image` (grey or colour), with boxes in `image`'s pixels."""
    if options.tesseract is None:
        return OcrResult("", [], None, NOT_INSTALLED_REASON)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="ocr-") as scratch:
        path = Path(scratch) / "page.png"
        image.save(path, format="PNG", compress_level=1)
        try:
            first = _tesseract_words(path, options, dpi)
            if first.confidence is not None and first.confidence >= _RECHECK_BELOW:
                return first
            rotation = _orientation(path, options, dpi)
            if rotation == 0:
                return first
            upright = image.rotate(-rotation, expand=True)  # PIL turns counter-clockwise
            upright.save(path, format="PNG", compress_level=1)
            second = _tesseract_words(path, options, dpi)
            if _score(second) <= _score(first):
                return first
            width, height = image.size
            words = [_turn_back(word, rotation, width, height) for word in second.words]
            return OcrResult(second.text, words, second.confidence)
        except subprocess.TimeoutExpired:
            return OcrResult(
                "",
                [],
                None,
                f"OCR of this page took longer than {options.page_timeout_seconds:g} s, so it "
                "was stopped and the page left empty.",
            )
        except OcrFailed as exc:
            return OcrResult("", [], None, exc.reason)


class OcrFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _score(result: OcrResult) -> float:
    return (result.confidence or 0.0) * len(result.words)


def _run(args: list[str], options: OcrOptions) -> subprocess.CompletedProcess[bytes]:
    assert options.tesseract is not None
    return subprocess.run(  # noqa: S603 - a fixed program, arguments we built
        [options.tesseract, *args],
        capture_output=True,
        timeout=options.page_timeout_seconds,
        # One thread: pages are parsed in parallel by several children already, and OpenMP's
        # threads would fight them for the same cores.
        env={"OMP_THREAD_LIMIT": "1", "LC_ALL": "C"},
        preexec_fn=_die_with_parent,
        check=False,
    )


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _dpi_args(dpi: int | None) -> list[str]:
    return ["--dpi", str(dpi)] if dpi is not None and 50 <= dpi <= 2400 else []


def _tesseract_words(path: Path, options: OcrOptions, dpi: int | None) -> OcrResult:
    done = _run(
        [str(path), "-", "-l", options.languages, "--psm", "3", *_dpi_args(dpi), "tsv"], options
    )
    if done.returncode != 0:
        if done.returncode < 0:
            raise OcrFailed("The OCR program crashed on this page, so it was left empty.")
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        message = detail[-1][:200] if detail else f"exit status {done.returncode}"
        raise OcrFailed(f"OCR of this page failed ({message}), so it was left empty.")
    return parse_tsv(done.stdout.decode("utf-8", "replace"))


def parse_tsv(tsv: str) -> OcrResult:
    """Tesseract's TSV output as words and text: words of a line joined by spaces, lines by
    newlines, a blank line between paragraphs."""
    words: list[RawWord] = []
    lines: list[str] = []
    current: list[str] = []
    line_key: tuple[str, str, str] | None = None
    paragraph_key: tuple[str, str] | None = None
    reader = csv.reader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    next(reader, None)  # the header
    for row in reader:
        if len(row) < 12 or row[0] != "5":
            continue
        token = row[11].strip()
        if not token:
            continue
        try:
            left, top, width, height = (int(v) for v in row[6:10])
            confidence = float(row[10])
        except ValueError:
            continue
        key = (row[2], row[3], row[4])
        if key != line_key:
            if current:
                lines.append(" ".join(current))
            if paragraph_key is not None and key[:2] != paragraph_key:
                lines.append("")
            current, line_key, paragraph_key = [], key, key[:2]
        current.append(token)
        words.append(RawWord(token, left, top, left + width, top + height, max(0.0, confidence)))
    if current:
        lines.append(" ".join(current))
    mean = sum(w.confidence for w in words) / len(words) if words else None
    return OcrResult("\n".join(lines), words, mean)


def _orientation(path: Path, options: OcrOptions, dpi: int | None) -> int:
    """Degrees to turn the image clockwise to make it upright (0 when unknown)."""
    done = _run([str(path), "-", "--psm", "0", *_dpi_args(dpi)], options)
    # Too little text to judge is an error exit: then the page stays as it is.
    rotate = _ROTATE.search(done.stdout)
    confidence = _ORIENTATION_CONFIDENCE.search(done.stdout)
    if done.returncode != 0 or rotate is None or confidence is None:
        return 0
    if float(confidence.group(1)) < _MIN_ORIENTATION_CONFIDENCE:
        return 0
    degrees = int(rotate.group(1)) % 360
    return degrees if degrees in (90, 180, 270) else 0


def _turn_back(word: RawWord, rotation: int, width: int, height: int) -> RawWord:
    """A word's box on the upright image (turned `rotation`° clockwise) on the image as it is
    (`width` × `height`)."""
    corners = [
        _unrotate(x, y, rotation, width, height)
        for x, y in ((word.x0, word.y0), (word.x1, word.y1))
    ]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return RawWord(word.text, min(xs), min(ys), max(xs), max(ys), word.confidence)


def _unrotate(x: float, y: float, rotation: int, width: int, height: int) -> tuple[float, float]:
    if rotation == 90:
        return y, height - x
    if rotation == 180:
        return width - x, height - y
    return width - y, x  # 270
