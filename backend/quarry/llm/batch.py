"""Provider batches: OpenAI's Batch API (and the OpenAI-compatible servers that copy it).

A batch is a JSONL file of requests uploaded with purpose `batch` (`POST /v1/files`), then a
batch over it (`POST /v1/batches`, endpoint `/v1/chat/completions`, completion window `24h`)
that the provider answers within the window at a discount: polled (`GET /v1/batches/{id}`)
through `validating`, `in_progress`, `finalizing` to `completed`, `failed`, `expired` or
(after `POST /v1/batches/{id}/cancel` and `cancelling`) `cancelled`. The answers are the lines
of its output file, the failures those of its error file (`GET /v1/files/{id}/content`), in
any order, matched to requests by `custom_id`.

Each request line's body is exactly what `OpenAIChatModel` would send as its first attempt
(`prepare_request`), so a batch answer is read — and then validated, grounded and checked
(batches/) — as a live answer is (`read_completion`). Only the public SDK methods are used:
`files.create`, `files.content`, `batches.create`, `batches.retrieve`, `batches.cancel`,
`batches.list`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import openai

from quarry.llm.client import (
    ChatMessage,
    ChatReply,
    OpenAIChatModel,
    PreparedRequest,
    read_completion,
)
from quarry.llm.retry import InvalidCompletion, is_retryable

BATCH_ENDPOINT: Final = "/v1/chat/completions"
COMPLETION_WINDOW: Final = "24h"
#: Where a batch ends (`cancelling` is on its way to `cancelled`).
FINAL_BATCH_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
#: The metadata key naming Quarry's own record of a batch (to find a batch whose creation
#: was not recorded, after a crash).
MARKER_KEY = "quarry_batch"
#: Error codes of lines that were never answered (the batch expired or was cancelled first).
UNANSWERED_CODES = frozenset({"batch_expired", "batch_cancelled"})


class BatchCallError(Exception):
    """A files or batches request that failed; `transient` when asking again may work."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class BatchState:
    """A provider batch as last read."""

    id: str
    status: str
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    #: The provider's reasons when the batch as a whole failed.
    errors: str | None = None
    marker: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_BATCH_STATUSES


@dataclass(frozen=True)
class BatchLine:
    """One answered request of a batch: its reply, or why there is none (`code`: the
    provider's error code, e.g. `batch_expired` for a request never answered)."""

    custom_id: str
    reply: ChatReply | None
    error: str | None = None
    code: str | None = None

    @property
    def unanswered(self) -> bool:
        return self.reply is None and self.code in UNANSWERED_CODES


def _state(batch: Any) -> BatchState:
    counts = batch.request_counts
    errors = None
    if batch.errors is not None and batch.errors.data:
        errors = "; ".join(
            f"{e.code or 'error'}: {e.message or ''}".strip()
            + (f" (line {e.line})" if e.line is not None else "")
            for e in batch.errors.data[:5]
        )
    metadata = batch.metadata or {}
    return BatchState(
        id=batch.id,
        status=str(batch.status),
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        total=counts.total if counts is not None else 0,
        completed=counts.completed if counts is not None else 0,
        failed=counts.failed if counts is not None else 0,
        errors=errors,
        marker=metadata.get(MARKER_KEY),
    )


def _failure(what: str, exc: Exception) -> BatchCallError:
    if isinstance(exc, openai.APIStatusError):
        message = ""
        body = exc.body
        if isinstance(body, dict):
            error = body.get("error")
            inner: dict[str, Any] = error if isinstance(error, dict) else body
            message = str(inner.get("message") or "")[:300]
        return BatchCallError(
            f"The LLM server answered HTTP {exc.status_code} to {what}. {message}".strip(),
            transient=is_retryable(exc),
        )
    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
        return BatchCallError(f"Could not reach the LLM server to {what}.", transient=True)
    return BatchCallError(f"{what} failed: {type(exc).__name__}.", transient=False)


