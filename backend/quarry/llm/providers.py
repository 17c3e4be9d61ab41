"""Chat models of providers other than OpenAI-compatible servers, through LangChain.

`langchain.chat_models.init_chat_model` — the `langchain` package's public, provider-agnostic
constructor — builds Anthropic, Azure OpenAI, Google (Gemini API) and Ollama chat models
from a profile, when the provider's integration package is installed (`langchain` itself is
a dependency of Quarry; `langchain-openai`, which Azure uses, too; the others are optional).
The OpenAI-compatible path (llm/client.py, straight through the openai SDK) stays the
default, the benchmarked one and the one tested end to end; this one is tested end to end
through `azure_openai` against the suite's fake server.

What a profile gives, per provider (`PROVIDERS`): the model (Azure: the deployment), the
base URL (Azure: the resource endpoint carrying `?api-version=…`, or the deployment's
"Target URI" as the Azure portal shows it; Ollama: its native URL, a trailing `/v1` is
dropped), the name of the environment variable with the key (read when the model is built,
in the process that makes the calls; never stored, logged or shown), temperature, output cap
and timeout. A provider's own environment variables (ANTHROPIC_API_KEY, AZURE_OPENAI_API_KEY,
OPENAI_API_KEY, GOOGLE_API_KEY…) are never read behind the profile's back: a profile may
point at any URL, and the process's keys must not follow it there. `provider_problem` says,
before anything is saved or run, what keeps a profile from working (a package to install,
a missing key name or API version), so a user gets a 400 naming the pip package rather than a
failed run.

Calls behave as on the OpenAI path: the same budget (`max_tokens` within the profile's cap
and what the context window leaves; a prompt that cannot fit is never sent), the same
structured-output modes through LangChain's `with_structured_output` (`json_schema`,
`json_mode`, `function_calling`) or the prompt alone, `auto` moving on when the provider's
class or server refuses a mode and remembering what worked, an answer cut off at the budget
asked again with more room, and Quarry's own retries (the packages' are switched off where
they have any) with backoff honouring `Retry-After`, each attempt through the limiter and
the run's gate. Answers are read from the raw message (tool-call arguments or text) and
parsed as the OpenAI path parses them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import openai
import structlog

from quarry import metrics
from quarry.llm.client import (
    _CONTEXT_EXCEEDED,
    _FEATURE,
    _NOT_SUPPORTED,
    DEFAULT_MAX_TOKENS,
    EXPECTED_OUTPUT_TOKENS,
    MIN_OUTPUT_TOKENS,
    RESPONSE_FORMAT,
    CallCancelled,
    CallGate,
    ChatMessage,
    ChatReply,
    ContextTooLong,
    LLMCallError,
    ModeLoop,
    ModelProfile,
    ModeMemory,
    ModeUnsupported,
    OutputMode,
    answer_in_modes,
    api_key_from_env,
    estimate_prompt_tokens,
    parse_answer,
)
from quarry.llm.limiter import CallLimiter
from quarry.llm.retry import RetryPolicy, retry_after_seconds

log = structlog.get_logger(__name__)

Options = dict[str, Any]


@dataclass(frozen=True)
class AzureTarget:
    """Where an Azure OpenAI profile's calls go, read from its base URL."""

    endpoint: str
    deployment: str | None
    api_version: str | None


def azure_target(base_url: str) -> AzureTarget:
    """The endpoint, deployment and API version in an Azure base URL: the resource endpoint
    with `?api-version=…` (`https://res.openai.azure.com/?api-version=2024-10-21`), or a
    deployment's Target URI (`…/openai/deployments/<name>/chat/completions?api-version=…`)."""
    parts = urlsplit(base_url)
    versions: list[str | None] = [*parse_qs(parts.query).get("api-version", []), None]
    path, deployment = parts.path, None
    at = path.find("/openai")
    if at >= 0:
        segments = path[at:].split("/")  # "", "openai", "deployments", name, …
        if len(segments) > 3 and segments[2] == "deployments" and segments[3]:
            deployment = segments[3]
        path = path[:at]
    endpoint = urlunsplit((parts.scheme, parts.netloc, path.rstrip("/"), "", ""))
    return AzureTarget(endpoint, deployment, versions[0])


def _anthropic_options(profile: ModelProfile, key: str | None) -> Options:
    options: Options = {"api_key": key, "max_retries": 0}
    if profile.base_url:
        options["base_url"] = profile.base_url
    return options


