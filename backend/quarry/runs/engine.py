"""One (document, variable) extraction: ask, validate the value, re-ask on invalid answers.

Pure of the database: the task (tasks.py) loads the inputs and stores the outcome.

Every call names its output budget (`max_tokens`): the answer's fields and a quote, plus
room for the value by its type (`answer_tokens`), summed over a grouped call's variables.
A prompt the model's context cannot hold (`ContextTooLong`, found before sending or said by
the provider) is asked again with a smaller selection of the document's passages (the
input's `shrink`), halving the budget each time, rather than failing the pair; a grouped
prompt that does not fit falls back to single calls.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from quarry.documents.parsing.layout import OCR_LOW_CONFIDENCE
from quarry.llm.client import (
    GROUP_RESPONSE_FORMAT,
    CallCancelled,
    CallGate,
    ChatMessage,
    ChatModel,
    ChatReply,
    ContextTooLong,
    LLMCallError,
)
from quarry.llm.confidence import value_confidences
from quarry.models import ExtractionStatus
from quarry.runs.grounding import DEFAULT_FUZZY_THRESHOLD, Location, locate_evidence
from quarry.runs.support import (
    UNSUPPORTED_CONFIDENCE_CAP,
    Support,
    check_support,
    is_bare_quote,
    sentence_span,
    words,
)
from quarry.runs.wording import counted
from quarry.variables.prompts import (
    GROUP_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    render_group_message,
    render_repair_message,
    render_user_message,
)
from quarry.variables.types import (
    InvalidValue,
    JsonValue,
    TypeSpec,
    VariableType,
    is_not_stated,
    normalise_value,
)

#: Output tokens of an answer's fields and a sentence-long quote, before the value.
ANSWER_BASE_TOKENS = 160
#: Room for the value itself, by type: free text and lists can be long, the rest is short.
VALUE_TOKENS: dict[VariableType, int] = {
    VariableType.TEXT: 200,
    VariableType.LIST: 200,
    VariableType.MULTI_CATEGORY: 120,
    VariableType.CATEGORY: 40,
    VariableType.DATE: 20,
    VariableType.INTEGER: 20,
    VariableType.NUMBER: 20,
    VariableType.BOOLEAN: 10,
}
#: The smallest document selection worth sending when the context was exceeded (characters).
MIN_SHRUNK_CHARS = 500
#: How many times a prompt the context cannot hold is asked again with half the text.
MAX_SHRINKS = 4


def answer_tokens(spec: TypeSpec) -> int:
    """The output budget (`max_tokens`) of one answer about a variable of this type."""
    return ANSWER_BASE_TOKENS + VALUE_TOKENS.get(spec.type, 200)


def group_answer_tokens(specs: Sequence[TypeSpec]) -> int:
    """The output budget of a grouped answer: every variable's, plus its name and the list."""
    return sum(answer_tokens(spec) + 10 for spec in specs) + 20


class WireAnswer(BaseModel):
    """The one answer shape every call returns (the value is validated per type afterwards)."""

    found: bool
    evidence: str | None = None
    value: Any = None
    confidence: float | None = None


@dataclass(frozen=True)
class PairInput:
    document_block: str
    document_text: str
    page_starts: Sequence[int]
    variable_prompt: str
    type_spec: TypeSpec
    repair_attempts: int
    fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD
    #: The variable's cue words (runs/support.py `cue_words`): what a boolean's evidence must
    #: mention, and what picks the sentence of a bare-value quote found more than once.
    cues: tuple[str, ...] = ()
    #: A smaller document block (at most this many characters of text), or None when the
    #: document cannot be cut further; asked when the context cannot hold the prompt.
    shrink: Callable[[int], str | None] | None = None
    #: The boxes of a span of `document_text` on its pages and the OCR confidence (0..1) of
    #: its words (`DocumentText.geometry`); None when the document has no word geometry.
    geometry: Callable[[int, int], tuple[list[dict[str, Any]], float | None]] | None = None