class BatchClient:
    """The batch endpoints of one profile's server, and its request lines."""

    def __init__(self, client: openai.AsyncOpenAI, chat: OpenAIChatModel) -> None:
        self._client = client
        self._chat = chat

    @property
    def model(self) -> str:
        return self._chat.profile.model

    def prepare(
        self,
        messages: list[ChatMessage],
        response_format: dict[str, Any] | None,
        max_tokens: int | None,
    ) -> PreparedRequest:
        """The request a live first attempt would send (`ContextTooLong` if it cannot fit)."""
        return self._chat.prepare_request(messages, response_format, max_tokens)

    @staticmethod
    def line(custom_id: str, request: PreparedRequest) -> bytes:
        """One JSONL line of a batch's input file."""
        return (
            json.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": BATCH_ENDPOINT,
                    "body": request.body,
                },
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
            + b"\n"
        )

    async def upload(self, lines: Iterable[bytes], name: str) -> str:
        """Upload a batch input file; its id."""
        try:
            created = await self._client.files.create(
                file=(name, b"".join(lines), "application/jsonl"), purpose="batch"
            )
        except openai.OpenAIError as exc:
            raise _failure("a batch file upload", exc) from exc
        return str(created.id)

    async def create(self, input_file_id: str, marker: str) -> BatchState:
        try:
            batch = await self._client.batches.create(
                input_file_id=input_file_id,
                endpoint=BATCH_ENDPOINT,
                completion_window=COMPLETION_WINDOW,
                metadata={MARKER_KEY: marker},
            )
        except openai.OpenAIError as exc:
            raise _failure("a batch's creation", exc) from exc
        return _state(batch)

    async def find(self, marker: str, newest: int = 100) -> BatchState | None:
        """The batch created for `marker` among the newest ones, if any (a batch whose
        creation the process did not live to record)."""
        try:
            page = await self._client.batches.list(limit=newest)
        except openai.OpenAIError as exc:
            raise _failure("listing batches", exc) from exc
        for batch in page.data:
            if (batch.metadata or {}).get(MARKER_KEY) == marker:
                return _state(batch)
        return None

    async def retrieve(self, batch_id: str) -> BatchState:
        try:
            return _state(await self._client.batches.retrieve(batch_id))
        except openai.OpenAIError as exc:
            raise _failure("a batch's status request", exc) from exc

    async def cancel(self, batch_id: str) -> BatchState:
        try:
            return _state(await self._client.batches.cancel(batch_id))
        except openai.OpenAIError as exc:
            raise _failure("a batch's cancellation", exc) from exc

    async def lines(self, file_id: str | None) -> list[BatchLine]:
        """The lines of a batch's output or error file (none without a file)."""
        if not file_id:
            return []
        try:
            content = await self._client.files.content(file_id)
        except openai.OpenAIError as exc:
            raise _failure("a batch result download", exc) from exc
        return [read_line(raw, self.model) for raw in content.content.splitlines() if raw.strip()]


def read_line(raw: bytes, model: str) -> BatchLine:
    """One line of an output or error file: a request's answer, or why it has none."""
    try:
        data = json.loads(raw)
        custom_id = str(data["custom_id"])
    except (ValueError, KeyError, TypeError):
        return BatchLine("", None, "The batch's result line was not JSON.")
    error = data.get("error")
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        code = str(error.get("code") or "") or None
        return BatchLine(custom_id, None, str(error.get("message") or code), code)
    response = data.get("response")
    if not isinstance(response, dict):
        return BatchLine(custom_id, None, "The batch answered nothing for it.")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        message = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message") or "")[:300]
        return BatchLine(custom_id, None, f"HTTP {status}. {message}".strip(), str(status))
    try:
        return BatchLine(custom_id, read_completion(body, model, 0))
    except InvalidCompletion:
        return BatchLine(custom_id, None, "The batch's answer was not a chat completion.")
