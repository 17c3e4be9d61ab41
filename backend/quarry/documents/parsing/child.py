"""The parser's child process: `python -m quarry.documents.parsing.child --cpu-seconds=N ...`.

A long-lived process that parses documents one at a time for its parent (`process.py`), which
replaces it after `--documents` of them or as soon as anything goes wrong. It first lowers
its own resource limits and imports the parsers, then says it is ready and serves requests.

Frames, both ways: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.

- child → parent, once: `{"ready": true, "vm_bytes": n}`;
- parent → child: `{"id": i, "kind": "pdf", "source": "/abs/file", "result": "/abs/out.json"}`;
- child → parent: `{"id": i, "vm_bytes": n}` once `result` holds `{"pages": [...],
  "layouts": [...]}` (a layout per page: `layout.RawLayout.to_wire`, or null) or
  `{"error": "<reason for the user>"}`.
- a page image instead: the request also has `"render": {"page": n, "width": w, "format":
  "png" | "webp"}`, and `result` then holds the encoded image (or nothing, with the reply
  `{"id": i, "error": "<reason>"}`). The result goes to a file, not the pipe, so that a
  document of thousands of pages cannot fill a pipe buffer and stall both sides;
- end of the parent's input: exit 0.

Anything else ends the process, with what ended it as its exit status, exactly as when each
child parsed a single document: `EXIT_OUT_OF_MEMORY` when the memory limit stopped it,
`EXIT_OUTPUT_TOO_LARGE` when the file size limit did, SIGXCPU at the CPU limit, and any
other exit code or signal is a crash of the parser. A process that failed is never reused.

The limits are applied here, in the child, rather than by the parent between fork and exec,
because the parent is a threaded asyncio server where `preexec_fn` is unsafe. Nothing
untrusted has been read when they are set. They hold per document: memory (RLIMIT_AS) and
the result's size (RLIMIT_FSIZE, per file written) by their nature, processor time
(RLIMIT_CPU, which counts the process's whole life) by raising the soft limit before each
document to what was used so far plus one document's allowance.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import math
import os
import re
import resource
import signal
import struct
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from quarry.documents.parsing.ocr import OcrOptions

EXIT_OUT_OF_MEMORY = 3
EXIT_UNEXPECTED = 4
EXIT_OUTPUT_TOO_LARGE = 5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

#: A frame's length prefix; requests and replies are small (results travel in files).
FRAME_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024

# MuPDF reports a failed allocation as an ordinary error ("calloc (4104 x 1 bytes) failed"),
# which the PDF parser would otherwise take for a damaged file.
_ALLOCATION_FAILED = re.compile(
    r"\b(?:malloc|calloc|realloc)\b.*\bfailed\b|out of memory|cannot allocate memory", re.I
)

#: Parses one document: (kind, source, result file) → exit code, 0 when `result` was written.
DocumentParser = Callable[[str, Path, Path], int]


def set_limits(*, cpu_seconds: int, memory_bytes: int, file_bytes: int, documents: int = 1) -> None:
    """Lower this process's limits; a limit that is already lower stays as it is.

    The CPU soft limit starts at one document's allowance (it covers start-up) and is raised
    before each document by `allow_cpu_for_next_document`. SIGXCPU at the soft limit ends the
    process; the hard limit, a SIGKILL for a process that ignores that, has room for every
    document the process may parse: each gets at most `cpu_seconds` + 1 on top of what was
    used before it.
    """
    _die_with_parent()
    _lower(resource.RLIMIT_CORE, 0)  # a crash must not leave a core dump of the document
    _lower(resource.RLIMIT_CPU, cpu_seconds, hard=(documents + 1) * (cpu_seconds + 1))
    _lower(resource.RLIMIT_AS, memory_bytes)
    # The result and stderr. Python ignores SIGXFSZ, so a write past it fails with EFBIG.
    _lower(resource.RLIMIT_FSIZE, file_bytes)


def allow_cpu_for_next_document(cpu_seconds: int) -> None:
    """Give the next document `cpu_seconds` of processor time from now (at least)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    # Whole seconds (RLIMIT_CPU's unit), rounded up: a document never gets less than its due.
    wanted = math.ceil(usage.ru_utime + usage.ru_stime) + cpu_seconds
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard - 1)
    resource.setrlimit(resource.RLIMIT_CPU, (wanted, hard))