@dataclass
class PairOutcome:
    status: ExtractionStatus
    value: JsonValue = None
    raw_output: Any = None
    evidence: str | None = None
    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    grounded: bool | None = None
    grounding_method: str | None = None
    grounding_score: float | None = None
    #: Whether the evidence supports the value (runs/support.py); None unless succeeded.
    support: str | None = None
    confidence: float | None = None
    #: The evidence's rectangles on its pages, and the OCR confidence (0..1) of its words.
    boxes: list[dict[str, Any]] | None = None
    ocr_confidence: float | None = None
    #: The token probability of this variable's value in the last answer (llm/confidence.py),
    #: when the provider returned log-probabilities.
    token_confidence: float | None = None
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    model: str | None = None
    error: str | None = None
    #: The validation errors the model was re-asked with, one per re-ask (the error of the
    #: last attempt, which is not re-asked, is in `error`).
    reasked: list[str] = field(default_factory=list)
    #: Characters and messages of the prompts sent, for calibrating token estimates.
    prompt_chars: int = 0
    prompt_messages: int = 0
    #: Times the document was cut to fit the model's context.
    shrinks: int = 0

    def count(self, reply: ChatReply, variable: str | None = None) -> None:
        """Add a reply's cost; take its token confidence for this value (`variable`: this
        variable's entry of a grouped reply)."""
        self.attempts += 1
        self.tokens_in += reply.tokens_in
        self.tokens_out += reply.tokens_out
        self.prompt_chars += reply.prompt_chars
        self.prompt_messages += reply.prompt_messages
        self.latency_ms += reply.latency_ms
        self.model = reply.model
        # The value's own tokens, not the whole reply's (padding, fences, other variables).
        figures = value_confidences(reply.text, reply.token_logprobs)
        self.token_confidence = figures.of(variable) if figures is not None else None
        self.raw_output = reply.parsed if reply.parsed is not None else reply.text


def clamp_confidence(raw: float | None) -> float | None:
    """The model's own confidence as a 0..1 figure (models sometimes answer in percent)."""
    if raw is None or raw != raw or raw < 0:  # None, NaN or negative: no usable figure
        return None
    if raw > 1:
        raw = raw / 100 if raw <= 100 else 1.0
    return round(raw, 4)


def combine_confidence(stated: float | None, tokens: float | None) -> float | None:
    """The model's stated confidence and its token probability, when both are known, as their
    geometric mean: high only when the model both says it is sure and did not hesitate.
    Grounding then scales the result (a fuzzy quote lowers it; see runs/grounding.py)."""
    if stated is None or tokens is None:
        return stated if tokens is None else round(tokens, 4)
    return round(math.sqrt(stated * tokens), 4)


def review_confidence(
    model: float | None,
    location: Location | None,
    support: Support | None,
    ocr: float | None = None,
) -> float | None:
    """The confidence stored with a value: a review-priority score, 0..1, lowest first.

    ``model`` is :func:`combine_confidence` of the model's stated figure and its value's token
    probability. It is then scaled by the OCR confidence of the quoted words (``ocr``, given
    for a quote on poorly read OCR text: `_ocr_factor`) and by how the quote was found (a
    fuzzy match lowers it: runs/grounding.py), and capped at ``UNSUPPORTED_CONFIDENCE_CAP``
    when the quote is not in the document or does not contain the value. A ranking for
    review, not a calibrated probability (measure it against gold: quarry.evaluation).
    """
    if model is None:
        return None
    score = model
    if ocr is not None:
        score *= max(0.0, min(1.0, ocr))
    if location is not None:
        score *= location.confidence_factor
    if location is None or support is Support.UNSUPPORTED:
        score = min(score, UNSUPPORTED_CONFIDENCE_CAP)
    return round(score, 4)


def build_messages(inp: PairInput, block: str | None = None) -> list[ChatMessage]:
    document = inp.document_block if block is None else block
    return [
        ChatMessage("system", SYSTEM_PROMPT),
        ChatMessage("user", render_user_message(document, inp.variable_prompt)),
    ]


def _read_answer(reply: ChatReply) -> WireAnswer:
    if reply.parsed is None:
        raise InvalidValue(f"{reply.parse_error or 'The answer was not JSON.'}")
    return _wire_answer(reply.parsed)


