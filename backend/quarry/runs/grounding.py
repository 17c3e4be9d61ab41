"""Locating an evidence quote in the document text: exact first, then normalised.

Normalised matching ignores case, Unicode compatibility forms, quote/dash styles and runs of
whitespace (a PDF breaks lines where the model's quote has spaces), and maps the match back
to character offsets in the original text. Fuzzy matching arrives with the quality issue.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u00ad": None,  # soft hyphen
    }
)


@dataclass(frozen=True)
class Location:
    char_start: int
    char_end: int
    page: int


def _normalise_with_map(text: str) -> tuple[str, list[int]]:
    """Normalised text and, for each of its characters, the offset it came from."""
    out: list[str] = []
    origin: list[int] = []
    previous_space = True
    for index, char in enumerate(text):
        folded = unicodedata.normalize("NFKC", char).translate(_TRANSLATE).casefold()
        for piece in folded:
            if piece.isspace():
                if previous_space:
                    continue
                piece = " "
                previous_space = True
            else:
                previous_space = False
            out.append(piece)
            origin.append(index)
    while out and out[-1] == " ":
        out.pop()
        origin.pop()
    return "".join(out), origin


def _page_of(offset: int, page_starts: Sequence[int]) -> int:
    return max(1, bisect.bisect_right(page_starts, offset))


def locate_evidence(text: str, page_starts: Sequence[int], quote: str) -> Location | None:
    """Where `quote` occurs in `text` (page numbers from each page's start offset), or None."""
    quote = quote.strip().strip('"').strip()
    if len(quote) < 2:
        return None
    start = text.find(quote)
    if start >= 0:
        return Location(start, start + len(quote), _page_of(start, page_starts))
    haystack, origin = _normalise_with_map(text)
    needle, _ = _normalise_with_map(quote)
    if not needle:
        return None
    found = haystack.find(needle)
    if found < 0:
        return None
    char_start = origin[found]
    char_end = origin[found + len(needle) - 1] + 1
    return Location(char_start, char_end, _page_of(char_start, page_starts))
