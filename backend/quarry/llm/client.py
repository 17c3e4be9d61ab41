"""The single typed interface to chat models. Nothing outside llm/ imports LangChain.

Calls go through `ChatOpenAI` (langchain-openai), so OpenAI and any OpenAI-compatible server
(vLLM, Ollama, llama.cpp, LM Studio, Azure's compatible endpoint) work the same way. The model
is asked for one fixed JSON shape via structured output (a second fixed one for grouped calls,
which answer several variables at once); the *value* inside is validated per variable type by
the caller, so the wire schema never changes between variables (which keeps prompts
cache-friendly).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import openai
import structlog
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_openai import ChatOpenAI

from quarry import metrics
from quarry.errors import BadRequest
from quarry.llm.limiter import CallLimiter, LimitSettings, create_limiter
from quarry.llm.retry import (
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
    """`should_stop` said so before an attempt: no further request was sent."""


StopCheck = Callable[[], Awaitable[bool]]


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


def token_confidence(response_metadata: dict[str, Any]) -> float | None:
    """The geometric mean of the answer's token probabilities (0..1), or None without
    log-probabilities. Low when the model hesitated somewhere in its answer."""
    logprobs = response_metadata.get("logprobs")
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
        should_stop: StopCheck | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatReply:
        """One answer, retrying transient failures; `should_stop` is asked before each attempt
        (before waiting for a limiter slot, and again once it has one).

        `response_format` is `RESPONSE_FORMAT` (one answer) unless given, e.g.
        `GROUP_RESPONSE_FORMAT` for a grouped call."""
        ...


def estimate_prompt_tokens(messages: list[ChatMessage]) -> int:
    """About four characters per token plus a few per message: close for English prose,
    and needs no tokenizer download (tiktoken fetches its tables at run time)."""
    return math.ceil(sum(len(m.content) for m in messages) / 4) + 4 * len(messages)


def _to_langchain(messages: list[ChatMessage]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m.role](content=m.content) for m in messages]


def _describe_failure(exc: Exception, timeout: float, retries: int) -> str:
    """A sentence a user can act on; never includes credentials."""
    after = f" (after {retries} retries)" if retries else ""
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


class LangChainChatModel:
    """`ChatModel` over langchain-openai's ChatOpenAI with JSON-schema structured output.

    Each HTTP attempt holds a limiter slot (concurrency, RPM, TPM); retries happen here, with
    the SDK's own switched off, so that every attempt is counted and rate limited.
    """

    def __init__(
        self,
        chat: ChatOpenAI,
        model: str,
        timeout: float,
        policy: RetryPolicy,
        limiter: CallLimiter,
        rng: random.Random | None = None,
    ) -> None:
        self._chat = chat
        self._model = model
        self._timeout = timeout
        self._policy = policy
        self._limiter = limiter
        self._rng = rng or random.Random()

    async def complete_json(
        self,
        messages: list[ChatMessage],
        should_stop: StopCheck | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatReply:
        lc_messages = _to_langchain(messages)
        response_format = response_format or RESPONSE_FORMAT
        estimate = estimate_prompt_tokens(messages) + EXPECTED_OUTPUT_TOKENS
        retries = 0
        while True:
            if should_stop is not None and await should_stop():
                raise CallCancelled()
            started = time.perf_counter()
            try:
                async with self._limiter.slot(estimate) as permit:
                    # Asked again: the run may have been cancelled while this call waited.
                    if should_stop is not None and await should_stop():
                        permit.record_usage(0)  # no request was sent: no tokens
                        raise CallCancelled()
                    started = time.perf_counter()  # the call, not the wait for a slot
                    reply = await self._attempt(lc_messages, response_format)
                    permit.record_usage(reply.tokens_in + reply.tokens_out)
                metrics.record_llm_call(
                    reply.model,
                    metrics.LLM_OK if reply.parsed is not None else "invalid_answer",
                    time.perf_counter() - started,
                    reply.tokens_in,
                    reply.tokens_out,
                )
                return reply
            except openai.OpenAIError as exc:
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

    async def _attempt(
        self, lc_messages: list[BaseMessage], response_format: dict[str, Any]
    ) -> ChatReply:
        """One HTTP request.

        Processor time per call matters: one process makes 80 calls a second at C = 16 and
        200 ms latency, and the SDK is most of the work of a task. So:
        - `response_format` travels in the request body as is (`extra_body`). Passed as a
          call argument, langchain-openai sends it through the SDK's `parse()`, which re-walks
          the schema and builds a parsed copy of the reply that nothing uses (the answer text
          is parsed strictly here), for about a third of the call's CPU.
        - The model's `_agenerate` is called, the method every LangChain chat model
          implements, rather than `ainvoke`, whose callback and tracing set-up (Quarry has
          none: document text must not leave for a tracing service) cost another quarter.
          The generation's metadata is merged into the message as `ainvoke` would.
        The request on the wire is the same.
        """
        started = time.perf_counter()
        result = await self._chat._agenerate(
            lc_messages, extra_body={"response_format": response_format}
        )
        latency_ms = round((time.perf_counter() - started) * 1000)
        generation = result.generations[0]
        raw = generation.message
        text, tokens_in, tokens_out, model, refusal = "", 0, 0, self._model, None
        token_probability, finish_reason = None, None
        if isinstance(raw, AIMessage | AIMessageChunk):
            metadata = {
                **(result.llm_output or {}),  # the model that answered
                **(generation.generation_info or {}),  # finish reason, log-probabilities
                **raw.response_metadata,
            }
            token_probability = token_confidence(metadata)
            finish_reason = metadata.get("finish_reason")
            text = raw.content if isinstance(raw.content, str) else json.dumps(raw.content)
            if raw.usage_metadata:
                tokens_in = raw.usage_metadata.get("input_tokens", 0)
                tokens_out = raw.usage_metadata.get("output_tokens", 0)
            model = str(metadata.get("model_name") or model)
            refusal = raw.additional_kwargs.get("refusal")
        parsed, parse_error = _parse_object(text)
        if refusal:
            parsed, parse_error = None, f"The model refused to answer: {str(refusal)[:300]}"
        elif finish_reason == "length":
            # The answer hit the output-token limit: a bad answer, not a failed call. (Cut-off
            # JSON can still parse, e.g. a list closed early: it is not trusted either.)
            parsed, parse_error = None, "The answer was cut off before it was complete."
        return ChatReply(
            text=text,
            parsed=parsed,
            parse_error=parse_error,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=latency_ms,
            model=model,
            token_confidence=token_probability,
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
        self._http: openai.DefaultAsyncHttpxClient | None = None

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
            # A local server needs no key, but the client insists on one.
            api_key = s.openai_api_key.get_secret_value() if s.openai_api_key else "not-needed"
            if self._http is None:
                # The factory's own connection pool, closed with it. langchain-openai's default
                # is one pool per base URL for the whole interpreter, whose kept-alive
                # connections belong to the event loop that opened them: a second loop in the
                # same process (an embedded app restarted, a test) would reuse dead ones.
                self._http = openai.DefaultAsyncHttpxClient(timeout=s.llm_timeout_seconds)
            chat = ChatOpenAI(
                http_async_client=self._http,
                model=model,
                temperature=temperature,
                api_key=api_key,
                base_url=s.openai_base_url,
                timeout=s.llm_timeout_seconds,
                max_retries=0,  # retried in LangChainChatModel, each attempt through the limiter
                use_responses_api=False,
                # Not every model accepts the parameter (OpenAI's reasoning models refuse it).
                logprobs=True if s.llm_logprobs else None,
            )
            policy = RetryPolicy(max_retries=s.llm_max_retries)
            self._models[key] = LangChainChatModel(
                chat, model, s.llm_timeout_seconds, policy, self.limiter
            )
        return self._models[key]

    async def aclose(self) -> None:
        if self._limiter is not None:
            await self._limiter.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._models.clear()