def _wire_answer(raw: dict[str, Any]) -> WireAnswer:
    try:
        return WireAnswer.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidValue(f"The JSON answer is malformed at '{where}': {first['msg']}.") from exc


#: Above this many characters, locating a quote runs in a thread: the first search of a long
#: document folds its whole text, which would stall the event loop (the API's, when embedded).
_GROUND_IN_THREAD_CHARS = 100_000
#: How many occurrences of a bare-value quote are weighed when choosing its sentence.
_MAX_BARE_CANDIDATES = 50


async def _ground(outcome: PairOutcome, inp: PairInput, evidence: str | None) -> None:
    """Locate the quote; widen a bare-value quote to its sentence; check that the quote (and
    its sentence) supports the value; settle the confidence (`review_confidence`)."""
    outcome.evidence = evidence
    location: Location | None = None
    if evidence:
        text, cues = inp.document_text, inp.cues
        args = (text, inp.page_starts, evidence)
        if len(text) > _GROUND_IN_THREAD_CHARS:
            location = await asyncio.to_thread(
                locate_evidence, *args, fuzzy_threshold=inp.fuzzy_threshold
            )
        else:
            location = locate_evidence(*args, fuzzy_threshold=inp.fuzzy_threshold)
        if location is not None and is_bare_quote(evidence, outcome.value):
            location = _widen_to_sentence(text, inp.page_starts, location, cues)
            outcome.evidence = text[location.char_start : location.char_end]
    outcome.grounded = location is not None
    if location is not None:
        outcome.page = location.page
        outcome.char_start, outcome.char_end = location.char_start, location.char_end
        outcome.grounding_method, outcome.grounding_score = str(location.method), location.score
        if inp.geometry is not None:
            boxes, outcome.ocr_confidence = inp.geometry(location.char_start, location.char_end)
            outcome.boxes = boxes or None
    support = check_support(
        inp.type_spec, outcome.value, _passage(inp, outcome.evidence, location), inp.cues
    )
    outcome.support = str(support)
    outcome.confidence = review_confidence(
        outcome.confidence, location, support, _ocr_factor(outcome.ocr_confidence)
    )


def _ocr_factor(ocr_confidence: float | None) -> float | None:
    """What the quoted words' OCR confidence does to the value's: nothing while Tesseract was
    sure of them (a clean scan reads at 0.9 and above), scaled by it below the flag's line."""
    if ocr_confidence is None or ocr_confidence >= OCR_LOW_CONFIDENCE:
        return None
    return ocr_confidence


def _page_bounds(text: str, page_starts: Sequence[int], page: int) -> tuple[int, int]:
    start = page_starts[page - 1] if 0 < page <= len(page_starts) else 0
    end = page_starts[page] if page < len(page_starts) else len(text)
    return start, end


def _widen_to_sentence(
    text: str, page_starts: Sequence[int], location: Location, cues: Sequence[str]
) -> Location:
    """A bare quote's location widened to its sentence on its page. A bare value that occurs
    more than once ("2021") is taken in the sentence that names the variable most (its cue
    words), else where it was first found."""
    quote = text[location.char_start : location.char_end]
    best = location
    if cues:
        pattern = re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, quote.split())) + r"(?!\w)")
        best_score = -1
        for n, match in enumerate(pattern.finditer(text)):
            if n >= _MAX_BARE_CANDIDATES:
                break
            page = bisect.bisect_right(page_starts, match.start()) or 1
            lo, hi = _page_bounds(text, page_starts, page)
            start, end = sentence_span(text, match.start(), match.end(), lo, hi)
            score = sum(1 for w in words(text[start:end]) if w[:5] in cues)
            if score > best_score:
                best_score = score
                best = Location(match.start(), match.end(), page, location.method, location.score)
    lo, hi = _page_bounds(text, page_starts, best.page)
    start, end = sentence_span(text, best.char_start, best.char_end, lo, hi)
    return Location(start, end, best.page, best.method, best.score)


def _passage(inp: PairInput, quote: str | None, location: Location | None) -> str:
    """What the support check reads: the quote, and the sentence(s) of the document it is in."""
    if not quote:
        return ""
    if location is None:
        return quote
    text = inp.document_text
    lo, hi = _page_bounds(text, inp.page_starts, location.page)
    start, end = sentence_span(text, location.char_start, location.char_end, lo, hi)
    return f"{quote}\n{text[min(start, location.char_start) : max(end, location.char_end)]}"


