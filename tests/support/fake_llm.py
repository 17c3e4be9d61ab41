"""A fake OpenAI-compatible chat-completions server for the test suite.

Tests point Quarry's real LLM stack (``langchain_openai.ChatOpenAI`` → ``openai`` SDK → HTTP) at
``FakeLLM.base_url`` so the real client, its retries, timeouts and response parsing are exercised
instead of a mock. The server is a standard-library ``ThreadingHTTPServer`` on 127.0.0.1 with an
ephemeral port, served from a daemon thread of the test process; every request gets its own
thread, so a slow or held request never blocks the others, and other processes (Arq workers) can
reach it too.

Scripting:

* ``script(variable=..., contains=..., reply=..., times=...)`` adds a rule. The variable of a
  request is the last ``Variable: <name>`` line in its message text. The most recently added
  matching rule wins; ``times`` limits how many answers a rule gives.
* ``default_reply`` answers when no rule matches.
* Grouped calls (several variables per call) carry every variable's ``Variable:`` line
  (``FakeRequest.variables``) and ask for the ``GROUP_SCHEMA_NAME`` answer schema
  (``FakeRequest.is_group``); ``answer_each(per_variable)`` answers single and grouped calls
  alike from one answer per variable.
* Log-probabilities (when a request asks for ``logprobs``): one entry per token of at most
  four characters, never straddling a value, a whitespace run or a code fence. By default every
  token is nearly certain (about -0.001 to -0.007). ``value_certainty[name]`` sets the
  probability of the tokens of variable ``name``'s ``value`` (in a grouped answer, of its own
  entry's value: the value after that entry's ``"variable"``), so a test can make the model
  sure of one value and unsure of another; ``filler_certainty`` sets the probability of
  whitespace-only and code-fence tokens (the padding real servers emit).
* ``inject(kind)`` queues faults for the next calls; ``fault_rate``/``fault_kinds``/``seed`` add
  reproducible random faults; ``rpm_limit`` enforces a sliding-window request rate; ``latency``
  delays every answer.

Token accounting (documented because a benchmark compares Quarry's own estimate with it):

* ``prompt_tokens = ceil(C * tokens_per_char) + 4 * M`` (``tokens_per_char`` is 1/4 unless
  set: ``ceil(C / 4) + 4 * M``) where ``C`` is the total number of characters (Python
  ``len``, i.e. code points) of the text of all request messages and ``M`` the number of
  messages. Only message text counts: roles, names, the ``response_format`` schema and image
  parts are ignored.
* ``completion_tokens = ceil(len(content) / 4)`` of the answered content (of the refusal text for
  a refusal, 0 when there is neither).

Real-server modes (each a switch, off by default; see ``FakeLLM.__init__``), as llama.cpp's
``llama-server`` and other OpenAI-compatible servers behave: ``reject_json_schema``,
``reject_json_object``, ``reject_tools`` (a 400 "… not supported"), ``wrap`` (code fences or
whitespace padding around the content), ``honour_max_tokens`` (cut the answer at
``max_tokens`` with ``finish_reason "length"``; by default ``max_tokens`` is ignored, as some
servers do), ``context_limit`` (a 400 "context length exceeded" above that many prompt
tokens), ``slots`` (requests served that many at a time, the others wait in the server, as
llama.cpp's one slot does), tool calls (a request with ``tools`` is answered with a call of its
function, the answer as its arguments), ``tokens_per_char`` (another tokenizer) and
``usage.prompt_tokens_details.cached_tokens`` (the prefix shared with the previous request).

Azure OpenAI's route is served too, through the same chat logic:
``POST /openai/deployments/{deployment}/chat/completions?api-version=…`` with the key in an
``api-key`` header (``FakeLLM.azure_endpoint`` is the endpoint to give a client). A call
without ``api-version`` is answered 404, as Azure answers it; with ``azure_api_key`` set, a
call carrying another key gets a 401. ``FakeRequest.deployment`` and ``FakeRequest.query``
show what was asked.

The batch API (files and batches endpoints, answering each line through the same chat
logic, so every mode above applies to batch lines too) is in ``tests/support/fake_batches.py``,
reached as ``FakeLLM.batch_api``.

Only non-streaming chat completions are implemented; ``"stream": true`` is answered with an
OpenAI-style 400 error so a caller that streams by accident fails loudly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias, get_args
from urllib.parse import parse_qs
from uuid import uuid4

__all__ = [
    "DEFAULT_REPLY",
    "FAULT_KINDS",
    "GROUP_SCHEMA_NAME",
    "VARIABLE_LINE",
    "FakeLLM",
    "FakeRequest",
    "FaultKind",
    "Reply",
    "ReplyValue",
    "ScriptRule",
    "answer_each",
    "estimate_completion_tokens",
    "estimate_prompt_tokens",
]

log = logging.getLogger(__name__)

FaultKind: TypeAlias = Literal[
    "429",
    "500",
    "503",
    "timeout",
    "malformed",
    "truncated_json",
    "length",
    "refusal",
    "400",
    "401",
    "404",
    "quota",
]
"""Injectable faults.

