"""How runs word things for people: counts ("1 extraction", "2 extractions") and the next
step after a failure."""

from __future__ import annotations

import re


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, in the singular for exactly one (`plural` defaults to noun + "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


# A failure's reason → what to do about it, for reasons that do not already say (the LLM
# client's sentences name the setting to check where there is one: "check OPENAI_BASE_URL").
_NEXT_STEPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"timed out", re.I),
        "Raise the profile's timeout, or lower its concurrency if the server is overloaded.",
    ),
    (
        re.compile(r"429|Too Many Requests", re.I),
        "Lower the profile's concurrency, or set its rpm/tpm limits to the provider's.",
    ),
    (re.compile(r"quota", re.I), "Add credit to the provider account, then retry."),
    (
        re.compile(r"HTTP 5\d\d"),
        "The LLM server failed: check that it is running and healthy (its own log), then "
        "retry the failed extractions.",
    ),
    (
        re.compile(r"does not fit|not JSON|was not valid|invalid JSON|did not answer", re.I),
        "The model's answers did not fit the variable: sharpen its description or allowed "
        "values, or try a larger model or another output mode.",
    ),
    (
        re.compile(r"context window|too long", re.I),
        "Lower QUARRY_LLM_MAX_DOCUMENT_CHARS or use a model with a larger context window.",
    ),
)


def next_step(reason: str) -> str | None:
    """What a user can do about a failure with this reason (None: the reason says it)."""
    if re.search(r"\bcheck\b", reason, re.I):
        return None
    return next((step for pattern, step in _NEXT_STEPS if pattern.search(reason)), None)
