"""Locating an evidence quote in the document text: exact, then normalised, then fuzzy.

A model's quote is meant to be verbatim, but real models re-type it: they join the lines a PDF
broke, undo hyphenation at line ends ("treat-\\nment" → "treatment"), change quote and dash
styles, drop or alter punctuation, join two parts of a sentence with an ellipsis and now and
then paraphrase a word. The stages, first hit wins:

1. **exact**: the quote as given (``str.find``).
2. **normalised**: case, Unicode compatibility forms, quote/dash styles and runs of whitespace
   ignored; or, failing that, only the letters and digits compared (punctuation, spacing and
   hyphenation ignored). The words are the document's own, so this is as good as exact.
3. **fuzzy**: the letters and digits of the quote aligned with the most similar stretch of the
   document (rapidfuzz's partial ratio, an edit-distance similarity); accepted at or above a
   threshold (``QUARRY_GROUNDING_FUZZY_THRESHOLD``, default 0.9).

Safeguards, because an ungrounded value flagged for review is far cheaper than a fabricated
value presented as backed by the document:

- Quotes with fewer than :data:`MIN_FUZZY_CHARS` letters and digits are never fuzzy-matched and
  must match whole words ("no" is not found inside "cannot").
- Whenever punctuation was ignored (letters-and-digits and fuzzy matches), the numbers of the
  quote must occur in the matched text exactly and in order ("age 54" does not ground on
  "age 45", "3.5 mg" not on "35 mg"), its comparison signs must be the same ("p<0.05" is not
  "p>0.05"), and so must its negations ("not", "no", "non", "never", "without", …).
- A fuzzy match may change a word by one letter at most ("randomized" for "randomised"), so
  "decreased" never grounds on "increased", nor "excluded" on "included".
- A quote with an ellipsis ("…", "...", "[...]") is found part by part, in order, each part
  close after the previous one; the span runs from the first part to the last.

Offsets always point into the original text, which is what the stored page texts hold, so the
UI can highlight the span. The folded forms of a document are cached (the task keeps one text
object per document, so the cache is hit by identity), which keeps a 300-page document at a few
milliseconds per quote after its first.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from itertools import pairwise

from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

#: The default similarity (0..1) a fuzzy match needs; the setting of the same name overrides it.
DEFAULT_FUZZY_THRESHOLD = 0.9
#: Quotes with fewer letters and digits than this are never fuzzy-matched and must match whole
#: words: so short a string turns up by chance in any long document.
MIN_FUZZY_CHARS = 12
#: How far (in characters of the document) the next part of an ellipsis quote may start after
#: the end of the previous part.
MAX_ELLIPSIS_GAP = 2000
#: How many occurrences of an ellipsis quote's first part are tried before giving up.
_MAX_ELLIPSIS_TRIES = 25
#: How many fuzzy alignments are checked when the best ones fail the number/negation checks.
_MAX_FUZZY_CANDIDATES = 4
#: The lowest factor a fuzzy match applies to the model's confidence.
_MIN_CONFIDENCE_FACTOR = 0.5

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u00ad": None,  # soft hyphen
        "\u200b": None,  # zero-width space
        "\ufeff": None,
    }
)
_QUOTE_ENDS = ' \t\r\n"“”„«»'
_ELLIPSIS = re.compile(r"\s*(?:\[\s*(?:…|\.{2,})\s*\]|\(\s*(?:…|\.{2,})\s*\)|…|\.\s?\.\s?\.+)\s*")
# What the normalised form rewrites: runs of two or more whitespace characters, and non-ASCII.
_NORMALISED_SPECIAL = re.compile(r"\s{2,}|[^\x00-\x7f]+")
_WHITESPACE_TO_SPACE = str.maketrans("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f", " " * 9)
# What the letters-and-digits form keeps from ASCII text, and the non-ASCII it has to fold.
_ALNUM_SPECIAL = re.compile(r"[A-Za-z0-9]+|[^\x00-\x7f]+")
# Tokens a fuzzy or punctuation-blind match may not change (read from the normalised form).
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_COMPARATOR = re.compile(r"[<>≤≥≦≧≪≫]")
_NEGATION = re.compile(
    r"\b(?:no|not|non|never|none|nor|neither|without|cannot|nobody|nothing|absent)\b|n't\b"
)
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_LETTERS = re.compile(r"[^\W\d_]+")
_LONG_WORD = re.compile(r"[^\W\d_]{4,}")


class MatchMethod(StrEnum):
    """How a quote was found: word for word, with spelling noise ignored, or approximately."""

    EXACT = "exact"
    NORMALISED = "normalised"
    FUZZY = "fuzzy"


@dataclass(frozen=True)
class Location:
    """Where a quote is: a span of the document text, its page, and how it was matched.

    ``score`` is the similarity (0..1) of quote and span: 1.0 for exact and normalised matches.
    """

    char_start: int
    char_end: int
    page: int
    method: MatchMethod = MatchMethod.EXACT
    score: float = 1.0

    @property
    def confidence_factor(self) -> float:
        """How much to trust the value relative to an exact quote: 1.0 unless fuzzy.

        A fuzzy match at similarity s scales confidence by ``1 - 2 * (1 - s)`` (0.9 → 0.8,
        0.95 → 0.9), never below 0.5: the quote is probably there, but a word or two differ,
        and that word may be the one the value rests on.
        """
        if self.method is not MatchMethod.FUZZY:
            return 1.0
        return max(_MIN_CONFIDENCE_FACTOR, round(1 - 2 * (1 - self.score), 4))

    def adjust_confidence(self, confidence: float | None) -> float | None:
        """The model's 0..1 confidence scaled by :attr:`confidence_factor` (None stays None)."""
        if confidence is None:
            return None
        return round(confidence * self.confidence_factor, 4)