def _azure_options(profile: ModelProfile, key: str | None) -> Options:
    target = azure_target(profile.base_url or "")
    return {
        "azure_endpoint": target.endpoint,
        "azure_deployment": target.deployment or profile.model,
        "api_version": target.api_version,
        "api_key": key,
        # Else read from AZURE_OPENAI_AD_TOKEN, and sent in place of the profile's key.
        "azure_ad_token": None,
        "max_retries": 0,
    }


def _google_options(profile: ModelProfile, key: str | None) -> Options:
    options: Options = {"api_key": key, "max_retries": 0}
    if profile.base_url:
        options["base_url"] = profile.base_url
    return options


def _ollama_options(profile: ModelProfile, key: str | None) -> Options:
    # Ollama's own API (not its OpenAI-compatible /v1) and its client's options; without
    # num_ctx Ollama cuts every prompt to its default window (2048 tokens) without a word.
    client: Options = {"timeout": profile.timeout_seconds}
    if key:
        client["headers"] = {"Authorization": f"Bearer {key}"}
    options: Options = {"num_ctx": profile.context_window, "client_kwargs": client}
    if profile.base_url:
        options["base_url"] = re.sub(r"/v1/?$", "", profile.base_url)
    return options


@dataclass(frozen=True)
class ProviderSpec:
    """How a Quarry provider is built with `init_chat_model`."""

    #: init_chat_model's `model_provider`.
    langchain_provider: str
    #: The pip packages it needs (their modules: the names with `_` for `-`).
    packages: tuple[str, ...]
    #: The constructor options of the profile, but for temperature, timeout and output cap.
    options: Callable[[ModelProfile, str | None], Options]
    #: Whether a call needs a key (and so the profile the name of its variable).
    needs_key: bool = True
    #: The constructor option that caps an answer's tokens.
    max_tokens_option: str = "max_tokens"
    #: Whether the class takes `timeout` (Ollama's client takes it in `client_kwargs`).
    takes_timeout: bool = True
    #: An example of the key's usual environment variable, for messages.
    key_example: str = ""
    #: The mode `auto` tries first (then the ones after it in `FALLBACK_ORDER`): the
    #: integration's own default way of asking for structured output.
    auto_first: OutputMode = OutputMode.JSON_SCHEMA


#: Quarry's provider names (LangChain's own names for two of them are accepted as aliases).
PROVIDERS: dict[str, ProviderSpec] = {
    "anthropic": ProviderSpec(
        "anthropic",
        ("langchain", "langchain-anthropic"),
        _anthropic_options,
        key_example="ANTHROPIC_API_KEY",
        auto_first=OutputMode.TOOLS,  # langchain-anthropic's default: tool use
    ),
    "azure": ProviderSpec(
        "azure_openai",
        ("langchain", "langchain-openai"),
        _azure_options,
        key_example="AZURE_OPENAI_API_KEY",
    ),
    "google": ProviderSpec(
        "google_genai",
        ("langchain", "langchain-google-genai"),
        _google_options,
        key_example="GOOGLE_API_KEY",
    ),
    "ollama": ProviderSpec(
        "ollama",
        ("langchain", "langchain-ollama"),
        _ollama_options,
        needs_key=False,
        max_tokens_option="num_predict",
        takes_timeout=False,
    ),
}
ALIASES: dict[str, str] = {"azure_openai": "azure", "google_genai": "google"}


def canonical_provider(name: str) -> str:
    """Quarry's name of a provider (`azure_openai` is `azure`, `google_genai` is `google`)."""
    return ALIASES.get(name, name)


def missing_packages(provider: str) -> list[str]:
    """The packages `provider` needs that are not installed ([] when it can be used)."""
    packages = PROVIDERS[canonical_provider(provider)].packages
    return [p for p in packages if importlib.util.find_spec(p.replace("-", "_")) is None]


