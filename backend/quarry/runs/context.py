"""How much document text a run's calls may carry: what the model's context window leaves
after the instructions, the variable's part and the answer's room.

Measured at run creation on the run's own variables — the longest single call (and, for a
grouped run, the longest group) with an empty document — in tokens at the profile's
observed tokens per character (chars/4 until usage says otherwise), less a margin for the
excerpt headers and the estimate's error; frozen in the snapshot as `max_document_chars`
(capped by QUARRY_LLM_MAX_DOCUMENT_CHARS). A document past it is sent as the passages most
relevant to each variable (runs/chunks.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from quarry.errors import BadRequest
from quarry.runs.engine import answer_tokens, group_answer_tokens
from quarry.runs.estimate import render_call
from quarry.variables.types import TypeSpec, VariableType

#: Share of the room kept free: excerpt headers, and tokenizers that count more than assumed.
MARGIN = 0.1
#: Below this many characters of document text a call is not worth making: the run is refused.
MIN_DOCUMENT_CHARS = 1000


@dataclass(frozen=True)
class CallPart:
    """A variable as its calls see it: name, rendered prompt, frozen spec."""

    name: str
    prompt: str
    spec: dict[str, Any]

    @property
    def type_spec(self) -> TypeSpec:
        return TypeSpec(type=VariableType(self.spec["type"]))


def _fixed_tokens(parts: Sequence[CallPart], tokens_per_char: float) -> int:
    messages = render_call("", [p.name for p in parts], [p.prompt for p in parts])
    chars = sum(len(m.content) for m in messages)
    return math.ceil(chars * tokens_per_char) + 4 * len(messages)


def document_budget_chars(
    parts: Sequence[CallPart],
    *,
    group_size: int,
    context_window: int,
    max_output_tokens: int,
    tokens_per_char: float,
    cap: int,
) -> int:
    """Characters of document text every call of the run can carry (see the module
    docstring); `BadRequest` when the context window leaves too little."""
    worst = 0
    for part in parts:
        output = min(answer_tokens(part.type_spec), max_output_tokens)
        worst = max(worst, _fixed_tokens([part], tokens_per_char) + output)
    if group_size > 1 and len(parts) > 1:
        # The largest group the run can form: its longest prompts together.
        biggest = sorted(parts, key=lambda p: len(p.prompt), reverse=True)[:group_size]
        output = min(group_answer_tokens([p.type_spec for p in biggest]), max_output_tokens)
        worst = max(worst, _fixed_tokens(biggest, tokens_per_char) + output)
    room = (context_window - worst) * (1 - MARGIN)
    budget = math.floor(room / tokens_per_char) if room > 0 else 0
    if budget < MIN_DOCUMENT_CHARS:
        raise BadRequest(
            f"The model's context window ({context_window} tokens) leaves no room for the "
            f"document: the instructions, the variables' prompts and the answer take about "
            f"{worst} tokens. Choose a profile with a larger context window, or fewer "
            "variables per call."
        )
    return min(cap, budget)