# ---------------------------------------------------------------------------------------------
# Folded forms of a text, with a map back to original offsets


def _fold(text: str) -> str:
    """Compatibility form, one quote and dash style, no soft hyphens, case folded."""
    return unicodedata.normalize("NFKC", text).translate(_TRANSLATE).casefold()


class _Folded:
    """A folded copy of a text and the map from its offsets back to the original's.

    The map is a list of segments, each a run where folded offset ``start + i`` came from
    original offset ``origin + i``; a new segment starts wherever the two drift apart (a
    collapsed whitespace run, a dropped character, a ligature expanded). Kept in ``array``s:
    a 300-page document has tens of thousands of segments.
    """

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._length = 0
        self.starts = array("q")
        self.origins = array("q")
        self.text = ""

    @property
    def ends_with_space(self) -> bool:
        return not self._pieces or self._pieces[-1].endswith(" ")

    def emit(self, piece: str, origin: int) -> None:
        """Append ``piece``, whose characters came from consecutive offsets from ``origin``."""
        if not piece:
            return
        if not self.starts or self.origins[-1] - self.starts[-1] != origin - self._length:
            self.starts.append(self._length)
            self.origins.append(origin)
        self._pieces.append(piece)
        self._length += len(piece)

    def finish(self) -> _Folded:
        self.text = "".join(self._pieces)
        self._pieces = []
        return self

    def origin(self, offset: int) -> int:
        """The original offset of folded character ``offset``."""
        k = bisect.bisect_right(self.starts, offset) - 1
        return self.origins[k] + (offset - self.starts[k])

    def offset_of(self, origin: int) -> int:
        """The first folded offset that came from original offset ``origin`` or later."""
        k = bisect.bisect_right(self.origins, origin) - 1
        if k < 0:
            return 0
        offset = self.starts[k] + (origin - self.origins[k])
        following = self.starts[k + 1] if k + 1 < len(self.starts) else len(self.text)
        return min(offset, following)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original ``[start, end)`` of folded ``[start, end)`` (``end > start``)."""
        return self.origin(start), self.origin(end - 1) + 1


def _emit_char_by_char(out: _Folded, run: str, origin: int, keep: Callable[[str], bool]) -> None:
    for index, char in enumerate(run):
        for piece in _fold(char):
            if piece.isspace():
                if keep(" ") and not out.ends_with_space:
                    out.emit(" ", origin + index)
            elif keep(piece):
                out.emit(piece, origin + index)


def _normalised_form(text: str) -> _Folded:
    """Folded, whitespace runs collapsed to one space, no leading or trailing space."""
    out = _Folded()

    def ascii_run(start: int, end: int) -> None:
        piece = text[start:end].lower().translate(_WHITESPACE_TO_SPACE)
        if piece.startswith(" ") and out.ends_with_space:
            piece, start = piece[1:], start + 1
        out.emit(piece, start)

    position = 0
    for match in _NORMALISED_SPECIAL.finditer(text):
        ascii_run(position, match.start())
        run = match.group()
        if run.isspace():
            if not out.ends_with_space:
                out.emit(" ", match.start())
        else:
            folded = _fold(run)
            if len(folded) == len(run) and not any(c.isspace() for c in folded):
                out.emit(folded, match.start())
            else:
                _emit_char_by_char(out, run, match.start(), lambda _: True)
        position = match.end()
    ascii_run(position, len(text))
    result = out.finish()
    if result.text.endswith(" "):
        result.text = result.text[:-1]
    return result


def _alnum_form(text: str) -> _Folded:
    """Folded letters and digits only: punctuation, spacing and hyphenation disappear."""
    out = _Folded()
    # One iteration per word of the document: the common ASCII case is inlined (no calls).
    pieces, starts, origins = out._pieces, out.starts, out.origins
    length, drift = 0, -1
    for match in _ALNUM_SPECIAL.finditer(text):
        run, origin = match.group(), match.start()
        if run.isascii():
            if origin - length != drift:
                drift = origin - length
                starts.append(length)
                origins.append(origin)
            pieces.append(run.lower())
            length += len(run)
            continue
        out._length = length
        folded = _fold(run)
        if len(folded) == len(run) and folded.isalnum():
            out.emit(folded, origin)
        else:
            _emit_char_by_char(out, run, origin, str.isalnum)
        length = out._length
        drift = origins[-1] - starts[-1] if starts else -1
    out._length = length
    return out.finish()


@lru_cache(maxsize=8)
def _normalised_document(text: str) -> _Folded:
    return _normalised_form(text)


@lru_cache(maxsize=8)
def _alnum_document(text: str) -> _Folded:
    return _alnum_form(text)


# ---------------------------------------------------------------------------------------------
# What a punctuation-blind or approximate match may not change


def _number_key(token: str) -> str:
    """1,234 and 1234 are one number; 3,5 is 3.5 (a decimal comma); 3.5 is never 35."""
    if _THOUSANDS.fullmatch(token):
        return token.replace(",", "")
    return token.replace(",", ".")


def _is_subsequence(needle: Sequence[str], haystack: Sequence[str]) -> bool:
    remaining = iter(haystack)
    return all(any(item == other for other in remaining) for item in needle)


def _words_nearly_kept(quote: str, matched: str) -> bool:
    """Whether every word of four or more letters in the quote is in the match, give or take
    one letter ("randomized" for "randomised", "occured" for "occurred").

    Two letters are already a different word often enough ("increased" / "decreased",
    "included" / "excluded", "likely" / "unlikely") that a fuzzy match must not pass them.
    Words the PDF broke at a line end ("treat-" "ment") count joined up too.
    """
    found = _LETTERS.findall(matched)
    candidates = set(found) | {a + b for a, b in pairwise(found)}
    return all(
        word in candidates
        or any(Levenshtein.distance(word, c, score_cutoff=1) <= 1 for c in candidates)
        for word in set(_LONG_WORD.findall(quote))
    )


def _keeps_meaning(quote: str, matched: str, *, fuzzy: bool = False) -> bool:
    """Whether the matched text has the quote's numbers (in order), comparisons and negations,
    and for a fuzzy match its words (see :func:`_words_nearly_kept`).

    Extra numbers in the match are allowed (a footnote mark, a page number between two pages);
    a different or missing one is not.
    """
    q, m = _normalised_form(quote).text, _normalised_form(matched).text
    q_numbers = [_number_key(t) for t in _NUMBER.findall(q)]
    m_numbers = [_number_key(t) for t in _NUMBER.findall(m)]
    return (
        _is_subsequence(q_numbers, m_numbers)
        and _COMPARATOR.findall(q) == _COMPARATOR.findall(m)
        and sorted(_NEGATION.findall(q)) == sorted(_NEGATION.findall(m))
        and (not fuzzy or _words_nearly_kept(q, m))
    )


# ---------------------------------------------------------------------------------------------
# The stages, each looking for `quote` within original offsets [lo, hi)


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    method: MatchMethod
    score: float = 1.0


def _whole_words(needle: str) -> re.Pattern[str]:
    before = r"(?<!\w)" if re.match(r"\w", needle) else ""
    after = r"(?!\w)" if re.search(r"\w$", needle) else ""
    return re.compile(before + re.escape(needle) + after)


def _find(needle: str, haystack: str, lo: int, hi: int, whole_words: bool) -> int:
    if not whole_words:
        return haystack.find(needle, lo, hi)
    match = _whole_words(needle).search(haystack, lo, hi)
    return match.start() if match else -1


def _exact(text: str, quote: str, lo: int, hi: int, short: bool) -> _Span | None:
    start = _find(quote, text, lo, hi, whole_words=short)
    return None if start < 0 else _Span(start, start + len(quote), MatchMethod.EXACT)


def _normalised(text: str, quote: str, lo: int, hi: int, short: bool) -> _Span | None:
    document = _normalised_document(text)
    needle = _normalised_form(quote).text
    if not needle:
        return None
    lo_f, hi_f = document.offset_of(lo), document.offset_of(hi)
    found = _find(needle, document.text, lo_f, hi_f, whole_words=short)
    if found < 0:
        return None
    start, end = document.span(found, found + len(needle))
    return _Span(start, end, MatchMethod.NORMALISED)


def _letters_and_digits(text: str, quote: str, lo: int, hi: int) -> _Span | None:
    document = _alnum_document(text)
    needle = _alnum_form(quote).text
    lo_f, hi_f = document.offset_of(lo), document.offset_of(hi)
    found = document.text.find(needle, lo_f, hi_f)
    while found >= 0:
        start, end = document.span(found, found + len(needle))
        if _keeps_meaning(quote, text[start:end]):
            return _Span(start, end, MatchMethod.NORMALISED)
        found = document.text.find(needle, found + 1, hi_f)
    return None


def _widen_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Extend a span that cuts a word in two to the whole word (a few characters at most)."""
    limit = 40
    floor = max(0, start - limit)
    while start > floor and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    ceiling = min(len(text), end + limit)
    while end < ceiling and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


