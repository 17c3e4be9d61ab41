"""One (document, variable) extraction: ask, validate the value, re-ask on invalid answers.

Pure of the database: the task (tasks.py) loads the inputs and stores the outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from quarry.llm.client import CallCancelled, ChatMessage, ChatModel, ChatReply, LLMCallError
from quarry.models import ExtractionStatus
from quarry.runs.grounding import locate_evidence
from quarry.variables.prompts import SYSTEM_PROMPT, render_repair_message, render_user_message
from quarry.variables.types import InvalidValue, JsonValue, TypeSpec, is_not_stated, normalise_value


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
    confidence: float | None = None
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    model: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def count(self, reply: ChatReply) -> None:
        self.attempts += 1
        self.tokens_in += reply.tokens_in
        self.tokens_out += reply.tokens_out
        self.latency_ms += reply.latency_ms
        self.model = reply.model
        self.raw_output = reply.parsed if reply.parsed is not None else reply.text


def clamp_confidence(raw: float | None) -> float | None:
    """The model's own confidence as a 0..1 figure (models sometimes answer in percent)."""
    if raw is None or raw != raw or raw < 0:  # None, NaN or negative: no usable figure
        return None
    if raw > 1:
        raw = raw / 100 if raw <= 100 else 1.0
    return round(raw, 4)


def build_messages(inp: PairInput) -> list[ChatMessage]:
    return [
        ChatMessage("system", SYSTEM_PROMPT),
        ChatMessage("user", render_user_message(inp.document_block, inp.variable_prompt)),
    ]


def _read_answer(reply: ChatReply) -> WireAnswer:
    if reply.parsed is None:
        raise InvalidValue(f"{reply.parse_error or 'The answer was not JSON.'}")
    try:
        return WireAnswer.model_validate(reply.parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidValue(f"The JSON answer is malformed at '{where}': {first['msg']}.") from exc


def _ground(outcome: PairOutcome, inp: PairInput, evidence: str | None) -> None:
    outcome.evidence = evidence
    if not evidence:
        outcome.grounded = False
        return
    location = locate_evidence(inp.document_text, inp.page_starts, evidence)
    outcome.grounded = location is not None
    if location is not None:
        outcome.page = location.page
        outcome.char_start, outcome.char_end = location.char_start, location.char_end


async def extract_pair(
    chat: ChatModel, inp: PairInput, should_stop: Callable[[], Awaitable[bool]]
) -> PairOutcome:
    """Ask until the answer validates (at most 1 + repair_attempts calls)."""
    outcome = PairOutcome(status=ExtractionStatus.FAILED)
    messages = build_messages(inp)
    error = ""
    for _ in range(1 + inp.repair_attempts):
        try:
            reply = await chat.complete_json(messages, should_stop)
        except CallCancelled:
            outcome.status, outcome.error = ExtractionStatus.CANCELLED, "The run was cancelled."
            return outcome
        except LLMCallError as exc:
            outcome.attempts += 1
            outcome.error = exc.reason
            return outcome
        outcome.count(reply)
        try:
            answer = _read_answer(reply)
            if not answer.found or is_not_stated(inp.type_spec, answer.value):
                outcome.status = ExtractionStatus.NOT_FOUND
                outcome.confidence = clamp_confidence(answer.confidence)
                return outcome
            value = normalise_value(inp.type_spec, answer.value)
        except InvalidValue as exc:
            error = str(exc)
            outcome.notes.append(error)
            messages = [
                *messages,
                ChatMessage("assistant", reply.text),
                ChatMessage("user", render_repair_message(error)),
            ]
            continue
        if value is None:
            outcome.status = ExtractionStatus.NOT_FOUND
            return outcome
        outcome.status, outcome.value = ExtractionStatus.SUCCEEDED, value
        outcome.confidence = clamp_confidence(answer.confidence)
        _ground(outcome, inp, answer.evidence)
        return outcome
    outcome.error = f"No valid answer after {outcome.attempts} attempts: {error}"
    return outcome
