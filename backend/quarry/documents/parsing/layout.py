"""Where a page's words are: their boxes, tied to character offsets of the page's stored text.

A parser reports each page's words in reading order with their rectangles in page units
(PDF points for PDFs, pixels for images) and, for OCR, Tesseract's confidence. Once the page
text has been cleaned (`cleaning.py`), `align_words` finds each word in it, so that any
character span of the text maps to rectangles on the page (`boxes_for_span`). Stored
compactly, one row of seven numbers per word (`PageLayout.to_json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: Below this mean OCR confidence (0..1) of the quoted words a value is flagged
#: `ocr_low_confidence` (exports, review grid) and its confidence scaled down by it
#: (runs/engine.py): a clean scan reads at 0.9 and above.
OCR_LOW_CONFIDENCE = 0.75


class TextSource(StrEnum):
    """Where a page's text came from."""

    TEXT_LAYER = "text_layer"
    OCR = "ocr"


@dataclass(frozen=True, slots=True)
class RawWord:
    """A word as a parser saw it: its text, its box and its OCR confidence (0..100, or -1)."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float = -1.0


@dataclass(frozen=True, slots=True)
class PlacedWord:
    """A word found in the page's stored text at `start:end` (offsets within the page)."""

    start: int
    end: int
    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float = -1.0


@dataclass(frozen=True, slots=True)
class RawLayout:
    """A page as a parser read it, before its text is cleaned: its words are not yet tied to
    offsets of the stored text (`PageLayout.place` does that)."""

    source: TextSource
    width: float
    height: float
    words: list[RawWord]
    ocr_confidence: float | None = None
    note: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """As JSON for the child's result file."""
        return {
            "source": self.source.value,
            "width": self.width,
            "height": self.height,
            "confidence": self.ocr_confidence,
            "note": self.note,
            "words": [
                [
                    w.text,
                    round(w.x0, 2),
                    round(w.y0, 2),
                    round(w.x1, 2),
                    round(w.y1, 2),
                    round(w.confidence, 1),
                ]
                for w in self.words
            ],
        }

    @classmethod
    def from_wire(cls, raw: Any) -> RawLayout | None:
        """A layout from the child's result; None for anything not of the expected shape
        (the child's output is not trusted)."""
        if not isinstance(raw, dict):
            return None
        try:
            source = TextSource(str(raw.get("source")))
            width, height = float(raw["width"]), float(raw["height"])
            confidence = raw.get("confidence")
            confidence = None if confidence is None else float(confidence)
            note = raw.get("note")
            words = [
                RawWord(str(t), float(a), float(b), float(c), float(d), float(e))
                for t, a, b, c, d, e in raw.get("words") or []
            ]
        except (KeyError, TypeError, ValueError):
            return None
        if not (0 < width < 1e6 and 0 < height < 1e6):
            return None
        return cls(
            source, width, height, words, confidence, note if isinstance(note, str) else None
        )


@dataclass(frozen=True, slots=True)
class PageLayout:
    """How a page was read and where its words are."""

    source: TextSource
    width: float
    height: float
    words: tuple[PlacedWord, ...] = ()
    #: Mean OCR confidence of the page's words, 0..100 (OCR pages only).
    ocr_confidence: float | None = None
    #: A sentence for the user when the page could not be read (e.g. its OCR timed out).
    note: str | None = None

    @classmethod
    def place(cls, raw: RawLayout, text: str) -> PageLayout:
        """`raw`'s words found in the page's stored (cleaned) `text`."""
        return cls(
            raw.source,
            raw.width,
            raw.height,
            align_words(text, raw.words),
            None if raw.ocr_confidence is None else round(raw.ocr_confidence, 1),
            raw.note,
        )

    def to_raw(self, text: str) -> RawLayout:
        """Back to words with their text (what the child sends; the parent places them)."""
        words = [
            RawWord(text[w.start : w.end], w.x0, w.y0, w.x1, w.y1, w.confidence) for w in self.words
        ]
        return RawLayout(
            self.source, self.width, self.height, words, self.ocr_confidence, self.note
        )

    def to_json(self) -> list[list[float]]:
        """The words as rows of [start, end, x0, y0, x1, y1, confidence], rounded."""
        return [
            [
                w.start,
                w.end,
                round(w.x0, 1),
                round(w.y0, 1),
                round(w.x1, 1),
                round(w.y1, 1),
                round(w.confidence),
            ]
            for w in self.words
        ]


