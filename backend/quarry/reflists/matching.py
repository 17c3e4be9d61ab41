"""Matching an extracted value to a column of a reference list (pure: no database).

Four methods, each a normalisation and a way to compare:

- ``name``: people's and organisations' names. Accents, case and punctuation are dropped and
  the words sorted, so "SMITH, John", "john smith" and "Jöhn Smith" are the same key. Then
  fuzzy, with rapidfuzz's token-sort ratio (word order does not matter, a misspelt letter
  costs a little), and initials: "J. Smith" scores against "John Smith" as if the list had
  written "J Smith", less a small penalty, since an initial says less than a name.
- ``identifier``: client numbers, policy numbers. Only spacing, punctuation and case are
  tolerated ("AB-12 345" is "ab12345"); no fuzzy matching, a different digit is a different
  client.
- ``date``: both sides parsed as dates (variables/values.py) and compared exactly.
- ``exact``: the text with its surrounding and repeated whitespace dropped, exactly.

A value is ``matched`` when its best row scores at least `thresholds.match` and no row with
another key comes within `thresholds.margin` of it; ``ambiguous`` when it scores that well but
another key does (two clients with the same name), or when the best score is only above
`thresholds.review`; else ``unmatched``. Several rows with the same key (a list with
duplicates) count as one.

Speed: a list is normalised once per (version, column, method) into a `Matcher`, kept by the
caller; values are scored against all rows at once with `rapidfuzz.process.cdist`, a few
hundred values at a time so the score matrix stays a few megabytes whatever the list's size.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from quarry.variables.types import InvalidValue
from quarry.variables.values import parse_date


class MatchMethod(StrEnum):
    NAME = "name"
    IDENTIFIER = "identifier"
    DATE = "date"
    EXACT = "exact"


class MatchStatus(StrEnum):
    MATCHED = "matched"
    AMBIGUOUS = "ambiguous"
    UNMATCHED = "unmatched"


@dataclass(frozen=True)
class Thresholds:
    #: The lowest score (0..100) that matches on its own.
    match: float = 88.0
    #: Another key this close to the best makes the match ambiguous.
    margin: float = 4.0
    #: Scores from here up to `match` are shown for review (ambiguous).
    review: float = 70.0


#: Candidates kept per value (shown to the reviewer).
CANDIDATES = 5
#: Values scored per cdist call: the score matrix is this × the list's rows bytes.
_QUERY_CHUNK = 128
#: What an initial costs: "J Smith" against "John Smith" scores at most this.
_INITIAL_SCORE = 94.0

_NON_WORD = re.compile(r"[\W_]+")


def _plain(text: str) -> str:
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def normalise(method: MatchMethod, raw: Any) -> str | None:
    """The value's comparison key for `method`, or None when it has none (blank, not a date)."""
    if raw is None or isinstance(raw, list | dict):
        return None
    text = str(raw).strip()
    if not text:
        return None
    if method is MatchMethod.NAME:
        words = _NON_WORD.sub(" ", _plain(text)).split()
        return " ".join(sorted(words)) or None
    if method is MatchMethod.IDENTIFIER:
        return _NON_WORD.sub("", _plain(text)) or None
    if method is MatchMethod.DATE:
        try:
            return parse_date(text)
        except InvalidValue:
            return None
    return " ".join(text.split())


@dataclass(frozen=True)
class Candidate:
    key: str
    row_number: int
    value: str
    score: float

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "row_number": self.row_number,
            "value": self.value,
            "score": self.score,
        }


@dataclass(frozen=True)
class MatchResult:
    status: MatchStatus
    key: str | None
    score: float | None
    candidates: list[Candidate] = field(default_factory=list)


@dataclass(frozen=True)
class ListRow:
    row_number: int
    value: str
    key: str


