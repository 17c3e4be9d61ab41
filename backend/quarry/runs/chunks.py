"""Long documents: overlapping chunks, and the ones most relevant to a variable.

A document longer than the context budget (`QUARRY_LLM_MAX_DOCUMENT_CHARS`) is split into
overlapping chunks that remember their pages. For each variable the chunks are ranked by how
well they match what the variable is about — its name, label, description, instructions,
examples and allowed values — with BM25, the ranking function of classic search engines
(no model to download, deterministic, fast on thousands of pages). The opening chunk always
goes first (titles, abstracts and headers say what a document is); the best-ranked others
fill the rest of the budget; the chosen chunks are sent in document order.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: Chunk length in characters (a few pages), and the overlap between neighbours, so that a
#: passage cut at a chunk boundary is still whole in one of them.
CHUNK_CHARS = 6000
OVERLAP_CHARS = 600

_WORD = re.compile(r"[^\W_]{2,}", re.UNICODE)
#: Words too common to say what a passage is about (English; other languages simply keep all).
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "was",
        "were",
        "with",
        "that",
        "this",
        "from",
        "have",
        "has",
        "had",
        "not",
        "but",
        "its",
        "their",
        "there",
        "which",
        "what",
        "when",
        "where",
        "who",
        "whom",
        "into",
        "than",
        "then",
        "them",
        "they",
        "will",
        "would",
        "can",
        "could",
        "should",
        "may",
        "might",
        "any",
        "all",
        "each",
        "per",
        "our",
        "your",
        "his",
        "her",
        "been",
        "being",
        "does",
        "did",
        "done",
        "also",
        "only",
        "about",
        "other",
        "such",
        "these",
        "those",
        "some",
        "more",
        "most",
        "very",
        "over",
        "under",
        "between",
        "after",
        "before",
        "value",
        "values",
        "extract",
        "document",
        "variable",
        "text",
        "type",
        "yes",
    ]
)


@dataclass(frozen=True)
class Chunk:
    start: int  # offsets in the document's text (pages joined as stored)
    end: int
    first_page: int  # 1-based
    last_page: int

    @property
    def pages(self) -> range:
        return range(self.first_page, self.last_page + 1)


def terms(text: str) -> list[str]:
    return [w for w in (m.group().casefold() for m in _WORD.finditer(text)) if w not in _STOPWORDS]


def split_into_chunks(
    text: str,
    page_starts: Sequence[int],
    chunk_chars: int = CHUNK_CHARS,
    overlap: int = OVERLAP_CHARS,
) -> list[Chunk]:
    """Chunks of about `chunk_chars`, ending at whitespace where possible, each overlapping the
    previous one by about `overlap` characters."""
    chunks: list[Chunk] = []
    start, length = 0, len(text)
    while start < length:
        end = min(start + chunk_chars, length)
        if end < length:  # end at a line or word break rather than mid-word
            cut = max(text.rfind("\n", start + chunk_chars // 2, end), 0)
            cut = cut or max(text.rfind(" ", start + chunk_chars // 2, end), 0)
            end = cut or end
        chunks.append(
            Chunk(start, end, _page_of(page_starts, start), _page_of(page_starts, end - 1))
        )
        if end >= length:
            break
        start = max(end - overlap, start + 1)
        while start < end and not text[start - 1].isspace():  # start on a word
            start += 1
    return chunks


def _page_of(page_starts: Sequence[int], offset: int) -> int:
    return max(bisect.bisect_right(page_starts, offset), 1)


def variable_query(spec: dict[str, Any]) -> list[str]:
    """What the variable is about, as search terms."""
    parts: list[str] = [
        str(spec.get(key) or "") for key in ("label", "description", "instructions")
    ]
    parts.append(str(spec.get("name") or "").replace("_", " "))
    parts += [str(v) for v in spec.get("allowed_values") or ()]
    for example in spec.get("examples") or ():
        if isinstance(example, dict):
            parts += [str(example.get("value") or ""), str(example.get("snippet") or "")]
    return terms(" ".join(parts))


class ChunkIndex:
    """BM25 over one document's chunks."""

    K1 = 1.2
    B = 0.75

    def __init__(self, text: str, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self._counts = [Counter(terms(text[c.start : c.end])) for c in self.chunks]
        self._lengths = [sum(c.values()) for c in self._counts]
        self._average = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0
        frequency: Counter[str] = Counter()
        for counts in self._counts:
            frequency.update(counts.keys())
        n = len(self.chunks)
        self._idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in frequency.items()}

    def scores(self, query: Iterable[str]) -> list[float]:
        wanted = set(query)
        out = []
        for counts, length in zip(self._counts, self._lengths, strict=True):
            norm = self.K1 * (1 - self.B + self.B * length / (self._average or 1))
            out.append(
                sum(
                    self._idf.get(t, 0.0) * counts[t] * (self.K1 + 1) / (counts[t] + norm)
                    for t in wanted
                    if t in counts
                )
            )
        return out

    def select(self, query: Sequence[str], budget_chars: int) -> list[Chunk]:
        """The opening chunk, then the best-scoring ones that fit `budget_chars`, in order."""
        if not self.chunks:
            return []
        scores = self.scores(query)
        ranked = sorted(range(1, len(self.chunks)), key=lambda i: (-scores[i], i))
        chosen, used = [0], self._size(0)
        for i in ranked:
            size = self._size(i)
            if used + size <= budget_chars:
                chosen.append(i)
                used += size
        return [self.chunks[i] for i in sorted(chosen)]

    def _size(self, i: int) -> int:
        chunk = self.chunks[i]
        return chunk.end - chunk.start