def words_from_json(rows: Any) -> list[PlacedWord]:
    """The stored rows back as words (rows of the wrong shape are skipped)."""
    words: list[PlacedWord] = []
    if not isinstance(rows, list):
        return words
    for row in rows:
        if isinstance(row, list) and len(row) == 7:
            try:
                start, end, x0, y0, x1, y1, conf = row
                words.append(
                    PlacedWord(
                        int(start), int(end), float(x0), float(y0), float(x1), float(y1), conf
                    )
                )
            except (TypeError, ValueError):
                continue
    return words


#: How far past the previous word a word is looked for before it is looked for anywhere on
#: the page (a table's cells are laid out in rows, possibly not where the PDF drew them).
_NEAR_WINDOW = 400
#: Words shorter than this are placed only near the previous word: "a" or "of" found
#: anywhere on the page would be a guess.
_MIN_FAR_WORD = 4


def align_words(text: str, words: Iterable[RawWord]) -> tuple[PlacedWord, ...]:
    """Each word found in `text`, in order; a word that cannot be found is left out."""
    placed: list[PlacedWord] = []
    cursor = 0
    taken: set[int] = set()
    for word in words:
        token = word.text.strip()
        if not token:
            continue
        position = text.find(token, cursor, cursor + _NEAR_WINDOW + len(token))
        if position < 0 and len(token) >= _MIN_FAR_WORD:
            position = _find_untaken(text, token, taken)
        if position < 0:
            continue
        end = position + len(token)
        taken.add(position)
        cursor = end
        placed.append(
            # Rounded as the child's result rounds them, so a page parsed in a child and
            # one parsed in process are equal.
            PlacedWord(
                position,
                end,
                round(word.x0, 2),
                round(word.y0, 2),
                round(word.x1, 2),
                round(word.y1, 2),
                round(word.confidence, 1),
            )
        )
    placed.sort(key=lambda w: w.start)
    return tuple(placed)


def _find_untaken(text: str, token: str, taken: set[int]) -> int:
    position = text.find(token)
    while position >= 0 and position in taken:
        position = text.find(token, position + 1)
    return position


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle on a page, in page units."""

    page: int
    x0: float
    y0: float
    x1: float
    y1: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "page": self.page,
            "x0": round(self.x0, 1),
            "y0": round(self.y0, 1),
            "x1": round(self.x1, 1),
            "y1": round(self.y1, 1),
        }


def boxes_for_span(
    page: int, words: Sequence[PlacedWord], start: int, end: int
) -> tuple[list[Box], list[float]]:
    """The rectangles of the words overlapping `start:end` (page offsets), one per line run,
    and the OCR confidences (0..100) of those words."""
    boxes: list[Box] = []
    confidences: list[float] = []
    line: list[PlacedWord] = []
    for word in words:
        if word.end <= start or word.start >= end:
            continue
        if word.confidence >= 0:
            confidences.append(word.confidence)
        if line and not _same_line(line[-1], word):
            boxes.append(_merge(page, line))
            line = []
        line.append(word)
    if line:
        boxes.append(_merge(page, line))
    return boxes, confidences


def _same_line(a: PlacedWord, b: PlacedWord) -> bool:
    middle = (b.y0 + b.y1) / 2
    return a.y0 <= middle <= a.y1 and b.x0 >= a.x0 - 1


def _merge(page: int, words: Sequence[PlacedWord]) -> Box:
    return Box(
        page,
        min(w.x0 for w in words),
        min(w.y0 for w in words),
        max(w.x1 for w in words),
        max(w.y1 for w in words),
    )