* ``"429"``: rate limited, with ``Retry-After: FakeLLM.retry_after``.
* ``"500"`` / ``"503"``: server errors with an OpenAI error body.
* ``"timeout"``: no answer; the connection is held for ``FakeLLM.timeout_hold`` seconds (or until
  the client gives up or the server stops) and then closed without a response.
* ``"malformed"``: 200 with prose instead of JSON.
* ``"truncated_json"``: 200, ``finish_reason "stop"``, JSON cut off mid-key.
* ``"length"``: the same cut-off JSON with ``finish_reason "length"``, which is what a real
  ``max_tokens`` cut-off looks like (the openai SDK's ``parse()`` raises
  ``LengthFinishReasonError`` on it, unlike ``truncated_json``).
* ``"refusal"``: 200 with ``content: null`` and ``refusal`` set.
* ``"400"`` / ``"401"`` / ``"404"``: a bad request, a rejected key, an unknown model.
* ``"quota"``: 429 with code ``insufficient_quota`` (the account is out of credit: permanent).
"""

FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)

DEFAULT_REPLY: Final[dict[str, Any]] = {"evidence": None, "value": None, "found": False}

VARIABLE_LINE: Final = re.compile(r"(?m)^Variable: (\S+)\s*$")
"""The line of Quarry's prompts that names the variable being extracted."""

GROUP_SCHEMA_NAME: Final = "extraction_group_answer"
"""The ``response_format`` JSON schema name of Quarry's grouped calls."""

MALFORMED_CONTENT: Final = "Sure! The answer is 42"
TRUNCATED_CONTENT: Final = '{"evidence": "abc", "val'
REFUSAL_TEXT: Final = "I can't help with that"

CHAT_PATH: Final = "/v1/chat/completions"
AZURE_CHAT_PATH: Final = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")
MODELS_PATH: Final = "/v1/models"


def message_text(message: Any) -> str:
    """The text of one chat message: a plain string, or the text parts of a content list."""
    if not isinstance(message, dict):
        return ""  # a malformed message counts as empty rather than crashing the handler
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def estimate_prompt_tokens(
    messages: Sequence[dict[str, Any]], tokens_per_char: float = 0.25
) -> int:
    """``ceil(total message characters × tokens_per_char) + 4 per message`` (see the module
    docstring; 1/4 by default)."""
    chars = sum(len(message_text(m)) for m in messages)
    return math.ceil(chars * tokens_per_char) + 4 * len(messages)


def estimate_completion_tokens(content: str | None) -> int:
    """``ceil(characters / 4)`` of the answered content."""
    return math.ceil(len(content) / 4) if content else 0