def _fuzzy(text: str, quote: str, lo: int, hi: int, threshold: float) -> _Span | None:
    document = _alnum_document(text)
    needle = _alnum_form(quote).text
    windows = [(document.offset_of(lo), document.offset_of(hi))]
    for _ in range(_MAX_FUZZY_CANDIDATES):
        best: tuple[float, int, int, int] | None = None  # score, window index, start, end
        for index, (a, b) in enumerate(windows):
            if b - a < len(needle):
                continue
            alignment = fuzz.partial_ratio_alignment(
                needle, document.text[a:b], score_cutoff=threshold * 100
            )
            if alignment is not None and (best is None or alignment.score > best[0]):
                best = (alignment.score, index, a + alignment.dest_start, a + alignment.dest_end)
        if best is None:
            return None
        score, index, found_start, found_end = best
        start, end = _widen_to_words(text, *document.span(found_start, found_end))
        if _keeps_meaning(quote, text[start:end], fuzzy=True):
            return _Span(start, end, MatchMethod.FUZZY, round(score / 100, 4))
        # The closest stretch changes a number, a negation or a word: look elsewhere.
        a, b = windows.pop(index)
        windows[index:index] = [(a, found_start), (found_end, b)]
    return None


def _locate_part(
    text: str, quote: str, lo: int, hi: int, threshold: float, fuzzy: bool
) -> _Span | None:
    short = len(_alnum_form(quote).text) < MIN_FUZZY_CHARS
    span = _exact(text, quote, lo, hi, short) or _normalised(text, quote, lo, hi, short)
    if span is not None or short:
        return span
    span = _letters_and_digits(text, quote, lo, hi)
    if span is None and fuzzy:
        span = _fuzzy(text, quote, lo, hi, threshold)
    return span


