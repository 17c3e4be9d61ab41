"""The single typed interface to chat models. Nothing outside llm/ imports openai or LangChain.

Calls go to OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio,
Azure's compatible endpoint) through the openai SDK's public `post` — the leanest public
path: the SDK's request options, authentication, timeouts and error types, without building
typed request and response objects nobody reads (measured: 1.1–1.4 ms of CPU a call against
2.1 for `chat.completions.create` and 3.0 for LangChain's ChatOpenAI; a run makes thousands).
The model is asked for one fixed JSON shape (a second fixed one for grouped calls, which
answer several variables at once); the *value* inside is validated per variable type by the
caller, so the wire schema never changes between variables (which keeps prompts
cache-friendly).

How the shape is asked for is the profile's structured-output mode (`OutputMode`):
`json_schema` (strict), `json_object`, `tools` (one function whose parameters are the
schema, which the model must call) or `prompt` (only the system prompt's own description of
the shape). `auto` tries them in that order: a 400 that says the feature is not supported
moves to the next one at once (no retry is used up), and the mode that worked is remembered
per profile (`ModeMemory`; runs/tasks.py persists it on the profile row). Answers are parsed
tolerantly (code fences, leading whitespace, trailing prose, smart quotes) before validation.

Every call sends `max_tokens` (the caller's budget, within the profile's output cap and what
the context window leaves). A call whose prompt cannot fit the context window is never sent
(`ContextTooLong`, `sent=False`); a provider's "context length exceeded" answer raises it too
(`sent=True`), for the caller to try again with less text. An answer cut off at `max_tokens`
(`finish_reason: length`) is asked again with twice the budget, up to the profile's cap.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx2
import openai
import structlog

from quarry import metrics
from quarry.errors import BadRequest
from quarry.llm.confidence import TokenLogprob, read_token_logprobs
from quarry.llm.limiter import CallLimiter, LimitSettings, create_limiter
from quarry.llm.retry import (
    InvalidCompletion,
    RetryPolicy,
    is_quota_exhausted,
    is_retryable,
    retry_after_seconds,
    retry_reason,
)
from quarry.settings import Settings

if TYPE_CHECKING:
    from quarry.llm.batch import BatchClient

log = structlog.get_logger(__name__)

# One wire schema for every call (strict JSON-schema structured output).
ANSWER_SCHEMA: dict[str, Any] = {
    "name": "extraction_answer",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {
            "found": {"type": "boolean"},
            "evidence": {"type": ["string", "null"]},
            "value": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "number"},
                    {"type": "boolean"},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "null"},
                ]
            },
            "confidence": {"type": ["number", "null"]},
        },
        "required": ["found", "evidence", "value", "confidence"],
        "additionalProperties": False,
    },
}
RESPONSE_FORMAT: dict[str, Any] = {"type": "json_schema", "json_schema": ANSWER_SCHEMA}
# The one wire schema of grouped calls (several variables per call): a list of the single
# answer's fields, each entry naming its variable. Constant too, whatever the variables.
GROUP_ANSWER_SCHEMA: dict[str, Any] = {
    "name": "extraction_group_answer",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {
            "answers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "variable": {"type": "string"},
                        **ANSWER_SCHEMA["schema"]["properties"],
                    },
                    "required": ["variable", *ANSWER_SCHEMA["schema"]["required"]],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["answers"],
        "additionalProperties": False,
    },
}
GROUP_RESPONSE_FORMAT: dict[str, Any] = {"type": "json_schema", "json_schema": GROUP_ANSWER_SCHEMA}
#: Output tokens assumed for one answer before the provider reports the real count (the
#: tokens-per-minute limiter is corrected with the real figure after the call).
EXPECTED_OUTPUT_TOKENS = 200
#: How long the limiter slots of a worker that died stay taken (live workers renew theirs).
LIMITER_HOLDER_TTL_SECONDS = 10.0
#: `max_tokens` of a call whose caller names no budget (still within the profile's cap).
DEFAULT_MAX_TOKENS = 1024
#: The least output room a call is sent with; a prompt leaving less than this never goes out.
MIN_OUTPUT_TOKENS = 64
#: Prompt tokens per character when nothing better is known (chars/4, as the limiter counts).
DEFAULT_TOKENS_PER_CHAR = 0.25


class OutputMode(StrEnum):
    """How a call asks for the answer's JSON shape (see the module docstring)."""

    AUTO = "auto"
    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    TOOLS = "tools"
    PROMPT = "prompt"