async def extract_pair(chat: ChatModel, inp: PairInput, gate: CallGate | None) -> PairOutcome:
    """Ask until the answer validates (at most 1 + repair_attempts calls)."""
    outcome = PairOutcome(status=ExtractionStatus.FAILED)
    messages = build_messages(inp)
    budget = answer_tokens(inp.type_spec)
    block_chars = len(inp.document_block)
    error = ""
    asked = 0
    while asked < 1 + inp.repair_attempts:
        try:
            reply = await chat.complete_json(messages, gate, max_tokens=budget)
        except CallCancelled as exc:
            outcome.status, outcome.error = ExtractionStatus.CANCELLED, exc.reason
            return outcome
        except ContextTooLong as exc:
            # Less of the document, not a failed pair: the passages most relevant to the
            # variable that fit half the room (re-asks so far are asked again with it).
            smaller = None
            if inp.shrink is not None and outcome.shrinks < MAX_SHRINKS:
                block_chars //= 2
                if block_chars >= MIN_SHRUNK_CHARS:
                    smaller = inp.shrink(block_chars)
            if smaller is None:
                outcome.attempts += int(exc.sent)
                outcome.error = f"{exc.reason} The document could not be cut to fit."
                return outcome
            outcome.shrinks += 1
            outcome.attempts += int(exc.sent)
            messages = [*build_messages(inp, smaller), *messages[2:]]
            continue
        except LLMCallError as exc:
            outcome.attempts += 1
            outcome.error = exc.reason
            return outcome
        outcome.count(reply)
        asked += 1
        try:
            await _settle(outcome, inp, _read_answer(reply))
        except InvalidValue as exc:
            error = str(exc)
            if asked >= 1 + inp.repair_attempts:
                break  # that was the last attempt: it fails with `error`, not re-asked
            outcome.reasked.append(error)
            messages = [
                *messages,
                ChatMessage("assistant", reply.text),
                ChatMessage("user", render_repair_message(error)),
            ]
            continue
        return outcome
    outcome.error = f"No valid answer after {counted(outcome.attempts, 'attempt')}: {error}"
    return outcome


async def _settle(outcome: PairOutcome, inp: PairInput, answer: WireAnswer) -> None:
    """Judge a well-formed answer: not stated, or a value valid for the type (then grounded).

    Raises `InvalidValue` — before changing `outcome` — when the value does not fit the type."""
    if not answer.found or is_not_stated(inp.type_spec, answer.value):
        outcome.status = ExtractionStatus.NOT_FOUND
        outcome.confidence = combine_confidence(
            clamp_confidence(answer.confidence), outcome.token_confidence
        )
        return
    value = normalise_value(inp.type_spec, answer.value)
    if value is None:
        outcome.status = ExtractionStatus.NOT_FOUND
        return
    outcome.status, outcome.value = ExtractionStatus.SUCCEEDED, value
    outcome.confidence = combine_confidence(
        clamp_confidence(answer.confidence), outcome.token_confidence
    )
    await _ground(outcome, inp, answer.evidence)


# -- several variables per call (a project's `group_size`) ------------------------------------


@dataclass(frozen=True)
class GroupInput:
    """Variables about one document asked in one call: `pairs[i]` is the single-call input of
    the variable named `names[i]`; all of them carry the same document block."""

    names: Sequence[str]
    pairs: Sequence[PairInput]


@dataclass
class GroupAnswer:
    """One variable's part of a grouped call: its outcome (with its share of the call), and,
    when that part could not be used, why — the variable is then to be asked on its own."""

    outcome: PairOutcome
    fallback: str | None = None