def _weakest(spans: Sequence[_Span]) -> tuple[MatchMethod, float]:
    order = list(MatchMethod)
    method = max((s.method for s in spans), key=order.index)
    return method, min(s.score for s in spans)


def _locate_parts(text: str, parts: Sequence[str], threshold: float, fuzzy: bool) -> _Span | None:
    """An ellipsis quote: each part after the previous one, at most MAX_ELLIPSIS_GAP later."""
    lo = 0
    for _ in range(_MAX_ELLIPSIS_TRIES):
        first = _locate_part(text, parts[0], lo, len(text), threshold, fuzzy)
        if first is None:
            return None
        spans = [first]
        for part in parts[1:]:
            after = spans[-1].end
            hi = min(len(text), after + MAX_ELLIPSIS_GAP + len(part))
            span = _locate_part(text, part, after, hi, threshold, fuzzy)
            if span is None:
                break
            spans.append(span)
        else:
            # The tightest span: the last occurrence of the first part before the second.
            while (
                later := _locate_part(
                    text, parts[0], spans[0].start + 1, spans[1].start, threshold, fuzzy=False
                )
            ) is not None:
                spans[0] = later
            method, score = _weakest(spans)
            return _Span(spans[0].start, spans[-1].end, method, score)
        if first.method is MatchMethod.FUZZY:
            return None  # the best approximate place did not work out; do not guess further
        lo = first.start + 1
    return None


