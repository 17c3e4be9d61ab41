"""The fake LLM server's batch API: OpenAI's files and batches endpoints.

``POST /v1/files`` (multipart, ``purpose=batch``) stores a JSONL file; ``GET /v1/files/{id}``
and ``GET /v1/files/{id}/content`` read it back. ``POST /v1/batches`` creates a batch over an
uploaded file (endpoint ``/v1/chat/completions``, window ``24h``, optional ``metadata``);
``GET /v1/batches`` lists them, newest first; ``GET /v1/batches/{id}`` reads one;
``POST /v1/batches/{id}/cancel`` cancels it (``cancelling``, then ``cancelled`` at the next
read, with no answers).

A batch is ``validating`` when created and ``in_progress`` from its first read. Once
``delay`` seconds have passed since its creation, the next read answers it: every line's
body goes through the fake's own chat-completion logic (``FakeLLM._answer_chat``: scripts,
``default_reply``, injected faults and every real-server mode apply, as to live calls),
200 answers into the output file and the others into the error file, in the OpenAI line
format (``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}``); the batch is then ``completed`` with its request counts.

Modes (attributes, changeable at any time):

* ``delay``: seconds from creation until the batch is answered (0: at its first read after
  ``in_progress``).
* ``expire_after``: when set, a due batch *expires* instead, having answered only its first
  that many lines; the rest go to the error file with code ``batch_expired``.
* ``fail``: when set, a due batch *fails* (its input "did not validate") with this message
  and no files.
* ``refuse``: ``POST /v1/batches`` and ``POST /v1/files`` answer 404, as a server without a
  batch API does.

Observation: ``creations`` (batches created), ``cancels`` (cancel requests),
``batches`` (a snapshot of the batch objects), ``lines`` (the chat requests processed
through batches, as ``FakeRequest``), ``files``.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.fake_llm import FakeLLM, FakeRequest

FILES_PATH = "/v1/files"
BATCHES_PATH = "/v1/batches"

Answer = tuple[int, dict[str, Any] | bytes]


def _error(status: int, message: str, code: str | None = None) -> Answer:
    return status, {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


class FakeBatchAPI:
    """The files and batches endpoints of one ``FakeLLM`` (see the module docstring)."""

    def __init__(self, fake: FakeLLM) -> None:
        self._fake = fake
        self.delay: float = 0.0
        self.expire_after: int | None = None
        self.fail: str | None = None
        self.refuse: bool = False
        self.creations = 0
        self.cancels = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._files: dict[str, dict[str, Any]] = {}
        self._contents: dict[str, bytes] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._created: dict[str, float] = {}
        self._lines: list[FakeRequest] = []

    # -- observation ---------------------------------------------------------------------

    @property
    def batches(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(b)) for b in self._batches.values()]

    @property
    def lines(self) -> list[FakeRequest]:
        with self._lock:
            return list(self._lines)

    def content(self, file_id: str) -> bytes:
        with self._lock:
            return self._contents[file_id]

    # -- routing -------------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        return path == FILES_PATH or path.startswith((FILES_PATH + "/", BATCHES_PATH))

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        parts = path.strip("/").split("/")  # v1, files|batches, [id], [content|cancel]
        if parts[1] == "files":
            if method == "POST" and len(parts) == 2:
                return self._upload(headers.get("content-type", ""), raw)
            if method == "GET" and len(parts) == 3:
                return self._file(parts[2])
            if method == "GET" and len(parts) == 4 and parts[3] == "content":
                with self._lock:
                    data = self._contents.get(parts[2])
                return (200, data) if data is not None else _error(404, "No such file.")
        if parts[1] == "batches":
            if method == "POST" and len(parts) == 2:
                return self._create(raw)
            if method == "GET" and len(parts) == 2:
                return self._list()
            if method == "GET" and len(parts) == 3:
                return self._read(parts[2])
            if method == "POST" and len(parts) == 4 and parts[3] == "cancel":
                return self._cancel(parts[2])
        return _error(404, f"Unknown request URL: {method} {path}.")

    # -- files ---------------------------------------------------------------------------

    def _upload(self, content_type: str, raw: bytes) -> Answer:
        if self.refuse:
            return _error(404, "Unknown request URL: POST /v1/files.")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
        if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
            return _error(400, "A file and purpose=batch are required.")
        filename, data = fields["file"]
        file = self._file_object(filename or "upload.jsonl", data, "batch")
        return 200, file

    def _file_object(self, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        with self._lock:
            return self._new_file(filename, data, purpose)

    def _new_file(self, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        """Store a file (called with the lock held)."""
        file_id = f"file-fake-{next(self._ids):06d}"
        file = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self._files[file_id] = file
        self._contents[file_id] = data
        return file

    def _file(self, file_id: str) -> Answer:
        with self._lock:
            file = self._files.get(file_id)
        return (200, file) if file is not None else _error(404, "No such file.")

    # -- batches -------------------------------------------------------------------------

    def _create(self, raw: bytes) -> Answer:
        if self.refuse:
            return _error(404, "Unknown request URL: POST /v1/batches.")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "The request body is not JSON.")
        file_id = body.get("input_file_id")
        if body.get("endpoint") != "/v1/chat/completions":
            return _error(400, "Only /v1/chat/completions is supported by the fake.")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be 24h.")
        with self._lock:
            file = self._files.get(file_id)
            if file is None or file["purpose"] != "batch":
                return _error(400, f"No batch input file {file_id}.")
            batch_id = f"batch_fake_{next(self._ids):06d}"
            now = int(time.time())
            lines = [line for line in self._contents[file_id].splitlines() if line.strip()]
            batch = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body["endpoint"],
                "errors": None,
                "input_file_id": file_id,
                "completion_window": "24h",
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": now,
                "in_progress_at": None,
                "expires_at": now + 86_400,
                "finalizing_at": None,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelling_at": None,
                "cancelled_at": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "metadata": body.get("metadata"),
            }
            self._batches[batch_id] = batch
            self._created[batch_id] = time.monotonic()
            self.creations += 1
            return 200, dict(batch)

    def _list(self) -> Answer:
        with self._lock:
            data = [dict(b) for b in reversed(self._batches.values())]
        return 200, {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }

    def _cancel(self, batch_id: str) -> Answer:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return _error(404, "No such batch.")
            self.cancels += 1
            if batch["status"] in ("validating", "in_progress", "finalizing"):
                batch["status"] = "cancelling"
                batch["cancelling_at"] = int(time.time())
            return 200, dict(batch)

    def _read(self, batch_id: str) -> Answer:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return _error(404, "No such batch.")
            now = int(time.time())
            if batch["status"] == "cancelling":
                batch.update(status="cancelled", cancelled_at=now)
            elif batch["status"] == "validating":
                batch.update(status="in_progress", in_progress_at=now)
            elif (
                batch["status"] == "in_progress"
                and time.monotonic() - self._created[batch_id] >= self.delay
            ):
                self._answer(batch)
            return 200, dict(batch)

    def _answer(self, batch: dict[str, Any]) -> None:
        """Answer every line of a due batch (called with the lock held)."""
        from tests.support.fake_llm import CHAT_PATH, FakeRequest

        now = int(time.time())
        if self.fail is not None:
            batch.update(
                status="failed",
                failed_at=now,
                errors={
                    "object": "list",
                    "data": [
                        {"code": "invalid_request", "message": self.fail, "param": None, "line": 1}
                    ],
                },
            )
            return
        lines = [line for line in self._contents[batch["input_file_id"]].splitlines() if line]
        output: list[bytes] = []
        errors: list[bytes] = []
        completed = failed = 0
        for n, raw in enumerate(lines):
            item = json.loads(raw)
            custom_id = item["custom_id"]
            if self.expire_after is not None and n >= self.expire_after:
                errors.append(_line(custom_id, None, code="batch_expired"))
                continue
            request = FakeRequest(
                method="POST",
                path=CHAT_PATH,
                headers={},
                body=item["body"],
                received_at=time.monotonic(),
            )
            self._lines.append(request)
            answer = self._fake._answer_chat(request)
            if answer is None:  # a held "timeout": the provider gave up on the request
                request.status = 504
                errors.append(_line(custom_id, (504, {"error": {"message": "Timed out."}})))
                failed += 1
                continue
            request.status, request.content = answer.status, answer.content
            if answer.status == 200:
                output.append(_line(custom_id, (200, answer.payload or {})))
                completed += 1
            else:
                errors.append(_line(custom_id, (answer.status, answer.payload or {})))
                failed += 1
        name = batch["id"]
        output_id = (
            self._new_file(f"{name}_output.jsonl", b"".join(output), "batch_output")["id"]
            if output
            else None
        )
        error_id = (
            self._new_file(f"{name}_error.jsonl", b"".join(errors), "batch_output")["id"]
            if errors
            else None
        )
        status = "expired" if self.expire_after is not None else "completed"
        batch.update(
            status=status,
            output_file_id=output_id,
            error_file_id=error_id,
            finalizing_at=now,
            request_counts={"total": len(lines), "completed": completed, "failed": failed},
            **({"expired_at": now} if status == "expired" else {"completed_at": now}),
        )


_request_ids = itertools.count(1)


def _line(
    custom_id: str, response: tuple[int, dict[str, Any]] | None, code: str | None = None
) -> bytes:
    n = next(_request_ids)
    item: dict[str, Any] = {"id": f"batch_req_fake_{n:06d}", "custom_id": custom_id}
    if response is None:
        item["response"] = None
        item["error"] = {
            "code": code,
            "message": "This request could not be executed before the completion window expired.",
        }
    else:
        status, body = response
        item["response"] = {"status_code": status, "request_id": f"req_fake_{n:06d}", "body": body}
        item["error"] = None
    return json.dumps(item, ensure_ascii=False).encode() + b"\n"
