"""Whether the evidence supports the value: grounding says the quote is in the document; this
says the value is in the quote.

Against a real model, "grounded" was not enough: ``sample_size = 240`` and ``randomised =
true`` both came back with the evidence "mean age 54.3 years", which is in the document, and
grouped answers quoted bare values ("240", "2021"), which are in it too. So, after grounding:

1. **Bare-value quotes are widened.** A quote that is only the value, or too short to say
   anything (fewer than :data:`MIN_QUOTE_CHARS` letters and digits), is widened to the
   sentence of the document it was found in; that sentence becomes the evidence and its span
   the highlight.
2. **A support check per type**, against the quote and the sentence it is in
   (:func:`check_support`):

   - *integer / number*: the value occurs as a number — in digits ("1,234", "3.5"), with a
     scale ("1.5 million"), in words ("sixty-four"), after "n =", or as a percentage of it
     ("3.5%" for 0.035 or 3.5);
   - *date*: its year occurs, and its month (by name, abbreviation or in a numeric date) and
     day when it has them ("March 2019", "12/03/2019", "2019-03-12");
   - *text*: its words occur (give or take endings); *list*: every item's words do;
   - *boolean*: cue words — the variable's name or label ("randomised" for "Randomised
     trial") — must occur, and their polarity must match the value ("not randomised",
     "non-randomised", "randomised: no" read as false);
   - *category / multi_category*: the chosen allowed value's words must occur; a passage
     naming only another allowed value does not support it.

Outcomes (:class:`Support`): ``supported``; ``unsupported`` (the value, or its cue words with
the right polarity, is not there: flagged ``unsupported_evidence``); ``unchecked`` (a boolean or
category whose cue words the passage lacks, or a text value only partly echoed — the check
cannot tell). A value without any evidence is ``unsupported``.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from quarry.variables.types import JsonValue, TypeSpec, VariableType

#: Quotes with fewer letters and digits than this say nothing on their own: widened.
MIN_QUOTE_CHARS = 12
#: How far (characters) a sentence may reach either side of a bare quote.
MAX_SENTENCE_REACH = 400
#: The highest confidence an unsupported value may carry.
UNSUPPORTED_CONFIDENCE_CAP = 0.5


class Support(StrEnum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    UNCHECKED = "unchecked"


# ---------------------------------------------------------------------------------------------
# Folding and words

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "to",
        "was",
        "were",
        "with",
        "whether",
        "what",
        "which",
        "who",
        "how",
        "many",
        "much",
        "number",
        "total",
        "study",
        "trial",
        "patients",
        "participants",
        "value",
        "date",
        "type",
        "yes",
        "no",
    ]
)
_NEGATIONS = frozenset(
    [
        "no",
        "not",
        "non",
        "never",
        "none",
        "nor",
        "neither",
        "without",
        "cannot",
        "absent",
        "lack",
        "lacking",
        "false",
    ]
)
_AFFIRMATIONS = frozenset(["yes", "true"])


def fold(text: str) -> str:
    """Compatibility form, case folded, one dash and quote style."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\u2010-\u2015\u2212]", "-", text).replace("\u2019", "'")


def words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


def _stem(word: str) -> str:
    """Endings ignored: "randomised", "randomized", "randomly" and "randomisation" agree."""
    return word[:5] if len(word) > 5 else word


def _stems(text: str) -> list[str]:
    return [_stem(w) for w in words(text)]


def _content_stems(text: str) -> list[str]:
    return [_stem(w) for w in words(text) if w not in _STOPWORDS and (len(w) > 2 or w.isdigit())]


def alnum_length(text: str) -> int:
    return sum(1 for c in text if c.isalnum())


# ---------------------------------------------------------------------------------------------
# Bare quotes and sentences

_SENTENCE_END = re.compile(r"[.!?;](?=[\s\"')\]]|$)|\n\s*\n")


def sentence_span(
    text: str, start: int, end: int, lo: int = 0, hi: int | None = None
) -> tuple[int, int]:
    """The sentence of ``text`` around ``[start, end)``, within ``[lo, hi)`` and at most
    :data:`MAX_SENTENCE_REACH` characters either side. A sentence ends at ". ", "! ", "? ",
    "; " or a blank line (a PDF's single line breaks fall inside sentences); a dot inside a
    number ("54.3") ends nothing."""
    hi = len(text) if hi is None else hi
    floor, ceiling = max(lo, start - MAX_SENTENCE_REACH), min(hi, end + MAX_SENTENCE_REACH)
    left = floor
    for match in _SENTENCE_END.finditer(text, floor, start):
        left = match.end()
    right = ceiling
    after = _SENTENCE_END.search(text, end, ceiling)
    if after is not None:
        right = after.start() + (1 if after.group()[0] in ".!?" else 0)
    while left < start and text[left].isspace():
        left += 1
    while right > end and text[right - 1].isspace():
        right -= 1
    return left, right