@dataclass
class FakeRequest:
    """One request the fake received, as the tests see it.

    ``status`` and ``fault`` are filled in by the handler before the response is written, so they
    are final once the client has its answer. ``status`` stays ``None`` for a ``"timeout"`` fault
    (nothing is ever answered).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    status: int | None = None
    fault: str | None = None
    content: str | None = None
    """The assistant content that was answered (``None`` for errors and refusals)."""
    query: dict[str, str] = field(default_factory=dict)
    """The URL's query parameters (Azure's ``api-version``)."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def text(self) -> str:
        """All message texts joined with newlines, so ``^``-anchored patterns work per line."""
        return "\n".join(message_text(m) for m in self.messages)

    @property
    def variables(self) -> list[str]:
        """Every ``Variable:`` name in the message text, in order (grouped calls have several)."""
        return VARIABLE_LINE.findall(self.text)

    @property
    def variable(self) -> str | None:
        """The variable rules match on: the last ``Variable:`` line."""
        names = self.variables
        return names[-1] if names else None

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def response_schema(self) -> str | None:
        """The name of the JSON schema the answer is asked to follow (``response_format``)."""
        response_format = self.body.get("response_format")
        if isinstance(response_format, dict):
            schema = response_format.get("json_schema")
            if isinstance(schema, dict) and schema.get("name"):
                return str(schema["name"])
        return None

    @property
    def tool_name(self) -> str | None:
        """The function the request offers as its answer (tool calling), if any."""
        tools = self.body.get("tools")
        if isinstance(tools, list) and tools and isinstance(tools[0], dict):
            function = tools[0].get("function")
            if isinstance(function, dict) and function.get("name"):
                return str(function["name"])
        return None

    @property
    def output_mode(self) -> str:
        """How the answer's shape is asked for: ``json_schema``, ``json_object``, ``tools`` or
        ``prompt`` (nothing but the prompt's own words)."""
        if self.tool_name is not None:
            return "tools"
        response_format = self.body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in (
            "json_schema",
            "json_object",
        ):
            return str(response_format["type"])
        return "prompt"

    @property
    def max_tokens(self) -> int | None:
        """The output cap the request sent (``max_tokens`` or ``max_completion_tokens``)."""
        value = self.body.get("max_tokens", self.body.get("max_completion_tokens"))
        return int(value) if isinstance(value, int) else None

    @property
    def is_group(self) -> bool:
        """A grouped call: several variables, one answer entry per variable (told by the
        schema's or the tool's name, or, when neither is sent, by several variables)."""
        if self.response_schema is not None or self.tool_name is not None:
            return GROUP_SCHEMA_NAME in (self.response_schema, self.tool_name)
        return len(self.variables) > 1

    @property
    def deployment(self) -> str | None:
        """The Azure deployment a request on Azure's route names (None on the OpenAI one)."""
        match = AZURE_CHAT_PATH.match(self.path)
        return match.group(1) if match else None

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and (self.path == CHAT_PATH or self.deployment is not None)


ReplyValue: TypeAlias = dict[str, Any] | str
"""A dict is answered as ``json.dumps`` content, a str as raw content."""
Reply: TypeAlias = ReplyValue | Callable[[FakeRequest], ReplyValue]


def answer_each(
    per_variable: Callable[[str], dict[str, Any]],
) -> Callable[[FakeRequest], ReplyValue]:
    """A reply for single and grouped calls alike: ``per_variable(name)`` is the answer about
    one variable; a grouped call gets ``{"answers": [{"variable": name, **answer}, …]}``."""

    def reply(request: FakeRequest) -> ReplyValue:
        if request.is_group:
            return {
                "answers": [{"variable": name, **per_variable(name)} for name in request.variables]
            }
        return per_variable(str(request.variable))

    return reply


@dataclass
class ScriptRule:
    """A scripted answer; returned by ``FakeLLM.script`` so a test can check ``uses``."""

    variable: str | None
    contains: str | None
    reply: Reply
    times: int | None
    uses: int = 0

    def matches(self, request: FakeRequest) -> bool:
        if self.times is not None and self.uses >= self.times:
            return False
        if self.variable is not None and request.variable != self.variable:
            return False
        return self.contains is None or self.contains in request.text


@dataclass
class _Answer:
    """What the handler writes back."""

    status: int
    payload: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    content: str | None = None
    #: A body sent as it is (a file's content), instead of `payload` as JSON.
    raw: bytes | None = None


def _error(status: int, message: str, type_: str, code: str | None, **headers: str) -> _Answer:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return _Answer(status=status, payload=body, headers=headers)