#: The order `auto` tries the modes in: the strictest first.
FALLBACK_ORDER: tuple[OutputMode, ...] = (
    OutputMode.JSON_SCHEMA,
    OutputMode.JSON_OBJECT,
    OutputMode.TOOLS,
    OutputMode.PROMPT,
)

#: The provider served through the openai SDK (any OpenAI-compatible server); the others
#: (llm/providers.py: anthropic, azure, google, ollama) go through LangChain's
#: `init_chat_model`.
OPENAI_COMPATIBLE = "openai"


@dataclass(frozen=True)
class ModelProfile:
    """Everything a chat model is built from: where calls go, how they are shaped, and the
    provider's limits. `key` names the profile (its id, or `env` for the one the environment
    gives) for the learned output mode and the limiter; the API key is never held here, only
    the name of the environment variable that holds it."""

    key: str
    model: str
    provider: str = OPENAI_COMPATIBLE
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float = 0.0
    context_window: int = 128_000
    max_output_tokens: int = 4096
    concurrency: int = 8
    rpm: int | None = None
    tpm: int | None = None
    timeout_seconds: float = 60.0
    output_mode: OutputMode = OutputMode.AUTO
    #: The mode an earlier `auto` call found to work (persisted on the profile's row).
    learned_mode: OutputMode | None = None
    #: Observed prompt tokens per character (runs/estimate.py calibrates it from usage).
    tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR


class ModeMemory:
    """The structured-output mode that works, per profile (one per factory: a process).

    Kept per profile *and server*: a profile edited to point at another server or model
    starts from scratch, as its row's `learned_mode` does (profiles/service.py)."""

    def __init__(self) -> None:
        self._modes: dict[tuple[str, str, str | None, str], OutputMode] = {}

    @staticmethod
    def _key(profile: ModelProfile) -> tuple[str, str, str | None, str]:
        return (profile.key, profile.provider, profile.base_url, profile.model)

    def get(self, profile: ModelProfile) -> OutputMode | None:
        return self._modes.get(self._key(profile))

    def learn(self, profile: ModelProfile, mode: OutputMode) -> None:
        self._modes[self._key(profile)] = mode


class LLMNotConfigured(BadRequest):
    code = "llm_not_configured"

    def __init__(self) -> None:
        super().__init__(
            "No LLM is configured. Set OPENAI_API_KEY for OpenAI, or OPENAI_BASE_URL for an "
            "OpenAI-compatible server (Ollama, vLLM, llama.cpp), and QUARRY_LLM_MODEL, then "
            "restart Quarry."
        )


class LLMCallError(Exception):
    """A call that failed after the client's own retries; `reason` is for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ContextTooLong(LLMCallError):
    """The prompt does not fit the model's context window: never sent (`sent=False`), or the
    provider said so (`sent=True`). The caller may try again with less document text."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


class ModeUnsupported(Exception):
    """The server (or a provider's class) refused the structured-output mode."""