def is_bare_quote(quote: str, value: JsonValue) -> bool:
    """Whether a quote is only the value (or too short to say anything): widen it."""
    if alnum_length(quote) < MIN_QUOTE_CHARS:
        return True
    shown = value if isinstance(value, str) else _show(value)
    return _alnum(quote) == _alnum(shown)


def _alnum(text: str) -> str:
    return "".join(c for c in fold(text) if c.isalnum())


def _show(value: JsonValue) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Numbers in text

_DIGITS = re.compile(
    r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+(?![\d])|\d+)(?:[.,]\d+)?"
    r"(?:\s*(%|per ?cent|percent|thousand|million|billion|k\b|bn\b))?",
    re.IGNORECASE,
)
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALE_WORDS = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9}
_SCALE_SUFFIX = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "k": 10**3, "bn": 10**9}


def _digit_numbers(text: str) -> Iterable[Decimal]:
    for match in _DIGITS.finditer(text):
        body = match.group()
        suffix = match.group(1)
        if suffix:
            body = body[: match.start(1) - match.start()].strip()
        body = body.replace("−", "-").replace(" ", "")
        if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", body):
            body = body.replace(",", "")
        else:
            body = body.replace(",", ".")  # a decimal comma ("3,5")
        try:
            number = Decimal(body)
        except InvalidOperation:
            continue
        yield number
        if suffix:
            key = suffix.lower().replace(" ", "")
            if key in ("%", "percent"):
                yield number / 100  # "3.5%" supports 0.035 as well as 3.5
            elif key in _SCALE_SUFFIX:
                yield number * _SCALE_SUFFIX[key]


def _word_numbers(text: str) -> Iterable[Decimal]:
    """Numbers written in words: "sixty-four", "one hundred and twelve", "two thousand"."""
    total, current, active = 0, 0, False
    for word in [*re.findall(r"[a-z]+", fold(text)), ""]:
        if word in _UNITS:
            current += _UNITS[word]
            active = True
        elif word in _TENS:
            current += _TENS[word]
            active = True
        elif word in _SCALE_WORDS and active:
            scale = _SCALE_WORDS[word]
            if scale == 100:
                current *= 100
            else:
                total += current * scale
                current = 0
        elif word == "and" and active:
            continue
        else:
            if active:
                yield Decimal(total + current)
            total, current, active = 0, 0, False


def numbers_in(text: str) -> set[Decimal]:
    return {*_digit_numbers(text), *_word_numbers(text)}


