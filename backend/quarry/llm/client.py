"""The single typed interface to chat models. Nothing outside llm/ imports openai or LangChain.

Calls go to OpenAI or any OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio,
Azure's compatible endpoint) through the openai SDK's public `post` — the leanest public
path: the SDK's request options, authentication, timeouts and error types, without building
typed request and response objects nobody reads (measured: 1.1–1.4 ms of CPU a call against
2.1 for `chat.completions.create` and 3.0 for LangChain's ChatOpenAI; a run makes thousands).
The model is asked for one fixed JSON shape via structured output (a second fixed one for
grouped calls, which answer several variables at once); the *value* inside is validated per
variable type by the caller, so the wire schema never changes between variables (which
keeps prompts cache-friendly).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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
    ) -> ChatReply:
        """One answer, retrying transient failures; `gate` is asked before each attempt
        (before waiting for a limiter slot, and again once it has one) and may refuse it
        (`CallCancelled`).

        `response_format` is `RESPONSE_FORMAT` (one answer) unless given, e.g.
        `GROUP_RESPONSE_FORMAT` for a grouped call."""
        ...


def estimate_prompt_tokens(messages: list[ChatMessage]) -> int:
    """About four characters per token plus a few per message: close for English prose,
    and needs no tokenizer download (tiktoken fetches its tables at run time)."""
    return math.ceil(sum(len(m.content) for m in messages) / 4) + 4 * len(messages)


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


class OpenAIChatModel:
    """`ChatModel` over the openai SDK's client, with JSON-schema structured output.

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
    ) -> None:
        self._client = client
        self._model = model
        self._temperature = temperature
        self._timeout = timeout
        self._policy = policy
        self._limiter = limiter
        self._logprobs = logprobs
        self._rng = rng or random.Random()

    async def complete_json(
        self,
        messages: list[ChatMessage],
        gate: CallGate | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatReply:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": self._temperature,
            "response_format": response_format or RESPONSE_FORMAT,
        }
        if self._logprobs:
            # Not every model accepts the parameter (OpenAI's reasoning models refuse it).
            body["logprobs"] = True
        prompt_tokens = estimate_prompt_tokens(messages)
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
        choice = data["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidCompletion("the reply was not a chat completion") from exc
    text = message.get("content")
    text = text if isinstance(text, str) else ("" if text is None else json.dumps(text))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    parsed, parse_error = _parse_object(text)
    refusal = message.get("refusal")
    if refusal:
        parsed, parse_error = None, f"The model refused to answer: {str(refusal)[:300]}"
    elif choice.get("finish_reason") == "length":
        # The answer hit the output-token limit: a bad answer, not a failed call. (Cut-off
        # JSON can still parse, e.g. a list closed early: it is not trusted either.)
        parsed, parse_error = None, "The answer was cut off before it was complete."
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
    )


def _parse_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Strictly parse the answer text.

    LangChain's own parser for dict schemas "repairs" cut-off JSON into a partial object,
    which would let a truncated value pass as complete; so the raw text is parsed here.
    """
    if not text.strip():
        return None, "The answer was empty."
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return None, "The answer was not valid JSON."
    if not isinstance(parsed, dict):
        return None, "The answer was JSON but not an object."
    return parsed, None


class ChatModelFactory:
    """Builds (and reuses) chat models from the settings; knows whether an LLM is configured.

    One per process. Its limiter is shared by every model it builds, and through Redis with
    every other process of the deployment when QUARRY_REDIS_URL is set.
    """

    def __init__(self, settings: Settings, limiter: CallLimiter | None = None) -> None:
        self._settings = settings
        self._models: dict[tuple[str, float], ChatModel] = {}
        self._limiter = limiter
        self._client: openai.AsyncOpenAI | None = None

    @property
    def configured(self) -> bool:
        return self._settings.llm_configured

    def ensure_configured(self) -> None:
        if not self.configured:
            raise LLMNotConfigured()

    @property
    def limiter(self) -> CallLimiter:
        """Created on first use: an API process in distributed mode never calls the LLM."""
        if self._limiter is None:
            s = self._settings
            limits = LimitSettings(concurrency=s.llm_concurrency, rpm=s.llm_rpm, tpm=s.llm_tpm)
            self._limiter = create_limiter(
                limits,
                s.redis_url,
                key_prefix=f"{s.redis_queue}:llm",
                # A killed worker's slots come back no later than its tasks do.
                holder_ttl_seconds=min(LIMITER_HOLDER_TTL_SECONDS, s.task_lease_seconds),
            )
        return self._limiter

    def get(self, model: str, temperature: float) -> ChatModel:
        self.ensure_configured()
        key = (model, temperature)
        if key not in self._models:
            s = self._settings
            if self._client is None:
                # A local server needs no key, but the client insists on one.
                api_key = s.openai_api_key.get_secret_value() if s.openai_api_key else "not-needed"
                # The factory's own connection pool, closed with it: kept-alive connections
                # belong to the event loop that opened them, and a second loop in the same
                # process (an embedded app restarted, a test) must not reuse dead ones.
                self._client = openai.AsyncOpenAI(
                    api_key=api_key,
                    base_url=s.openai_base_url,
                    timeout=s.llm_timeout_seconds,
                    max_retries=0,  # retried in OpenAIChatModel, each attempt through the limiter
                    http_client=openai.DefaultAsyncHttpx2Client(timeout=s.llm_timeout_seconds),
                )
            self._models[key] = OpenAIChatModel(
                self._client,
                model,
                temperature,
                s.llm_timeout_seconds,
                RetryPolicy(max_retries=s.llm_max_retries),
                self.limiter,
                logprobs=s.llm_logprobs,
            )
        return self._models[key]

    async def aclose(self) -> None:
        if self._limiter is not None:
            await self._limiter.aclose()
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._models.clear()