_PERMANENT_ERRORS: Final[dict[str, tuple[int, str, str, str | None]]] = {
    "400": (400, "Invalid value for 'messages'.", "invalid_request_error", None),
    "401": (401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    "404": (404, "The model does not exist.", "invalid_request_error", "model_not_found"),
    "quota": (
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    ),
}


class FakeLLM:
    """An OpenAI-compatible chat-completions server scripted from the test.

    Configuration attributes may be changed at any time, also while the server runs:
    ``default_reply``, ``latency``, ``timeout_hold``, ``retry_after``, ``fault_rate``,
    ``fault_kinds``, ``rpm_limit``, ``rpm_window``, ``models``.
    """

    def __init__(self) -> None:
        self.default_reply: Reply = dict(DEFAULT_REPLY)
        self.latency: float = 0.0
        """Seconds slept before every chat-completion answer, injected faults included (not
        ``rpm_limit`` rejections, which a real provider answers at once, nor holds)."""
        self.timeout_hold: float = 30.0
        """How long a ``"timeout"`` fault holds the connection; keep it above client timeouts."""
        self.retry_after: str = "1"
        """``Retry-After`` of injected 429s (the openai SDK honours values in (0, 120] s)."""
        self.fault_rate: float = 0.0
        self.fault_kinds: Sequence[FaultKind] = ("429", "500", "timeout", "malformed")
        self.rpm_limit: int | None = None
        self.rpm_window: float = 60.0
        """The sliding window of ``rpm_limit``; shorten it to test recovery quickly."""
        self.value_certainty: dict[str, float] = {}
        """Per variable name: the probability (0..1] of its value's tokens in logprobs."""
        self.filler_certainty: float | None = None
        """The probability of whitespace-only and code-fence tokens in logprobs (None: default)."""
        self.models: Sequence[str] = ("gpt-4o-mini", "gpt-4o")
        """What ``GET /v1/models`` lists (chat completions accept any model name)."""
        # -- real-server modes ----------------------------------------------------------------
        self.reject_json_schema: bool = False
        """Answer ``response_format: json_schema`` with 400 "… not supported"."""
        self.reject_json_object: bool = False
        """Answer ``response_format: json_object`` with 400 "… not supported"."""
        self.reject_tools: bool = False
        """Answer a request carrying ``tools`` with 400 "tools are not supported"."""
        self.wrap: Literal["fence", "padding"] | None = None
        """Wrap the answered content: ``fence`` in a Markdown ``json`` code fence after blank lines,
        ``padding`` after a long run of whitespace (both seen from llama.cpp's grammar)."""
        self.honour_max_tokens: bool = False
        """Cut content longer than ``max_tokens`` tokens there, with ``finish_reason
        "length"``; off: ``max_tokens`` is ignored, as some servers do."""
        self.context_limit: int | None = None
        """Prompt tokens plus ``max_tokens`` above this are refused with a 400 "context length
        exceeded" (no completion is generated)."""
        self.slots: int | None = None
        """Requests served at once; the others wait in the server (inside the client's
        timeout), as llama.cpp's ``-np 1`` does. ``None``: no limit."""
        self.tokens_per_char: float = 0.25
        """Prompt tokens per character of message text (another tokenizer than chars/4)."""
        self.azure_api_key: str | None = None
        """The key Azure's route accepts in its ``api-key`` header (None: any)."""

        self._lock = threading.Lock()
        self._rules: list[ScriptRule] = []
        self._faults: deque[FaultKind] = deque()
        self._rng = random.Random()
        self._requests: list[FakeRequest] = []
        self._accepted: deque[float] = deque()  # arrival times inside the rpm window
        self._rate_limited = 0
        self._in_flight = 0
        self._max_concurrent = 0
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._slot_lock = threading.Condition()
        self._slots_busy = 0
        self._last_prompt = ""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        from tests.support.fake_batches import FakeBatchAPI

        self.batch_api = FakeBatchAPI(self)
        """The files and batches endpoints (tests/support/fake_batches.py): its modes and
        what it was asked."""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind 127.0.0.1 on an ephemeral port and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeLLM is already started")
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler, fake=self)
        self._server = server
        # A short poll interval keeps stop() fast (it waits for the next poll; most tests start
        # and stop a server of their own); serving is not affected by it.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"fake-llm-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release held requests and close every connection. Idempotent.

        Held ``"timeout"`` requests and ``latency`` sleeps wait on ``_stopping`` and so end at
        once; idle keep-alive connections are shut down so their handler threads exit rather
        than linger until the client goes away.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeLLM is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` (ends in ``/v1``), usable from any local process."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        """The Azure OpenAI endpoint (the resource URL; deployments are under ``/openai``)."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ---------------------------------------------------------------------------

    def script(
        self,
        variable: str | None = None,
        contains: str | None = None,
        reply: Reply = DEFAULT_REPLY,
        times: int | None = None,
    ) -> ScriptRule:
        """Answer matching requests with ``reply``; the most recently added match wins.

        A rule matches when the request's variable (last ``Variable:`` line) equals ``variable``
        (if given) and ``contains`` is a substring of the message text (if given). A dict reply
        is sent as ``json.dumps`` content, a str as-is (for malformed output), a callable gets the
        ``FakeRequest`` and returns either. ``times`` caps the answers the rule gives; faults do
        not use it up.
        """
        if times is not None and times < 1:
            raise ValueError("times must be a positive number of answers or None")
        rule = ScriptRule(variable=variable, contains=contains, reply=reply, times=times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def inject(self, kind: FaultKind, times: int = 1) -> None:
        """Answer the next ``times`` chat completions with the fault ``kind`` (queued FIFO)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULT_KINDS}")
        with self._lock:
            self._faults.extend([kind] * times)

    def seed(self, n: int) -> None:
        """Make random faults reproducible: the same seed and call order give the same faults."""
        with self._lock:
            self._rng.seed(n)

    def reset(self) -> None:
        """Clear rules, queued and random faults, recorded requests and all counters.

        ``default_reply``, ``latency``, ``timeout_hold``, ``retry_after`` and ``rpm_limit`` are
        settings and are kept.
        """
        with self._lock:
            self._rules.clear()
            self._faults.clear()
            self.fault_rate = 0.0
            self._requests.clear()
            self._accepted.clear()
            self._rate_limited = 0
            self._max_concurrent = self._in_flight

    # -- observation -------------------------------------------------------------------------

    @property
    def requests(self) -> list[FakeRequest]:
        """A snapshot of every request received (chat completions and model listings), in order."""
        with self._lock:
            return list(self._requests)

    def calls(self, variable: str | None = None, status: int | None = 200) -> int:
        """Count chat-completion calls for ``variable`` (any if None) answered with ``status``.

        ``status=None`` counts every call whatever its answer, held timeouts included.
        """
        return sum(
            1
            for r in self.requests
            if r.is_chat
            and (variable is None or r.variable == variable)
            and (status is None or r.status == status)
        )

    @property
    def max_concurrent(self) -> int:
        """The most chat-completion requests ever being handled at the same moment."""
        with self._lock:
            return self._max_concurrent

    @property
    def in_flight(self) -> int:
        """Chat-completion requests being handled now (held timeouts included)."""
        with self._lock:
            return self._in_flight

    @property
    def rate_limited(self) -> int:
        """How many calls ``rpm_limit`` rejected with 429 (injected 429s are not counted)."""
        with self._lock:
            return self._rate_limited

    # -- request handling (called from handler threads) ---------------------------------------

    def _record(self, request: FakeRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_concurrent = max(self._max_concurrent, self._in_flight)

    def _take_slot(self) -> None:
        """Wait for one of ``slots`` (requests queue in the server, as on one llama.cpp slot)."""
        with self._slot_lock:
            while self.slots is not None and self._slots_busy >= self.slots:
                if self._stopping.is_set():
                    break
                self._slot_lock.wait(0.05)
            self._slots_busy += 1

    def _give_slot(self) -> None:
        with self._slot_lock:
            self._slots_busy -= 1
            self._slot_lock.notify()

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _admit(self, request: FakeRequest) -> tuple[_Answer | None, FaultKind | None]:
        """Decide, atomically, whether the call is rate limited or gets a fault.

        Rate limiting comes first, as at a real provider, and rejected calls do not count toward
        the window (OpenAI does not count them either). Exactly one random draw is made per
        admitted call, so a seed reproduces the same faults for the same call order.
        """
        with self._lock:
            if self.rpm_limit is not None:
                now = request.received_at
                while self._accepted and now - self._accepted[0] >= self.rpm_window:
                    self._accepted.popleft()
                if len(self._accepted) >= self.rpm_limit:
                    self._rate_limited += 1
                    wait = self.rpm_window - (now - self._accepted[0])
                    answer = _error(
                        429,
                        f"Rate limit reached for requests: limit {self.rpm_limit} per "
                        f"{self.rpm_window:g}s. Please try again later.",
                        "requests",
                        "rate_limit_exceeded",
                        **{
                            "Retry-After": str(max(1, math.ceil(wait))),
                            "x-ratelimit-limit-requests": str(self.rpm_limit),
                            "x-ratelimit-remaining-requests": "0",
                        },
                    )
                    answer.fault = "rpm_limit"
                    return answer, None
                self._accepted.append(now)
            if self._faults:
                return None, self._faults.popleft()
            hit = self._rng.random() < self.fault_rate
            if hit and self.fault_kinds:
                return None, self._rng.choice(list(self.fault_kinds))
            return None, None

    def _pick_reply(self, request: FakeRequest) -> Reply:
        with self._lock:
            for rule in reversed(self._rules):
                if rule.matches(request):
                    rule.uses += 1
                    return rule.reply
        return self.default_reply

    def _answer_chat(self, request: FakeRequest) -> _Answer | None:
        """Build the answer to a chat completion; ``None`` means hold and never answer."""
        body = request.body
        if body.get("stream"):
            return _error(
                400,
                "Streaming is not supported by the fake LLM server; send stream=false.",
                "invalid_request_error",
                "unsupported_value",
            )
        if not request.messages:
            return _error(
                400, "'messages' must be a non-empty array.", "invalid_request_error", None
            )

        unsupported = self._unsupported(request)
        if unsupported is not None:
            return unsupported
        rejection, fault = self._admit(request)
        if rejection is not None:
            return rejection
        if fault == "timeout":
            return None
        if self.context_limit is not None:
            needed = estimate_prompt_tokens(request.messages, self.tokens_per_char)
            needed += request.max_tokens or 0
            if needed > self.context_limit:
                answer = _error(
                    400,
                    f"This model's maximum context length is {self.context_limit} tokens. "
                    f"However, you requested {needed} tokens. Please reduce the length of the "
                    "messages or completion.",
                    "invalid_request_error",
                    "context_length_exceeded",
                )
                answer.fault = "context_length_exceeded"
                return answer
        if self.latency > 0:
            self._stopping.wait(self.latency)

        if fault == "429":
            answer = _error(
                429,
                "Rate limit reached for requests. Please try again later.",
                "requests",
                "rate_limit_exceeded",
                **{"Retry-After": self.retry_after},
            )
        elif fault == "500":
            answer = _error(
                500,
                "The server had an error while processing your request.",
                "server_error",
                None,
            )
        elif fault == "503":
            answer = _error(
                503,
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            )
        elif fault in _PERMANENT_ERRORS:
            answer = _error(*_PERMANENT_ERRORS[fault])
        elif fault == "malformed":
            answer = self._completion(request, MALFORMED_CONTENT)
        elif fault == "truncated_json":
            answer = self._completion(request, TRUNCATED_CONTENT)
        elif fault == "length":
            answer = self._completion(request, TRUNCATED_CONTENT, finish_reason="length")
        elif fault == "refusal":
            answer = self._completion(request, None, refusal=REFUSAL_TEXT)
        else:
            answer = self._scripted(request)
        answer.fault = answer.fault or fault
        return answer

    def _unsupported(self, request: FakeRequest) -> _Answer | None:
        """The 400 a server without the requested structured-output feature answers."""
        mode = request.output_mode
        refused = (
            (mode == "json_schema" and self.reject_json_schema)
            or (mode == "json_object" and self.reject_json_object)
            or (mode == "tools" and self.reject_tools)
        )
        if not refused:
            return None
        what = {"tools": "tools are", "json_schema": "response_format json_schema is"}.get(
            mode, "response_format json_object is"
        )
        answer = _error(400, f"{what} not supported", "invalid_request_error", "unsupported")
        answer.fault = f"unsupported_{mode}"
        return answer

    def _wrapped(self, content: str) -> str:
        if self.wrap == "fence":
            return f"\n\n```json\n{content}\n```\n"
        if self.wrap == "padding":
            return " \n" * 12 + "\t" * 6 + content + "\n" * 4
        return content

    def _scripted(self, request: FakeRequest) -> _Answer:
        reply = self._pick_reply(request)
        try:
            value = reply(request) if callable(reply) else reply
        except Exception as exc:  # a broken test script should be loud, not a hang
            log.exception("fake_llm.reply_failed")
            answer = _error(
                500, f"fake_llm reply callable raised {exc!r}", "fake_llm_script_error", None
            )
            answer.headers["x-should-retry"] = "false"  # don't let the SDK retry a test bug
            answer.fault = "script_error"
            return answer
        # ensure_ascii=False: models emit raw UTF-8, and it keeps the token estimate honest.
        content = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        content = self._wrapped(content)
        finish_reason = "stop"
        cap = request.max_tokens
        if self.honour_max_tokens and cap is not None and estimate_completion_tokens(content) > cap:
            content, finish_reason = content[: cap * 4], "length"
        return self._completion(request, content, finish_reason=finish_reason)

    def _completion(
        self,
        request: FakeRequest,
        content: str | None,
        *,
        refusal: str | None = None,
        finish_reason: str = "stop",
    ) -> _Answer:
        prompt_tokens = estimate_prompt_tokens(request.messages, self.tokens_per_char)
        completion_tokens = estimate_completion_tokens(content if content is not None else refusal)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": refusal,
            "annotations": [],
        }
        tool = request.tool_name
        if tool is not None and content is not None and finish_reason == "stop":
            # Tool calling: the answer is the arguments of a call of the offered function.
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": f"call_fake_{next(self._ids):06d}",
                    "type": "function",
                    "function": {"name": tool, "arguments": content},
                }
            ]
            finish_reason = "tool_calls"
        text = request.text
        with self._lock:
            shared = _common_prefix(self._last_prompt, text)
            self._last_prompt = text
        cached_tokens = min(math.floor(shared * self.tokens_per_char), prompt_tokens)
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": (
                _logprobs(
                    content,
                    request.body,
                    _Certainty(request.variable, self.value_certainty, self.filler_certainty),
                )
                if request.body.get("logprobs")
                else None
            ),
            "finish_reason": finish_reason,
        }
        payload = {
            "id": f"chatcmpl-fake-{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": "fp_fake_llm",
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
        }
        return _Answer(status=200, payload=payload, content=content)

    def _azure_refusal(self, request: FakeRequest) -> _Answer | None:
        """What Azure answers a call without an API version or with the wrong key."""
        if not request.query.get("api-version"):
            return _error(404, "Resource not found", "invalid_request_error", "404")
        key = request.headers.get("api-key")
        if self.azure_api_key is not None and key != self.azure_api_key:
            return _error(
                401,
                "Access denied due to invalid subscription key or wrong API endpoint.",
                "invalid_request_error",
                "401",
            )
        return None

    def _models(self) -> _Answer:
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "quarry-fake"}
            for m in self.models
        ]
        return _Answer(status=200, payload={"object": "list", "data": data})

    def _hold(self, conn: socket.socket) -> None:
        """Hold a "timeout" request until ``timeout_hold`` passes, the client leaves or we stop.

        Noticing the client's disconnect frees the handler thread (and ``in_flight``) as soon as
        the client has timed out, instead of ``timeout_hold`` later.
        """
        deadline = time.monotonic() + self.timeout_hold
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(OSError, ValueError):
                readable, _, _ = select.select([conn], [], [], min(0.05, remaining))
                if readable and conn.recv(1, socket.MSG_PEEK) == b"":
                    return


def _common_prefix(a: str, b: str) -> int:
    """How many leading characters `a` and `b` share (a server's prompt cache reuses them)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class _Certainty:
    """What ``_logprobs`` needs to vary its figures: the single call's variable, the
    per-variable value certainty and the filler certainty."""

    variable: str | None
    values: dict[str, float]
    filler: float | None


_VALUE_KEY = re.compile(r'"value"\s*:\s*')
_VARIABLE_KEY = re.compile(r'"variable"\s*:\s*"((?:[^"\\]|\\.)*)"')
_FILLER = re.compile(r"\s+|```[A-Za-z]*")