def _number_supported(value: JsonValue, passage: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        target = Decimal(str(value))
    except InvalidOperation:
        return False
    for number in numbers_in(passage):
        if number == target or number == -target:  # "a fall of 3" for -3
            return True
        if target and math.isclose(float(number), float(target), rel_tol=1e-9):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Dates

_MONTH_NAMES = (
    ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
    ("may", "may"), ("june", "jun"), ("july", "jul"), ("august", "aug"),
    ("september", "sep"), ("october", "oct"), ("november", "nov"), ("december", "dec"),
)  # fmt: skip
_NUMERIC_DATE = re.compile(r"\b(\d{1,4})[-/.](\d{1,2})(?:[-/.](\d{1,4}))?\b")


def _date_supported(value: JsonValue, passage: str) -> bool:
    if not isinstance(value, str):
        return False
    parts = value.split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else None
        day = int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        return False
    text = fold(passage)
    if not re.search(rf"(?<!\d){year}(?!\d)", text):
        return False
    if month is None:
        return True
    numeric = [
        {int(g) for g in m.groups() if g is not None}
        for m in _NUMERIC_DATE.finditer(text)
        if str(year) in m.groups()
    ]
    full, short = _MONTH_NAMES[month - 1]
    named = re.search(rf"\b(?:{full}|{short})\b", text) is not None
    if not named and not any(month in parts for parts in numeric):
        return False
    if day is None:
        return True
    if any(month in parts and day in parts for parts in numeric):
        return True
    return re.search(rf"(?<!\d)0?{day}(?:st|nd|rd|th)?(?!\d)", text) is not None


# ---------------------------------------------------------------------------------------------
# Words: text, lists, categories, booleans


def _coverage(value: str, passage_stems: set[str]) -> float | None:
    """The share of the value's content words found in the passage (None: it has none)."""
    wanted = _content_stems(value) or _stems(value)
    if not wanted:
        return None
    return sum(1 for w in wanted if w in passage_stems) / len(wanted)


def _phrase_in(phrase: str, passage: str) -> bool:
    """The phrase's words, in order and adjacent, in the passage (endings ignored)."""
    needle, haystack = _stems(phrase), _stems(passage)
    if not needle:
        return False
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def _text_support(value: JsonValue, passage: str) -> Support:
    if not isinstance(value, str):
        return Support.UNCHECKED
    if _alnum(value) and _alnum(value) in _alnum(passage):
        return Support.SUPPORTED
    share = _coverage(value, set(_stems(passage)))
    if share is None:
        return Support.UNCHECKED
    if share >= 0.999:
        return Support.SUPPORTED
    return Support.UNCHECKED if share >= 0.5 else Support.UNSUPPORTED


def _list_support(value: JsonValue, passage: str) -> Support:
    if not isinstance(value, list) or not value:
        return Support.UNCHECKED
    results = {_text_support(item, passage) for item in value}
    if results == {Support.SUPPORTED}:
        return Support.SUPPORTED
    if Support.UNSUPPORTED in results:
        return Support.UNSUPPORTED
    return Support.UNCHECKED


def _category_support(spec: TypeSpec, chosen: Sequence[str], passage: str) -> Support:
    if not chosen:
        return Support.UNCHECKED  # "none apply" has no words to look for
    present = [_phrase_in(c, passage) for c in chosen]
    if all(present):
        return Support.SUPPORTED
    others = [a for a in spec.allowed_values if a not in chosen]
    if not any(present) and any(_phrase_in(a, passage) for a in others):
        return Support.UNSUPPORTED  # it names another category, not this one
    return Support.UNCHECKED


@functools.lru_cache(maxsize=4096)
def cue_words(*names: str) -> tuple[str, ...]:
    """The cue words of a variable (from its name and label): what a boolean's evidence must
    mention. "randomised" from "Randomised?" and "is_randomised"; stop words dropped.
    Asked for every pair, with a codebook's few names: remembered."""
    found: list[str] = []
    for name in names:
        for word in words(name.replace("_", " ")):
            if word not in _STOPWORDS and len(word) > 2 and not word.isdigit():
                stem = _stem(word)
                if stem not in found:
                    found.append(stem)
    return tuple(found)


def _boolean_support(value: JsonValue, cues: Sequence[str], passage: str) -> Support:
    if not isinstance(value, bool) or not cues:
        return Support.UNCHECKED
    tokens = words(passage)
    stems = [_stem(w) for w in tokens]
    hits = [i for i, s in enumerate(stems) if s in cues]
    if not hits:
        return Support.UNCHECKED
    negated = any(_negated_at(tokens, i) for i in hits)
    affirmed = any(not _negated_at(tokens, i) for i in hits)
    if (value and affirmed) or (not value and negated):
        return Support.SUPPORTED
    return Support.UNSUPPORTED


def _negated_at(tokens: Sequence[str], i: int) -> bool:
    """A cue word negated: by a negation up to four words before it ("were not randomised",
    "non-randomised", "no evidence of blinding"), or answered "no" right after it
    ("Randomised: No"); "yes" after it affirms."""
    after = tokens[i + 1 : i + 2]
    if after and after[0] in _AFFIRMATIONS:
        return False
    if after and after[0] in ("no", "false"):
        return True
    return any(t in _NEGATIONS or t.endswith("n't") for t in tokens[max(0, i - 4) : i])


def check_support(
    spec: TypeSpec, value: JsonValue, passage: str, cues: Sequence[str] = ()
) -> Support:
    """Whether ``passage`` (the quote and the sentence it is in) supports ``value``; see the
    module docstring for the rule of each type."""
    if not passage.strip():
        return Support.UNSUPPORTED
    kind = spec.type
    if kind in (VariableType.INTEGER, VariableType.NUMBER):
        return Support.SUPPORTED if _number_supported(value, passage) else Support.UNSUPPORTED
    if kind is VariableType.DATE:
        return Support.SUPPORTED if _date_supported(value, passage) else Support.UNSUPPORTED
    if kind is VariableType.TEXT:
        return _text_support(value, passage)
    if kind is VariableType.LIST:
        return _list_support(value, passage)
    if kind is VariableType.CATEGORY:
        return _category_support(spec, [value] if isinstance(value, str) else [], passage)
    if kind is VariableType.MULTI_CATEGORY:
        chosen = [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
        return _category_support(spec, chosen, passage)
    if kind is VariableType.BOOLEAN:
        return _boolean_support(value, cues, passage)
    return Support.UNCHECKED