class CallCancelled(Exception):
    """The call's gate refused an attempt (the run was cancelled or stopped): no further
    request was sent. `reason` says why, for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallGate(Protocol):
    """What a call asks before each attempt (the task's run decides)."""

    async def check(self) -> str | None:
        """Why no attempt may start now (cancelled, stopped), or None; asked before waiting
        for a limiter slot."""
        ...

    async def admit(self, prompt_tokens: int) -> str | None:
        """The same, asked once a limiter slot is held, just before the request is sent (of
        about `prompt_tokens`); may reserve the attempt's estimated cost (a budget)."""
        ...

    async def settle(self, tokens_in: int, tokens_out: int) -> None:
        """The admitted attempt is over and used these tokens (0 if it failed)."""
        ...


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatReply:
    """What came back: the raw text, the parsed JSON object if it was one, and the cost."""

    text: str
    parsed: dict[str, Any] | None
    parse_error: str | None
    tokens_in: int
    tokens_out: int
    latency_ms: int
    model: str
    #: exp(mean log-probability) of the answer's tokens, when the provider returned them.
    token_confidence: float | None = None
    #: The answer's tokens and their log-probabilities, for per-value figures (confidence.py).
    token_logprobs: tuple[TokenLogprob, ...] | None = None
    #: The answer hit `max_tokens` (`finish_reason: length`) even at the largest budget.
    truncated: bool = False
    #: The structured-output mode the answer was asked in.
    output_mode: str | None = None
    #: Characters and messages of the prompts sent (for calibrating token estimates).
    prompt_chars: int = 0
    prompt_messages: int = 0
    #: Prompt tokens the provider served from its prompt cache.
    cached_tokens: int = 0


def token_confidence(choice: dict[str, Any]) -> float | None:
    """The geometric mean of the answer's token probabilities (0..1) in a completion's choice,
    or None without log-probabilities. Low when the model hesitated somewhere in its answer."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return None
    values = [t["logprob"] for t in content if isinstance(t, dict) and "logprob" in t]
    if not values:
        return None
    return round(math.exp(sum(values) / len(values)), 4)


class ChatModel(Protocol):
    async def complete_json(
        self,
        messages: list[ChatMessage],
        gate: CallGate | None = None,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply:
        """One answer, retrying transient failures; `gate` is asked before each attempt
        (before waiting for a limiter slot, and again once it has one) and may refuse it
        (`CallCancelled`).

        `response_format` is `RESPONSE_FORMAT` (one answer) unless given, e.g.
        `GROUP_RESPONSE_FORMAT` for a grouped call. `max_tokens` is the answer's expected
        budget (default `DEFAULT_MAX_TOKENS`), kept within the profile's cap. Raises
        `ContextTooLong` when the prompt does not fit the context window."""
        ...


def estimate_prompt_tokens(
    messages: list[ChatMessage], tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR
) -> int:
    """About four characters per token (or the profile's observed ratio) plus a few per
    message: close for English prose, and needs no tokenizer download (tiktoken fetches its
    tables at run time)."""
    chars = sum(len(m.content) for m in messages)
    return math.ceil(chars * tokens_per_char) + 4 * len(messages)


_CONTEXT_EXCEEDED = re.compile(
    r"context[ _](length|size|window)|maximum context|exceeds? the available context|"
    r"too many tokens|prompt is too long|input is too long",
    re.IGNORECASE,
)
_NOT_SUPPORTED = re.compile(r"not supported|unsupported|does not support|not support", re.I)
_FEATURE = re.compile(r"response_format|json_schema|json_object|json|tool|function|schema", re.I)


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        inner: dict[str, Any] = error if isinstance(error, dict) else body
        return str(inner.get("message") or inner.get("error") or "")
    return str(exc.message or "")


def is_context_exceeded(exc: BaseException) -> bool:
    """A 400 (or 413) saying the prompt is longer than the model's context."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 413):
        return False
    return getattr(exc, "code", None) == "context_length_exceeded" or bool(
        _CONTEXT_EXCEEDED.search(_error_message(exc))
    )


def is_mode_unsupported(exc: BaseException) -> bool:
    """A 4xx saying the request's structured-output feature is not supported."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 404, 422, 501):
        return False
    message = _error_message(exc)
    return bool(_NOT_SUPPORTED.search(message) and _FEATURE.search(message))


def next_mode(mode: OutputMode) -> OutputMode | None:
    """The mode `auto` tries after `mode` is refused (None after the last)."""
    order = list(FALLBACK_ORDER)
    return order[order.index(mode) + 1] if mode in order[:-1] else None


def request_shape(mode: OutputMode, response_format: dict[str, Any]) -> dict[str, Any]:
    """The request fields that ask for the answer's shape in `mode`."""
    schema = response_format["json_schema"]
    if mode is OutputMode.JSON_SCHEMA:
        return {"response_format": response_format}
    if mode is OutputMode.JSON_OBJECT:
        return {"response_format": {"type": "json_object"}}
    if mode is OutputMode.TOOLS:
        name = schema["name"]
        return {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": name,
                        "description": "Record the answer.",
                        "parameters": schema["schema"],
                    },
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": name}},
        }
    return {}


def _describe_failure(exc: Exception, timeout: float, retries: int) -> str:
    """A sentence a user can act on; never includes credentials."""
    after = f" (after {retries} retries)" if retries else ""
    if isinstance(exc, InvalidCompletion):
        return f"The LLM server's reply was not a chat completion{after}; check OPENAI_BASE_URL."
    if isinstance(exc, openai.APITimeoutError):
        return f"The LLM call timed out after {timeout:g} s{after}."
    if isinstance(exc, openai.APIConnectionError):
        return f"Could not reach the LLM server{after}; check OPENAI_BASE_URL."
    if isinstance(exc, openai.RateLimitError):
        if is_quota_exhausted(exc):
            return "The LLM provider says the account has run out of quota (429)."
        return f"The LLM server kept answering 429 Too Many Requests{after}."
    if isinstance(exc, openai.AuthenticationError):
        return "The LLM server rejected the API key (401); check OPENAI_API_KEY."
    if isinstance(exc, openai.PermissionDeniedError):
        return "The LLM server refused access to this model (403)."
    if isinstance(exc, openai.NotFoundError):
        return "The LLM server does not know this model (404); check QUARRY_LLM_MODEL."
    if isinstance(exc, openai.APIStatusError):
        message = ""
        if isinstance(exc.body, dict):
            message = str(exc.body.get("message") or exc.body.get("error") or "")[:300]
        return f"The LLM server answered HTTP {exc.status_code}{after}. {message}".strip()
    return f"The LLM call failed: {type(exc).__name__}."


#: The body fields `request_shape` sets (they change when `auto` moves to the next mode).
_SHAPE_FIELDS = frozenset({"response_format", "tools", "tool_choice", "max_tokens"})


@dataclass(frozen=True)
class PreparedRequest:
    """A chat-completion request as `OpenAIChatModel` would send it first."""

    body: dict[str, Any]
    prompt_tokens: int
    max_tokens: int
    #: The most output room a retry of a cut-off answer may be given.
    ceiling: int
    mode: OutputMode


class OpenAIChatModel:
    """`ChatModel` over the openai SDK's client, in the profile's structured-output mode.

    Each HTTP attempt holds a limiter slot (concurrency, RPM, TPM); retries happen here, with
    the SDK's own switched off, so that every attempt is counted, rate limited and gated.
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        temperature: float,
        timeout: float,
        policy: RetryPolicy,
        limiter: CallLimiter,
        *,
        logprobs: bool = False,
        rng: random.Random | None = None,
        profile: ModelProfile | None = None,
        memory: ModeMemory | None = None,
    ) -> None:
        self._client = client
        self._model = model
        self._temperature = temperature
        self._timeout = timeout
        self._policy = policy
        self._limiter = limiter
        self._logprobs = logprobs
        self._rng = rng or random.Random()
        self._profile = profile or ModelProfile(key="env", model=model, temperature=temperature)
        self._memory = memory or ModeMemory()

    @property
    def profile(self) -> ModelProfile:
        return self._profile

    def current_mode(self) -> OutputMode:
        """The mode the next call is asked in: the profile's, or for `auto` the one learned."""
        profile = self._profile
        if profile.output_mode is not OutputMode.AUTO:
            return profile.output_mode
        return self._memory.get(profile) or profile.learned_mode or FALLBACK_ORDER[0]

    def prepare_request(
        self,
        messages: list[ChatMessage],
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> PreparedRequest:
        """The request body the first attempt of `complete_json` sends (a batch line sends
        exactly this); `ContextTooLong` (not sent) when the prompt cannot fit the context."""
        profile = self._profile
        shape = response_format or RESPONSE_FORMAT
        prompt_tokens = estimate_prompt_tokens(messages, profile.tokens_per_char)
        room = profile.context_window - prompt_tokens
        if room < MIN_OUTPUT_TOKENS:
            raise ContextTooLong(
                f"The prompt (about {prompt_tokens} tokens) does not fit the model's context "
                f"window of {profile.context_window} tokens with room for an answer; it was "
                "not sent.",
                sent=False,
            )
        budget = max(1, min(max_tokens or DEFAULT_MAX_TOKENS, profile.max_output_tokens, room))
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": self._temperature,
        }
        if self._logprobs:
            # Not every model accepts the parameter (OpenAI's reasoning models refuse it).
            body["logprobs"] = True
        body.update(request_shape(self.current_mode(), shape))
        body["max_tokens"] = budget
        return PreparedRequest(
            body, prompt_tokens, budget, min(profile.max_output_tokens, room), self.current_mode()
        )

    async def complete_json(
        self,
        messages: list[ChatMessage],
        gate: CallGate | None = None,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply:
        profile = self._profile
        shape = response_format or RESPONSE_FORMAT
        first = self.prepare_request(messages, shape, max_tokens)
        prompt_tokens, budget, ceiling = first.prompt_tokens, first.max_tokens, first.ceiling
        base = {k: v for k, v in first.body.items() if k not in _SHAPE_FIELDS}

        async def send(mode: OutputMode, budget: int) -> ChatReply:
            body = {**base, **request_shape(mode, shape), "max_tokens": budget}
            return await self._send(body, gate, prompt_tokens)

        return await answer_in_modes(
            ModeLoop(profile, self._memory, self.current_mode, "The LLM server"),
            send,
            messages,
            budget=budget,
            ceiling=ceiling,
        )

    async def _send(
        self, body: dict[str, Any], gate: CallGate | None, prompt_tokens: int
    ) -> ChatReply:
        """One answer to `body`, retrying transient failures through the limiter."""
        estimate = prompt_tokens + EXPECTED_OUTPUT_TOKENS
        retries = 0
        while True:
            if gate is not None and (reason := await gate.check()) is not None:
                raise CallCancelled(reason)
            started = time.perf_counter()
            try:
                async with self._limiter.slot(estimate) as permit:
                    # Asked again: the run may have been stopped while this call waited.
                    if gate is not None and (reason := await gate.admit(prompt_tokens)) is not None:
                        permit.record_usage(0)  # no request was sent: no tokens
                        raise CallCancelled(reason)
                    started = time.perf_counter()  # the call, not the wait for a slot
                    try:
                        reply = await self._attempt(body)
                    except BaseException:
                        if gate is not None:
                            await asyncio.shield(gate.settle(0, 0))
                        raise
                    if gate is not None:
                        await gate.settle(reply.tokens_in, reply.tokens_out)
                    permit.record_usage(reply.tokens_in + reply.tokens_out)
                metrics.record_llm_call(
                    reply.model,
                    metrics.LLM_OK if reply.parsed is not None else "invalid_answer",
                    time.perf_counter() - started,
                    reply.tokens_in,
                    reply.tokens_out,
                )
                return reply
            except (openai.OpenAIError, InvalidCompletion) as exc:
                seconds = time.perf_counter() - started
                metrics.record_llm_call(self._model, retry_reason(exc), seconds, 0, 0)
                if isinstance(exc, openai.APIStatusError) and is_context_exceeded(exc):
                    raise ContextTooLong(
                        "The LLM server said the prompt is longer than the model's context "
                        f"({_error_message(exc)[:200]}).",
                        sent=True,
                    ) from exc
                if is_mode_unsupported(exc):
                    raise ModeUnsupported() from exc
                if not is_retryable(exc) or retries >= self._policy.max_retries:
                    raise LLMCallError(_describe_failure(exc, self._timeout, retries)) from exc
                metrics.record_llm_retry(retry_reason(exc))
                delay = self._policy.delay(retries, retry_after_seconds(exc), self._rng)
                retries += 1
                log.info(
                    "llm.call.retried",
                    reason=retry_reason(exc),
                    retry=retries,
                    wait_seconds=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _attempt(self, body: dict[str, Any]) -> ChatReply:
        """One HTTP request: the SDK's documented way to post a request and get the raw
        response back (`cast_to=httpx2.Response`), read here."""
        started = time.perf_counter()
        response = await self._client.post("/chat/completions", body=body, cast_to=httpx2.Response)
        latency_ms = round((time.perf_counter() - started) * 1000)
        return _read_completion(response.content, self._model, latency_ms)


def _read_completion(content: bytes, model: str, latency_ms: int) -> ChatReply:
    """The answer in a chat completion's JSON (`InvalidCompletion` when it is not one)."""
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise InvalidCompletion("the reply was not a chat completion") from exc
    return read_completion(data, model, latency_ms)


def read_completion(data: Any, model: str, latency_ms: int) -> ChatReply:
    """The answer in a chat completion (its decoded JSON: a batch's output line carries it
    decoded); `InvalidCompletion` when it is not one."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidCompletion("the reply was not a chat completion") from exc
    text = message.get("content")
    text = text if isinstance(text, str) else ("" if text is None else json.dumps(text))
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls and isinstance(calls[0], dict):
        function = calls[0].get("function")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):  # tool calling: the answer is the call's arguments
            text = arguments
        elif isinstance(arguments, dict):
            text = json.dumps(arguments)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    parsed, parse_error = parse_answer(text)
    refusal = message.get("refusal")
    truncated = False
    if refusal:
        parsed, parse_error = None, f"The model refused to answer: {str(refusal)[:300]}"
    elif choice.get("finish_reason") == "length":
        # The answer hit the output-token limit: a bad answer, not a failed call. (Cut-off
        # JSON can still parse, e.g. a list closed early: it is not trusted either.)
        parsed, parse_error = None, "The answer was cut off before it was complete."
        truncated = True
    return ChatReply(
        text=text,
        parsed=parsed,
        parse_error=parse_error,
        tokens_in=int(usage.get("prompt_tokens") or 0),
        tokens_out=int(usage.get("completion_tokens") or 0),
        latency_ms=latency_ms,
        model=str(data.get("model") or model),
        token_confidence=token_confidence(choice),
        token_logprobs=read_token_logprobs(choice),
        truncated=truncated,
        cached_tokens=int(cached) if isinstance(cached, int) else 0,
    )


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL)
_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'})


def parse_answer(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in the answer text, tolerantly: leading whitespace and a byte-order
    mark, a Markdown code fence around it, prose after it (or before its first brace), and
    typographic quotes in place of its own quotes are forgiven. Cut-off JSON is not
    "repaired" (LangChain's parser would turn it into a partial object, letting a truncated
    value pass as complete), and nothing is guessed: a reply with no whole object fails."""
    stripped = text.strip().lstrip("\ufeff").strip()
    if not stripped:
        return None, "The answer was empty."
    try:
        parsed = json.loads(stripped)
    except json.JSONDecodeError:
        parsed = None
    else:
        if isinstance(parsed, dict):
            return parsed, None
    fenced = _FENCE.match(stripped)
    candidate = fenced.group(1).strip() if fenced else stripped
    decoder = json.JSONDecoder()
    for attempt in (candidate, candidate.translate(_SMART_QUOTES)):
        start = attempt.find("{")
        if start < 0:
            continue
        try:
            found, _ = decoder.raw_decode(attempt, start)
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict):
            return found, None
    if parsed is not None:
        return None, "The answer was JSON but not an object."
    return None, "The answer was not valid JSON."


class ChatModelFactory:
    """Builds (and reuses) chat models for model profiles; knows whether an LLM is configured.

    One per process. The profile the environment gives (`default_profile`: QUARRY_LLM_*,
    OPENAI_*) shares one limiter — through Redis with every other process of the deployment
    when QUARRY_REDIS_URL is set — and so does each named profile, with its own limits (a
    one-slot local server gets concurrency 1 from its profile, whatever the environment's).
    """

    def __init__(self, settings: Settings, limiter: CallLimiter | None = None) -> None:
        self._settings = settings
        self._models: dict[ModelProfile, ChatModel] = {}
        self._limiter = limiter
        self._limiters: dict[str, CallLimiter] = {}
        self._clients: dict[tuple[str | None, str | None, float], openai.AsyncOpenAI] = {}
        self.modes = ModeMemory()

    @property
    def configured(self) -> bool:
        return self._settings.llm_configured

    def ensure_configured(self, profile: ModelProfile | None = None) -> None:
        """Raise a 400 a user can act on when calls of `profile` (default: the
        environment's) have nowhere to go, or need a package that is not installed."""
        if profile is None or profile.key == "env":
            if not self.configured:
                raise LLMNotConfigured()
            return
        problem = key_variable_problem(
            self._settings, profile.provider, profile.base_url, profile.api_key_env
        )
        if problem is not None:
            raise BadRequest(problem)
        if profile.provider == OPENAI_COMPATIBLE and not (profile.base_url or profile.api_key_env):
            raise BadRequest(
                "The model profile has neither a base_url (an OpenAI-compatible server) nor "
                "an api_key_env (the environment variable with an OpenAI key); set one."
            )
        if profile.provider != OPENAI_COMPATIBLE:
            from quarry.llm.providers import provider_problem

            problem = provider_problem(profile.provider, profile.base_url, profile.api_key_env)
            if problem is not None:
                raise BadRequest(problem)

    def default_profile(
        self, model: str | None = None, temperature: float | None = None
    ) -> ModelProfile:
        """The profile the environment gives (QUARRY_LLM_*, OPENAI_BASE_URL)."""
        s = self._settings
        return ModelProfile(
            key="env",
            model=model or s.llm_model,
            base_url=s.openai_base_url,
            temperature=s.llm_temperature if temperature is None else temperature,
            context_window=s.llm_context_window,
            max_output_tokens=s.llm_max_output_tokens,
            concurrency=s.llm_concurrency,
            rpm=s.llm_rpm,
            tpm=s.llm_tpm,
            timeout_seconds=s.llm_timeout_seconds,
            output_mode=OutputMode(s.llm_output_mode),
        )

    @property
    def limiter(self) -> CallLimiter:
        """The environment profile's limiter. Created on first use: an API process in
        distributed mode never calls the LLM."""
        if self._limiter is None:
            s = self._settings
            limits = LimitSettings(concurrency=s.llm_concurrency, rpm=s.llm_rpm, tpm=s.llm_tpm)
            self._limiter = self._create_limiter(limits, "llm")
        return self._limiter

    def _create_limiter(self, limits: LimitSettings, name: str) -> CallLimiter:
        s = self._settings
        return create_limiter(
            limits,
            s.redis_url,
            key_prefix=f"{s.redis_queue}:{name}",
            # A killed worker's slots come back no later than its tasks do.
            holder_ttl_seconds=min(LIMITER_HOLDER_TTL_SECONDS, s.task_lease_seconds),
        )

    def _limiter_for(self, profile: ModelProfile) -> CallLimiter:
        if profile.key == "env":
            return self.limiter
        limits = LimitSettings(concurrency=profile.concurrency, rpm=profile.rpm, tpm=profile.tpm)
        # Keyed by the limits too: a profile edited while a run uses it gets fresh limits.
        key = f"{profile.key}:{limits.concurrency}:{limits.rpm}:{limits.tpm}"
        if key not in self._limiters:
            self._limiters[key] = self._create_limiter(limits, f"llm:{key}")
        return self._limiters[key]

    def _client_for(self, profile: ModelProfile) -> openai.AsyncOpenAI:
        s = self._settings
        if profile.key == "env":
            secret = s.openai_api_key.get_secret_value() if s.openai_api_key else None
        else:
            secret = api_key_from_env(profile.api_key_env)
        key = (profile.base_url, profile.api_key_env, profile.timeout_seconds)
        if key not in self._clients:
            # The factory's own connection pools, closed with it: kept-alive connections
            # belong to the event loop that opened them, and a second loop in the same
            # process (an embedded app restarted, a test) must not reuse dead ones.
            self._clients[key] = openai.AsyncOpenAI(
                # A local server needs no key, but the client insists on one.
                api_key=secret or "not-needed",
                base_url=profile.base_url,
                timeout=profile.timeout_seconds,
                max_retries=0,  # retried in OpenAIChatModel, each attempt through the limiter
                http_client=openai.DefaultAsyncHttpx2Client(timeout=profile.timeout_seconds),
            )
        return self._clients[key]

    def get(self, model: str, temperature: float) -> ChatModel:
        """A chat model of the environment's profile for `model` at `temperature`."""
        return self.for_profile(self.default_profile(model, temperature))

    def for_profile(self, profile: ModelProfile) -> ChatModel:
        """The chat model of `profile` (built once per process). `LLMCallError` when calls
        of `profile` cannot be made from this process (a worker without a provider's
        package, say): the task fails with the reason rather than crashing."""
        try:
            self.ensure_configured(profile)
        except BadRequest as exc:
            raise LLMCallError(exc.detail) from exc
        if profile not in self._models:
            s = self._settings
            if profile.provider == OPENAI_COMPATIBLE:
                self._models[profile] = OpenAIChatModel(
                    self._client_for(profile),
                    profile.model,
                    profile.temperature,
                    profile.timeout_seconds,
                    RetryPolicy(max_retries=s.llm_max_retries),
                    self._limiter_for(profile),
                    logprobs=s.llm_logprobs,
                    profile=profile,
                    memory=self.modes,
                )
            else:
                from quarry.llm.providers import LangChainChatModel

                self._models[profile] = LangChainChatModel(
                    profile,
                    self._limiter_for(profile),
                    self.modes,
                    RetryPolicy(max_retries=s.llm_max_retries),
                )
        return self._models[profile]

    def batch_client(self, profile: ModelProfile) -> BatchClient:
        """The batch endpoints of `profile`'s server (OpenAI-compatible providers only)."""
        from quarry.llm.batch import BatchClient

        chat = self.for_profile(profile)
        if not isinstance(chat, OpenAIChatModel):
            raise LLMCallError(
                f"Batch mode needs an OpenAI-compatible provider, not {profile.provider}."
            )
        return BatchClient(self._client_for(profile), chat)

    async def aclose(self) -> None:
        if self._limiter is not None:
            await self._limiter.aclose()
        for limiter in self._limiters.values():
            await limiter.aclose()
        self._limiters.clear()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        self._models.clear()


@dataclass(frozen=True)
class ModeLoop:
    """What `answer_in_modes` needs of a client: its profile, the modes it learned, the mode
    its next call is asked in, and who refuses a mode in an error ("The LLM server")."""

    profile: ModelProfile
    memory: ModeMemory
    current_mode: Callable[[], OutputMode]
    who: str


async def answer_in_modes(
    loop: ModeLoop,
    send: Callable[[OutputMode, int], Awaitable[ChatReply]],
    messages: Sequence[ChatMessage],
    *,
    budget: int,
    ceiling: int,
) -> ChatReply:
    """One answer from `send(mode, max_tokens)`, for every client alike.

    A refused mode (`ModeUnsupported`) falls back to the next one under `auto` (and is
    learned), or fails with a sentence when the profile fixed it. An answer cut off by its
    budget, not by the model, is asked again with twice the room up to `ceiling` rather than
    re-asked; the cut-off attempts' usage is added to the answer that follows."""
    profile = loop.profile
    chars = sum(len(m.content) for m in messages)
    spent: ChatReply | None = None  # earlier, cut-off attempts of this answer
    while True:
        mode = loop.current_mode()
        try:
            reply = await send(mode, budget)
        except ModeUnsupported:
            following = next_mode(mode)
            if profile.output_mode is not OutputMode.AUTO or following is None:
                raise LLMCallError(
                    f"{loop.who} does not support the structured-output mode {mode}; "
                    "choose another for the profile."
                ) from None
            loop.memory.learn(profile, following)
            log.info("llm.output_mode.fallback", refused=str(mode), next=str(following))
            continue
        reply = replace(
            reply, output_mode=str(mode), prompt_chars=chars, prompt_messages=len(messages)
        )
        if profile.output_mode is OutputMode.AUTO and loop.memory.get(profile) is None:
            loop.memory.learn(profile, mode)
        if spent is not None:
            reply = with_spent(reply, spent)
        if reply.truncated and budget < ceiling:
            budget = min(budget * 2, ceiling)
            log.info("llm.call.truncated", max_tokens=budget)
            spent = reply
            continue
        return reply


def with_spent(reply: ChatReply, spent: ChatReply) -> ChatReply:
    """`reply` with the usage of the cut-off attempt `spent` that preceded it added in."""
    return replace(
        reply,
        tokens_in=reply.tokens_in + spent.tokens_in,
        tokens_out=reply.tokens_out + spent.tokens_out,
        latency_ms=reply.latency_ms + spent.latency_ms,
        prompt_chars=reply.prompt_chars + spent.prompt_chars,
        prompt_messages=reply.prompt_messages + spent.prompt_messages,
        cached_tokens=reply.cached_tokens + spent.cached_tokens,
    )


def api_key_from_env(name: str | None) -> str | None:
    """The API key in the environment variable `name` (the key itself is never stored).

    A name in Quarry's own namespace is never read, whatever the profile says (see
    `key_variable_problem`): a profile saved before that rule still cannot send them."""
    if not name:
        return None
    if _is_quarry_setting(name):
        raise LLMCallError(_QUARRY_SETTING.format(name=name))
    return os.environ.get(name)


_QUARRY_SETTING = (
    "The profile names {name} for its API key, but QUARRY_* variables are Quarry's own "
    "settings (its secret key, database URL, …), never a key a profile may send; put the "
    "key in a variable of its own (e.g. LOCAL_LLM_API_KEY) and name that."
)


def _is_quarry_setting(name: str) -> bool:
    # Settings are read case-insensitively (pydantic-settings), so quarry_secret_key counts.
    return name.upper().startswith("QUARRY_")


def key_variable_problem(
    settings: Settings, provider: str, base_url: str | None, name: str | None
) -> str | None:
    """Why a profile may not name the environment variable `name` for its key, or None.

    A profile sends the variable's value to its `base_url`, which whoever edits the profile
    chooses; so a profile may never name Quarry's own settings, may name the server's own
    OpenAI key only to send it to the server's own endpoint, and — where the operator lists
    them in QUARRY_PROFILE_KEY_VARIABLES (advisable on a server with several users) — may name
    only those variables."""
    if not name:
        return None
    if _is_quarry_setting(name):
        return _QUARRY_SETTING.format(name=name)
    allowed = settings.profile_key_variables
    if allowed is not None and name not in allowed:
        listed = ", ".join(allowed) or "none"
        return (
            f"This server lets profiles name only these variables for their key "
            f"(QUARRY_PROFILE_KEY_VARIABLES): {listed}; {name} is not one of them."
        )
    own = name.upper() == "OPENAI_API_KEY"
    if own and (provider != OPENAI_COMPATIBLE or (base_url or None) != settings.openai_base_url):
        return (
            "OPENAI_API_KEY is this server's own key: a profile may send it only to the "
            "server's own endpoint (provider openai, the base_url of OPENAI_BASE_URL); for "
            "another server, name a variable of its own."
        )
    return None