def _die_with_parent() -> None:
    """On Linux, be killed if the parent dies: a server killed outright (SIGKILL, the OOM
    killer) must not leave a parse running on without anyone to wait for it."""
    # (A parent that dies in the instant before this is not caught; checking getppid() for
    # 1 would be wrong where the server itself is PID 1, as in a container. "The parent" is
    # the thread that started this process: the parent's event loop thread, which lives as
    # long as the pool it runs.)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _lower(which: int, soft: int, *, hard: int | None = None) -> None:
    current_soft, current_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    soft = min(soft, hard)
    if current_soft != resource.RLIM_INFINITY and current_soft < soft:
        soft = current_soft
    resource.setrlimit(which, (soft, hard))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is an allocation failure."""
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, MemoryError) or _ALLOCATION_FAILED.search(str(seen)):
            return True
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False


def exit_code_for(exc: BaseException) -> int:
    """How the child reports an exception that ended its parse."""
    if is_out_of_memory(exc):
        return EXIT_OUT_OF_MEMORY
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return EXIT_OUTPUT_TOO_LARGE
    traceback.print_exc()
    return EXIT_UNEXPECTED


#: How this child reads pages without text (`--ocr-*`; set once by `main`).
OCR: OcrOptions | None = None


def preload_parsers() -> None:
    """Import every parser once, under the limits, so each document finds them loaded."""
    import quarry.documents.parsing.docx
    import quarry.documents.parsing.images
    import quarry.documents.parsing.pdf  # noqa: F401 - imported for its cost, now


def _quiet_pymupdf() -> None:
    import pymupdf

    # MuPDF prints every complaint about a malformed file to stderr; the reasons that
    # matter reach the user through exceptions, so keep stderr for real crashes.
    pymupdf.TOOLS.mupdf_display_errors(False)  # type: ignore[no-untyped-call]
    pymupdf.TOOLS.mupdf_display_warnings(False)  # type: ignore[no-untyped-call]


def run(kind_name: str, source: Path, result: Path) -> int:
    """Parse `source` and write the JSON result; returns the exit code."""
    from quarry.documents.parsing.model import DocumentKind, DocumentParseError
    from quarry.documents.parsing.parse import parse_document

    kind = DocumentKind(kind_name)
    if kind is DocumentKind.PDF:
        _quiet_pymupdf()
    payload: dict[str, object]
    try:
        # Only the page texts and the words travel: the parent lays them out with offsets
        # again.
        pages = parse_document(source, kind, OCR, Path.cwd()).pages
        payload = {
            "pages": [page.text for page in pages],
            "layouts": [
                page.layout.to_raw(page.text).to_wire() if page.layout else None for page in pages
            ],
        }
    except DocumentParseError as exc:
        if is_out_of_memory(exc):
            return EXIT_OUT_OF_MEMORY
        payload = {"error": exc.reason}
    with result.open("w", encoding="utf-8") as out:
        json.dump(payload, out, ensure_ascii=False)
    return 0


def render_page_image(
    kind_name: str, source: Path, result: Path, spec: dict[str, object]
) -> str | None:
    """Write page `spec["page"]` of `source` as an image `spec["width"]` pixels wide to
    `result`; returns why not (a sentence), or None."""
    from quarry.documents.parsing.model import DocumentKind, DocumentParseError
    from quarry.documents.parsing.render import render_page

    try:
        kind = DocumentKind(kind_name)
        if kind is DocumentKind.PDF:
            _quiet_pymupdf()
        data = render_page(
            source, kind, int(str(spec["page"])), int(str(spec["width"])), str(spec["format"])
        )
    except DocumentParseError as exc:
        return exc.reason
    except (ValueError, KeyError, OSError, EOFError, SyntaxError):
        # A damaged page (Pillow's errors) or a malformed request: no image, a sentence.
        return "The page cannot be shown as an image."
    result.write_bytes(data)
    return None


def forget_cached_resources() -> None:
    """Empty MuPDF's resource store (fonts and images it decoded), to give memory back.

    Only for memory: MuPDF keys what it caches by the document it came from, so nothing of
    one document is served to another. Not after every document either: refilling the store
    with the same standard fonts doubles the cost of a small PDF.
    """
    pymupdf = sys.modules.get("pymupdf")
    if pymupdf is not None:
        pymupdf.TOOLS.store_shrink(100)


def vm_bytes() -> int:
    """This process's address space now (what RLIMIT_AS counts); 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def write_frame(out: BinaryIO, message: dict[str, object]) -> None:
    body = json.dumps(message).encode()
    out.write(FRAME_HEADER.pack(len(body)) + body)
    out.flush()