def _value_spans(content: str, single: str | None) -> list[tuple[int, int, str | None]]:
    """Where each ``"value"`` of the content is, and whose it is: the nearest ``"variable"``
    before it (grouped entries name their variable first), else the single call's variable."""
    spans: list[tuple[int, int, str | None]] = []
    decoder = json.JSONDecoder()
    for match in _VALUE_KEY.finditer(content):
        try:
            _, end = decoder.raw_decode(content, match.end())
        except ValueError:
            continue
        names = _VARIABLE_KEY.findall(content, 0, match.start())
        spans.append((match.end(), end, names[-1] if names else single))
    return spans


def _segments(content: str, certainty: _Certainty) -> list[tuple[str, float | None]]:
    """The content cut where a value, a whitespace run or a fence starts or ends, with the
    probability its tokens get (None: the default)."""
    marks: list[tuple[int, int, float | None]] = []
    for start, end, name in _value_spans(content, certainty.variable):
        if name is not None and name in certainty.values:
            marks.append((start, end, certainty.values[name]))
    if certainty.filler is not None:
        marks += [(m.start(), m.end(), certainty.filler) for m in _FILLER.finditer(content)]
    marks.sort()
    out: list[tuple[str, float | None]] = []
    at = 0
    for start, end, p in marks:
        if start < at:
            continue  # whitespace inside a value is part of the value
        if start > at:
            out.append((content[at:start], None))
        out.append((content[start:end], p))
        at = end
    if at < len(content):
        out.append((content[at:], None))
    return out