def build_group_messages(group: GroupInput) -> list[ChatMessage]:
    prompts = [p.variable_prompt for p in group.pairs]
    return [
        ChatMessage("system", GROUP_SYSTEM_PROMPT),
        ChatMessage("user", render_group_message(group.pairs[0].document_block, prompts)),
    ]


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` as `parts` whole shares adding up to it exactly, the remainder to the first."""
    share, rest = divmod(total, parts)
    return [share + rest] + [share] * (parts - 1)


async def extract_group(
    chat: ChatModel, group: GroupInput, gate: CallGate | None
) -> list[GroupAnswer]:
    """Ask about every variable of the group in one call; one answer per variable, in order.

    Each variable's part is validated exactly as a single call's answer (type, "not stated",
    grounding). There is no re-ask: a part that is missing, malformed or invalid comes back
    with `fallback` set, and the caller asks that variable on its own. The call's tokens are
    split evenly across the variables (the remainder to the first), so a run's totals stay
    exact, and it counts as one attempt for each of them.
    """
    outcomes = [PairOutcome(status=ExtractionStatus.FAILED) for _ in group.pairs]
    budget = group_answer_tokens([p.type_spec for p in group.pairs])
    try:
        reply = await chat.complete_json(
            build_group_messages(group), gate, GROUP_RESPONSE_FORMAT, max_tokens=budget
        )
    except CallCancelled as exc:
        for outcome in outcomes:
            outcome.status, outcome.error = ExtractionStatus.CANCELLED, exc.reason
        return [GroupAnswer(outcome) for outcome in outcomes]
    except ContextTooLong as exc:
        # Asked alone, each variable's prompt is shorter, and its document can be cut.
        for outcome in outcomes:
            outcome.attempts = int(exc.sent)
        return [
            GroupAnswer(outcome, fallback="the grouped prompt did not fit the model's context")
            for outcome in outcomes
        ]
    except LLMCallError as exc:
        # The server's failure, not the answer's: single calls would meet it too (and a single
        # call that fails so is not re-asked either).
        for outcome in outcomes:
            outcome.attempts, outcome.error = 1, exc.reason
        return [GroupAnswer(outcome) for outcome in outcomes]

    tokens_in = split_evenly(reply.tokens_in, len(outcomes))
    tokens_out = split_evenly(reply.tokens_out, len(outcomes))
    chars = split_evenly(reply.prompt_chars, len(outcomes))
    messages = split_evenly(reply.prompt_messages, len(outcomes))
    for n, outcome in enumerate(outcomes):
        outcome.count(reply, group.names[n])  # its own value's token confidence
        outcome.tokens_in, outcome.tokens_out = tokens_in[n], tokens_out[n]
        outcome.prompt_chars, outcome.prompt_messages = chars[n], messages[n]
    entries, problem = _group_entries(reply)
    answers = []
    for name, inp, outcome in zip(group.names, group.pairs, outcomes, strict=True):
        key = _name_key(name)
        entry = entries.get(key)
        if entry is not None:
            outcome.raw_output = entry  # this variable's part, rather than the whole group's
        try:
            if problem is not None:
                raise InvalidValue(problem)
            if key not in entries:
                raise InvalidValue("The grouped answer left it out.")
            if entry is None:
                raise InvalidValue("The grouped answer had more than one entry for it.")
            await _settle(outcome, inp, _wire_answer(entry))
        except InvalidValue as exc:
            answers.append(GroupAnswer(outcome, fallback=str(exc)))
            continue
        answers.append(GroupAnswer(outcome))
    return answers


def _name_key(name: str) -> str:
    return name.strip().casefold()


def _group_entries(reply: ChatReply) -> tuple[dict[str, dict[str, Any] | None], str | None]:
    """The grouped answer's entries by variable name (None for a name given more than one:
    which to believe is unclear), or what makes the whole answer unusable.

    Entries that are not objects or name no variable are left out, as are names of variables
    not in the group: they cannot be told from noise, and the variables they may have meant
    fall back to single calls."""
    if reply.parsed is None:
        return {}, reply.parse_error or "The answer was not JSON."
    answers = reply.parsed.get("answers")
    if not isinstance(answers, list):
        return {}, "The grouped answer had no list of answers."
    entries: dict[str, dict[str, Any] | None] = {}
    for entry in answers:
        if not isinstance(entry, dict) or not isinstance(entry.get("variable"), str):
            continue
        key = _name_key(entry["variable"])
        entries[key] = None if key in entries else entry
    return entries, None