def provider_problem(provider: str, base_url: str | None, api_key_env: str | None) -> str | None:
    """Why a profile of a LangChain `provider` cannot make calls (a sentence a user can act
    on), or None. Package presence is this process's: a worker without them fails its
    calls with the same sentence."""
    name = canonical_provider(provider)
    spec = PROVIDERS[name]
    missing = missing_packages(name)
    if missing:
        return (
            f"The provider {name} needs the Python package{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, which {'are' if len(missing) > 1 else 'is'} not installed: "
            f"pip install {' '.join(missing)}, then restart Quarry (and its workers)."
        )
    if spec.needs_key and not api_key_env:
        return (
            f"The provider {name} needs api_key_env: the name of the environment variable "
            f"that holds its key (e.g. {spec.key_example}). Quarry never reads a provider's "
            "key from anywhere else."
        )
    if name == "azure":
        target = azure_target(base_url) if base_url else None
        if target is None or not target.api_version:
            return (
                "An azure profile needs base_url: the resource endpoint with the API version, "
                "e.g. https://my-resource.openai.azure.com/?api-version=2024-10-21, or the "
                "deployment's Target URI from the Azure portal (…/openai/deployments/<name>/"
                "chat/completions?api-version=…); model is the deployment's name."
            )
    return None


#: `with_structured_output`'s method for each structured-output mode (prompt: none).
METHODS: dict[OutputMode, str] = {
    OutputMode.JSON_SCHEMA: "json_schema",
    OutputMode.JSON_OBJECT: "json_mode",
    OutputMode.TOOLS: "function_calling",
}
#: Chat models kept per profile, one per output budget a call asked for.
MAX_MODELS_PER_PROFILE = 8
#: How much longer than the profile's timeout a call may take before Quarry gives up on it
#: itself (the provider's client has the profile's timeout; this only guards against one
#: that does not apply it to the whole call).
HANG_GUARD_FACTOR = 2.0


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of a provider SDK's error (openai, anthropic, ollama, httpx…)."""
    for holder in (exc, getattr(exc, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int):
            return status
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and 100 <= code < 600 else None


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower()


def _is_connection_error(exc: BaseException) -> bool:
    name = type(exc).__name__.lower()
    return isinstance(exc, ConnectionError) or "connect" in name or "network" in name


def _error_text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") if isinstance(inner, dict) else None
        if message:
            return str(message)
    return str(exc)


def _is_quota_exhausted(exc: BaseException) -> bool:
    return _status_of(exc) == 429 and "insufficient_quota" in (
        str(getattr(exc, "code", "")) + _error_text(exc)
    )


def _is_retryable(exc: BaseException) -> bool:
    """Transient: timeouts, dropped connections, 408, 409, 429 (not quota) and 5xx."""
    status = _status_of(exc)
    if status is not None:
        if status == 429:
            return not _is_quota_exhausted(exc)
        return status in (408, 409) or status >= 500
    return _is_timeout(exc) or _is_connection_error(exc)


def _retry_reason(exc: BaseException) -> str:
    status = _status_of(exc)
    if status is not None:
        return str(status)
    if _is_timeout(exc):
        return "timeout"
    if _is_connection_error(exc):
        return "connection"
    return type(exc).__name__


def _is_context_exceeded(exc: BaseException) -> bool:
    return _status_of(exc) in (400, 413) and bool(_CONTEXT_EXCEEDED.search(_error_text(exc)))


def _is_mode_unsupported(exc: BaseException) -> bool:
    if _status_of(exc) not in (400, 404, 422, 501):
        return False
    text = _error_text(exc)
    return bool(_NOT_SUPPORTED.search(text) and _FEATURE.search(text))


def _answer_text(message: Any) -> str:
    """The answer in a LangChain AI message: the first tool call's arguments, else its text."""
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        return json.dumps(calls[0].get("args") or {})
    invalid = getattr(message, "invalid_tool_calls", None) or []
    if invalid:
        return str(invalid[0].get("args") or "")
    content = getattr(message, "content", "")
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _was_cut_off(message: Any) -> bool:
    """The provider stopped the answer at the output cap (each names it its own way)."""
    meta = getattr(message, "response_metadata", None) or {}
    reason = meta.get("finish_reason") or meta.get("stop_reason") or meta.get("done_reason")
    return str(reason or "").lower() in ("length", "max_tokens")


def _usage(message: Any) -> tuple[int, int, int]:
    usage = getattr(message, "usage_metadata", None) or {}
    details = usage.get("input_token_details") or {}
    cached = details.get("cache_read") if isinstance(details, dict) else None
    return (
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        int(cached) if isinstance(cached, int) else 0,
    )


def _tool_schema(response_format: dict[str, Any]) -> dict[str, Any]:
    """The wire schema as a titled JSON schema: the form every provider's
    `with_structured_output` takes (its title names the tool or the response format)."""
    schema = response_format["json_schema"]
    return {"title": schema["name"], "description": "Record the answer.", **schema["schema"]}


class LangChainChatModel:
    """`ChatModel` over a LangChain chat model built by `init_chat_model`."""

    def __init__(
        self,
        profile: ModelProfile,
        limiter: CallLimiter,
        memory: ModeMemory,
        policy: RetryPolicy,
        rng: random.Random | None = None,
    ) -> None:
        self.profile = profile
        self._spec = PROVIDERS[canonical_provider(profile.provider)]
        self._limiter = limiter
        self._memory = memory
        self._policy = policy
        self._rng = rng or random.Random()
        self._models: OrderedDict[int, Any] = OrderedDict()

    def _secret(self) -> str | None:
        return api_key_from_env(self.profile.api_key_env)

    def _chat_model(self, max_tokens: int) -> Any:
        """The provider's chat model with an output cap of `max_tokens` (built once per cap:
        a cap is a constructor option of some providers' classes)."""
        model = self._models.get(max_tokens)
        if model is not None:
            self._models.move_to_end(max_tokens)
            return model
        profile, spec = self.profile, self._spec
        problem = provider_problem(profile.provider, profile.base_url, profile.api_key_env)
        if problem is not None:  # checked when the profile was saved; this process may differ
            raise LLMCallError(problem)
        key = self._secret()
        if spec.needs_key and not key:
            raise LLMCallError(
                f"The environment variable {profile.api_key_env} that the profile names for "
                f"its key is not set in the process making the calls."
            )
        from langchain.chat_models import init_chat_model

        options = spec.options(profile, key)
        options["temperature"] = profile.temperature
        options[spec.max_tokens_option] = max_tokens
        if spec.takes_timeout:
            options["timeout"] = profile.timeout_seconds
        try:
            model = init_chat_model(
                profile.model, model_provider=spec.langchain_provider, **options
            )
        except ImportError as exc:
            raise LLMCallError(
                f"The provider {canonical_provider(profile.provider)} could not be loaded: "
                f"{self._scrub(str(exc))[:300]}"
            ) from exc
        except (ValueError, TypeError) as exc:  # the provider's class refused an option
            raise LLMCallError(
                f"The provider {canonical_provider(profile.provider)} refused the profile's "
                f"settings: {self._scrub(str(exc))[:300]}"
            ) from exc
        self._models[max_tokens] = model
        while len(self._models) > MAX_MODELS_PER_PROFILE:
            self._models.popitem(last=False)
        return model

    def _scrub(self, text: str) -> str:
        """`text` without the key in it (a provider may echo what it was sent)."""
        key = self._secret()
        return text.replace(key, "***") if key else text

    def current_mode(self) -> OutputMode:
        """The mode the next call is asked in: the profile's, or for `auto` the one learned."""
        profile = self.profile
        if profile.output_mode is not OutputMode.AUTO:
            return profile.output_mode
        return self._memory.get(profile) or profile.learned_mode or self._spec.auto_first

    def _runnable(self, mode: OutputMode, max_tokens: int, response_format: dict[str, Any]) -> Any:
        model = self._chat_model(max_tokens)
        method = METHODS.get(mode)
        if method is None:
            return model
        try:
            return model.with_structured_output(
                _tool_schema(response_format), method=method, include_raw=True
            )
        except (ValueError, NotImplementedError, TypeError) as exc:
            # The provider's class has no such method (e.g. Anthropic's has no json_mode).
            raise ModeUnsupported() from exc

    async def complete_json(
        self,
        messages: list[ChatMessage],
        gate: CallGate | None = None,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply:
        profile = self.profile
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
        ceiling = min(profile.max_output_tokens, room)
        payload = [(_ROLES[m.role], m.content) for m in messages]

        async def send(mode: OutputMode, budget: int) -> ChatReply:
            runnable = self._runnable(mode, budget, shape)
            return await self._send(runnable, payload, gate, prompt_tokens)

        who = f"The provider {canonical_provider(profile.provider)}"
        return await answer_in_modes(
            ModeLoop(profile, self._memory, self.current_mode, who),
            send,
            messages,
            budget=budget,
            ceiling=ceiling,
        )

    async def _send(
        self,
        runnable: Any,
        payload: list[tuple[str, str]],
        gate: CallGate | None,
        prompt_tokens: int,
    ) -> ChatReply:
        """One answer, retrying transient failures, each attempt through the limiter."""
        estimate = prompt_tokens + EXPECTED_OUTPUT_TOKENS
        guard = self.profile.timeout_seconds * HANG_GUARD_FACTOR + 5
        retries = 0
        while True:
            if gate is not None and (reason := await gate.check()) is not None:
                raise CallCancelled(reason)
            started = time.perf_counter()
            try:
                async with self._limiter.slot(estimate) as permit:
                    if gate is not None and (reason := await gate.admit(prompt_tokens)) is not None:
                        permit.record_usage(0)
                        raise CallCancelled(reason)
                    started = time.perf_counter()
                    try:
                        async with asyncio.timeout(guard):
                            result = await runnable.ainvoke(payload)
                    except openai.LengthFinishReasonError as cut:
                        # langchain-openai parses a json_schema answer with the SDK, which
                        # raises on an answer cut off at the cap: a cut-off answer still.
                        result = cut
                    except BaseException:
                        if gate is not None:
                            await asyncio.shield(gate.settle(0, 0))
                        raise
                    reply = self._read(result, round((time.perf_counter() - started) * 1000))
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
            except (CallCancelled, asyncio.CancelledError, LLMCallError):
                raise
            except Exception as exc:
                reason = _retry_reason(exc)
                metrics.record_llm_call(
                    self.profile.model, reason, time.perf_counter() - started, 0, 0
                )
                if _is_context_exceeded(exc):
                    raise ContextTooLong(
                        "The provider said the prompt is longer than the model's context "
                        f"({self._scrub(_error_text(exc))[:200]}).",
                        sent=True,
                    ) from exc
                if _is_mode_unsupported(exc):
                    raise ModeUnsupported() from exc
                if not _is_retryable(exc) or retries >= self._policy.max_retries:
                    raise LLMCallError(self._describe(exc, retries)) from exc
                metrics.record_llm_retry(reason)
                delay = self._policy.delay(retries, retry_after_seconds(exc), self._rng)
                retries += 1
                log.info(
                    "llm.call.retried", reason=reason, retry=retries, wait_seconds=round(delay, 3)
                )
                await asyncio.sleep(delay)

    def _read(self, result: Any, latency_ms: int) -> ChatReply:
        """The reply in what the runnable returned: an AI message, or (structured output with
        `include_raw`) a dict holding it as `raw`. Parsed here, as the OpenAI path parses."""
        if isinstance(result, openai.LengthFinishReasonError):
            usage = result.completion.usage
            choices = result.completion.choices
            return ChatReply(
                text=(choices[0].message.content or "") if choices else "",
                parsed=None,
                parse_error="The answer was cut off before it was complete.",
                tokens_in=usage.prompt_tokens if usage else 0,
                tokens_out=usage.completion_tokens if usage else 0,
                latency_ms=latency_ms,
                model=self.profile.model,
                truncated=True,
            )
        message = result.get("raw") if isinstance(result, dict) else result
        text = _answer_text(message)
        tokens_in, tokens_out, cached = _usage(message)
        parsed, error = parse_answer(text)
        truncated = False
        refusal = (getattr(message, "additional_kwargs", None) or {}).get("refusal")
        if refusal:
            parsed, error = None, f"The model refused to answer: {str(refusal)[:300]}"
        elif _was_cut_off(message):
            parsed, error = None, "The answer was cut off before it was complete."
            truncated = True
        return ChatReply(
            text=text,
            parsed=parsed,
            parse_error=error,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=latency_ms,
            model=self.profile.model,
            truncated=truncated,
            cached_tokens=cached,
        )

    def _describe(self, exc: BaseException, retries: int) -> str:
        """A sentence a user can act on; never the key."""
        name = canonical_provider(self.profile.provider)
        after = f" (after {retries} retries)" if retries else ""
        status = _status_of(exc)
        if status is None:
            if _is_timeout(exc):
                return f"The {name} call timed out after {self.profile.timeout_seconds:g} s{after}."
            if _is_connection_error(exc):
                return f"Could not reach the {name} server{after}; check the profile's base_url."
            return f"The {name} call failed: {type(exc).__name__}{after}."
        if status == 401:
            return (
                f"The {name} server rejected the API key (401); check the environment "
                f"variable {self.profile.api_key_env}."
            )
        if status == 429 and _is_quota_exhausted(exc):
            return f"The {name} provider says the account has run out of quota (429)."
        if status == 404:
            return (
                f"The {name} server does not know this model or deployment (404); check the "
                "profile's model and base_url."
            )
        detail = self._scrub(_error_text(exc))[:300]
        return f"The {name} server answered HTTP {status}{after}. {detail}".strip()


_ROLES = {"system": "system", "user": "human", "assistant": "ai"}