def _logprobs(content: str | None, body: dict[str, Any], certainty: _Certainty) -> dict[str, Any]:
    """Plausible, deterministic logprobs: tokens of at most 4 characters (see the module
    docstring for ``value_certainty`` and ``filler_certainty``)."""
    top_n = int(body.get("top_logprobs") or 0)
    entries = []
    i = 0
    for segment, probability in _segments(content or "", certainty):
        for k in range(0, len(segment), 4):
            token = segment[k : k + 4]
            if probability is None:
                logprob = -0.001 * (1 + i % 7)  # confident but not certain, and not all identical
            else:
                logprob = math.log(probability) if probability > 0 else -100.0
            alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
            alternatives += [
                {"token": f"<alt{j}>", "logprob": -2.0 - j, "bytes": list(f"<alt{j}>".encode())}
                for j in range(1, top_n)
            ]
            entries.append(
                {
                    "token": token,
                    "logprob": logprob,
                    "bytes": list(token.encode()),
                    "top_logprobs": alternatives[:top_n],
                }
            )
            i += 1
    return {"content": entries, "refusal": None}


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeLLM and keeps quiet about client disconnects."""

    daemon_threads = True  # held requests must never keep the test process alive
    # Many concurrent connections arrive at once in concurrency tests; the default backlog of 5
    # would make the kernel drop/retry SYNs and distort timings.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        fake: FakeLLM,
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, stop()) are normal here; anything else is a fake bug.
        log.debug("fake_llm.connection_error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection; keep-alive is handled by ``BaseHTTPRequestHandler``."""

    protocol_version = "HTTP/1.1"  # the openai SDK pools keep-alive connections
    # Headers and body go out as two writes; with Nagle on, the body waits for the client's
    # delayed ACK and every call costs ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr logging."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        try:
            raw = self._read_body()
        except ValueError as exc:
            self.close_connection = True  # the stream position is unknown now
            self._write(_error(400, str(exc), "invalid_request_error", None))
            return
        path, _, query = self.path.partition("?")
        path = path.rstrip("/")
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = None
        request = FakeRequest(
            method=self.command,
            path=path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body if isinstance(body, dict) else {},
            received_at=time.monotonic(),
            query={k: v[-1] for k, v in parse_qs(query).items()},
        )
        fake._record(request)

        if self.command == "POST" and path == CHAT_PATH:
            self._serve_chat(request, body_is_object=isinstance(body, dict))
        elif self.command == "POST" and request.deployment is not None:
            refusal = fake._azure_refusal(request)
            if refusal is not None:
                self._respond(request, refusal)
            else:
                self._serve_chat(request, body_is_object=isinstance(body, dict))
        elif fake.batch_api.handles(path):
            status, payload = fake.batch_api.handle(self.command, path, request.headers, raw)
            if isinstance(payload, bytes):
                self._respond(request, _Answer(status=status, payload=None, raw=payload))
            else:
                self._respond(request, _Answer(status=status, payload=payload))
        elif self.command == "GET" and path == MODELS_PATH:
            self._respond(request, fake._models())
        else:
            message = f"Unknown request URL: {self.command} {path}."
            self._respond(request, _error(404, message, "invalid_request_error", None))

    def _serve_chat(self, request: FakeRequest, *, body_is_object: bool) -> None:
        fake = self.server.fake
        if not body_is_object:
            message = "The request body is not a JSON object."
            self._respond(request, _error(400, message, "invalid_request_error", None))
            return
        fake._enter()
        try:
            fake._take_slot()
            try:
                answer = fake._answer_chat(request)
            except Exception as exc:  # a bug in the fake must surface in the test, not hang it
                log.exception("fake_llm.handler_failed")
                answer = _error(500, f"fake_llm failed: {exc!r}", "fake_llm_error", None)
                answer.headers["x-should-retry"] = "false"
            if answer is None:
                request.fault = "timeout"
                fake._hold(self.connection)
                self.close_connection = True  # never answered, so the connection is unusable
            else:
                self._respond(request, answer)
        finally:
            fake._give_slot()
            fake._leave()

    def _respond(self, request: FakeRequest, answer: _Answer) -> None:
        # Record before writing: once the client has the answer, the test may inspect it.
        request.status = answer.status
        request.fault = answer.fault
        request.content = answer.content
        self._write(answer)

    def _read_body(self) -> bytes:
        """Read the whole body, so the next keep-alive request starts at the right byte."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ValueError("Malformed chunked request body.") from None
                if size == 0:
                    # Skip trailers up to the blank line that ends the body.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, answer: _Answer) -> None:
        if answer.raw is not None:
            data, content_type = answer.raw, "application/octet-stream"
        else:
            data = json.dumps(answer.payload).encode() if answer.payload is not None else b""
            content_type = "application/json"
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_fake_{uuid4().hex[:16]}")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if self.close_connection or self.server.fake._stopping.is_set():
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            # The client already gave up (e.g. its timeout fired during `latency`).
            self.close_connection = True