class Matcher:
    """One list column normalised for one method, ready to match many values."""

    def __init__(self, method: MatchMethod, rows: Sequence[ListRow]) -> None:
        self.method = method
        self._rows = list(rows)
        self._normalised: list[str] = []
        self._positions: list[int] = []
        self._exact: dict[str, list[int]] = {}
        self._words: dict[str, list[int]] | None = None
        for position, row in enumerate(self._rows):
            norm = normalise(method, row.value)
            if norm is None:
                continue
            self._exact.setdefault(norm, []).append(position)
            self._normalised.append(norm)
            self._positions.append(position)

    @property
    def size(self) -> int:
        return len(self._rows)

    def match_many(self, values: Sequence[Any], thresholds: Thresholds) -> list[MatchResult]:
        """The match of each value, in order."""
        keys = [normalise(self.method, v) for v in values]
        results: list[MatchResult | None] = [None] * len(values)
        fuzzy: list[int] = []
        for i, norm in enumerate(keys):
            if norm is None:
                results[i] = MatchResult(MatchStatus.UNMATCHED, None, None)
                continue
            exact = self._exact.get(norm)
            if exact:
                results[i] = self._decide([(p, 100.0) for p in exact], thresholds, exact_hit=True)
            elif self.method is MatchMethod.NAME and self._normalised:
                fuzzy.append(i)
            else:
                results[i] = MatchResult(MatchStatus.UNMATCHED, None, None)
        for start in range(0, len(fuzzy), _QUERY_CHUNK):
            chunk = fuzzy[start : start + _QUERY_CHUNK]
            for i, scored in zip(
                chunk, self._fuzzy([str(keys[i]) for i in chunk], thresholds), strict=True
            ):
                results[i] = self._decide(scored, thresholds, exact_hit=False)
        return [r for r in results if r is not None]

    def _fuzzy(self, queries: list[str], thresholds: Thresholds) -> list[list[tuple[int, float]]]:
        """For each normalised query, its best rows (position, score), best first."""
        floor = max(0, int(thresholds.review) - 15)
        matrix = process.cdist(
            queries,
            self._normalised,
            # The keys' words are sorted already: plain ratio is the token-sort ratio, and
            # lets rapidfuzz compare one value with many rows at once (SIMD).
            scorer=fuzz.ratio,
            dtype=np.uint8,
            score_cutoff=floor,
            workers=1,
        )
        out: list[list[tuple[int, float]]] = []
        keep = min(len(self._normalised), CANDIDATES * 4)
        for query, scores in zip(queries, matrix, strict=True):
            top = np.argpartition(scores, -keep)[-keep:]
            scored: list[tuple[int, float]] = []
            for index in top:
                base = float(scores[index])
                norm = self._normalised[int(index)]
                score = max(base, _initials_score(query, norm))
                if score >= floor:
                    scored.append((self._positions[int(index)], score))
            # Initials can lift a row the ratio scored below the cut: check the rows that
            # share a surname-length word with the query, cheaply, only when it has initials.
            if _has_initial(query):
                seen = {p for p, _ in scored}
                for extra in self._initial_rows(query):
                    if extra not in seen:
                        score = _initials_score(
                            query, normalise(self.method, self._rows[extra].value) or ""
                        )
                        if score >= floor:
                            scored.append((extra, score))
            scored.sort(key=lambda item: -item[1])
            out.append(scored)
        return out

    def _initial_rows(self, query: str) -> list[int]:
        """Rows containing every full (non-initial) word of the query, through a word index
        built the first time a value with initials comes (most lists never need it)."""
        words = [w for w in query.split() if len(w) > 1]
        if not words:
            return []
        if self._words is None:
            index: dict[str, list[int]] = {}
            for norm, position in zip(self._normalised, self._positions, strict=True):
                for word in set(norm.split()):
                    index.setdefault(word, []).append(position)
            self._words = index
        postings = sorted((self._words.get(w, []) for w in words), key=len)
        hits = set(postings[0])
        for other in postings[1:]:
            hits.intersection_update(other)
        return sorted(hits)[: CANDIDATES * 4]

    def _decide(
        self, scored: list[tuple[int, float]], thresholds: Thresholds, exact_hit: bool
    ) -> MatchResult:
        best_by_key: dict[str, Candidate] = {}
        for position, score in scored:
            row = self._rows[position]
            known = best_by_key.get(row.key)
            if known is None or score > known.score:
                best_by_key[row.key] = Candidate(
                    row.key, row.row_number, row.value, round(score, 1)
                )
        candidates = sorted(best_by_key.values(), key=lambda c: (-c.score, c.row_number))
        candidates = candidates[:CANDIDATES]
        if not candidates:
            return MatchResult(MatchStatus.UNMATCHED, None, None)
        best = candidates[0]
        rival = len(candidates) > 1 and candidates[1].score >= best.score - thresholds.margin
        if (exact_hit or best.score >= thresholds.match) and not rival:
            return MatchResult(MatchStatus.MATCHED, best.key, best.score, candidates)
        if best.score >= thresholds.review:
            return MatchResult(MatchStatus.AMBIGUOUS, None, best.score, candidates)
        return MatchResult(MatchStatus.UNMATCHED, None, best.score, candidates)


def _has_initial(normalised: str) -> bool:
    return any(len(w) == 1 for w in normalised.split())


def _initials_score(query: str, candidate: str) -> float:
    """The query against the candidate with the candidate's words shortened to the query's
    initials ("j smith" against "john smith" → "j smith"), capped below a full match."""
    q_words = query.split()
    initials = [w for w in q_words if len(w) == 1]
    if not initials:
        return 0.0
    c_words = candidate.split()
    if len(c_words) < len(q_words):
        return 0.0
    shortened = list(c_words)
    for initial in initials:
        for i, word in enumerate(shortened):
            if len(word) > 1 and word.startswith(initial) and word not in q_words:
                shortened[i] = initial
                break
        else:
            return 0.0
    score = fuzz.token_sort_ratio(query, " ".join(shortened))
    return min(float(score), _INITIAL_SCORE) if score >= 90 else 0.0