def _page_of(offset: int, page_starts: Sequence[int]) -> int:
    return max(1, bisect.bisect_right(page_starts, offset))


def _clean_quote(quote: str) -> str:
    return quote.strip(_QUOTE_ENDS)


def locate_evidence(
    text: str,
    page_starts: Sequence[int],
    quote: str,
    *,
    fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD,
) -> Location | None:
    """Where ``quote`` occurs in ``text`` (page numbers from each page's start offset), or None.

    ``fuzzy_threshold`` is the similarity (0..1) an approximate match needs; 1.0 turns the
    fuzzy stage off. See the module docstring for the stages and safeguards.
    """
    quote = _clean_quote(quote)
    if len(quote) < 2 or not text:
        return None
    fuzzy = fuzzy_threshold < 1.0
    parts = [p for p in (_clean_quote(p) for p in _ELLIPSIS.split(quote)) if _alnum_form(p).text]
    if not parts:
        return None
    if len(parts) == 1:
        span = _locate_part(text, parts[0], 0, len(text), fuzzy_threshold, fuzzy)
        if span is None and parts[0] != quote:  # the "ellipsis" may be the document's own
            span = _locate_part(text, quote, 0, len(text), fuzzy_threshold, fuzzy)
    else:
        span = _locate_part(text, quote, 0, len(text), fuzzy_threshold, fuzzy=False)
        if span is None:
            span = _locate_parts(text, parts, fuzzy_threshold, fuzzy)
    if span is None:
        return None
    return Location(
        span.start, span.end, _page_of(span.start, page_starts), span.method, span.score
    )