def read_frame(source: BinaryIO) -> dict[str, object] | None:
    """The next request, or None at the end of the input."""
    header = source.read(FRAME_HEADER.size)
    if not header:
        return None
    if len(header) < FRAME_HEADER.size:
        raise EOFError("the input ended inside a frame")
    (length,) = FRAME_HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"a frame of {length} bytes")
    body = source.read(length)
    if len(body) < length:
        raise EOFError("the input ended inside a frame")
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a frame that is not a JSON object")
    return message


def serve(cpu_seconds: int, memory_bytes: int, parse: DocumentParser = run) -> int:
    """Answer the parent's requests until its input ends; returns the exit code."""
    # Replies travel on a private copy of stdout, and stdout itself now leads to stderr:
    # whatever a library prints cannot be taken for a reply.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    baseline = vm_bytes()
    write_frame(replies, {"ready": True, "vm_bytes": baseline})
    while (request := read_frame(requests)) is not None:
        allow_cpu_for_next_document(cpu_seconds)
        source, result = Path(str(request["source"])), Path(str(request["result"]))
        render = request.get("render")
        if isinstance(render, dict):
            error = render_page_image(str(request["kind"]), source, result, render)
            write_frame(replies, {"id": request["id"], "vm_bytes": vm_bytes(), "error": error})
            continue
        code = parse(str(request["kind"]), source, result)
        if code != 0:
            return code
        # Past a quarter of the headroom, free the caches; the parent replaces a child
        # still past half of it.
        if vm_bytes() - baseline > (memory_bytes - baseline) / 4:
            forget_cached_resources()
        write_frame(replies, {"id": request["id"], "vm_bytes": vm_bytes()})
    return 0


def main(argv: list[str] | None = None, parse: DocumentParser = run) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--file-bytes", type=int, required=True)
    parser.add_argument("--documents", type=int, default=1)
    parser.add_argument("--ocr-enabled", type=int, default=0)
    parser.add_argument("--ocr-languages", default="eng")
    parser.add_argument("--ocr-page-timeout", type=float, default=60.0)
    parser.add_argument("--ocr-dpi", type=int, default=300)
    parser.add_argument("--tesseract", default="")
    args = parser.parse_args(argv)
    global OCR
    from quarry.documents.parsing.ocr import OcrOptions

    OCR = OcrOptions(
        enabled=bool(args.ocr_enabled),
        languages=args.ocr_languages,
        page_timeout_seconds=args.ocr_page_timeout,
        dpi=args.ocr_dpi,
        tesseract=args.tesseract or None,
    )
    set_limits(
        cpu_seconds=args.cpu_seconds,
        memory_bytes=args.memory_bytes,
        file_bytes=args.file_bytes,
        documents=args.documents,
    )
    try:
        if args.documents > 1:
            # Paid once for many documents. A child for a single document imports only the
            # parser of its kind, as it is needed (PyMuPDF and lxml are most of start-up).
            preload_parsers()
        return serve(args.cpu_seconds, args.memory_bytes, parse)
    except BaseException as exc:
        return exit_code_for(exc)


def exit_now(code: int) -> None:
    """Flush and leave without interpreter teardown, which can itself fail after a
    MemoryError."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
