"""The parser's child process: `python -m quarry.documents.parsing.child KIND INPUT OUTPUT ...`.

One process parses one document and exits. It first lowers its own resource limits, then
parses the file, then writes the result as JSON to OUTPUT — a file, not a pipe, so that a
document of thousands of pages cannot fill a pipe buffer and stall both sides. What it tells
its parent (`isolation.py`):

- exit 0 with OUTPUT holding `{"pages": [...]}` or `{"error": "<reason for the user>"}`;
- exit `EXIT_OUT_OF_MEMORY` when the memory limit stopped it, `EXIT_OUTPUT_TOO_LARGE` when
  the file size limit did;
- anything else (another exit code, a signal, no OUTPUT) is a crash of the parser.

The limits are applied here, in the child, rather than by the parent between fork and exec,
because the parent is a threaded asyncio server where `preexec_fn` is unsafe. Nothing
untrusted has been read when they are set.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import re
import resource
import signal
import sys
import traceback
from pathlib import Path

EXIT_OUT_OF_MEMORY = 3
EXIT_UNEXPECTED = 4
EXIT_OUTPUT_TOO_LARGE = 5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

# MuPDF reports a failed allocation as an ordinary error ("calloc (4104 x 1 bytes) failed"),
# which the PDF parser would otherwise take for a damaged file.
_ALLOCATION_FAILED = re.compile(
    r"\b(?:malloc|calloc|realloc)\b.*\bfailed\b|out of memory|cannot allocate memory", re.I
)


def set_limits(*, cpu_seconds: int, memory_bytes: int, file_bytes: int) -> None:
    """Lower this process's limits; a limit that is already lower stays as it is."""
    _die_with_parent()
    _lower(resource.RLIMIT_CORE, 0)  # a crash must not leave a core dump of the document
    # SIGXCPU at the soft limit ends the process; SIGKILL at the hard one if it is ignored.
    _lower(resource.RLIMIT_CPU, cpu_seconds, hard=cpu_seconds + 1)
    _lower(resource.RLIMIT_AS, memory_bytes)
    # The result and stderr. Python ignores SIGXFSZ, so a write past it fails with EFBIG.
    _lower(resource.RLIMIT_FSIZE, file_bytes)


def _die_with_parent() -> None:
    """On Linux, be killed if the parent dies: a server killed outright (SIGKILL, the OOM
    killer) must not leave a parse running on without anyone to wait for it."""
    # (A parent that dies in the instant before this is not caught; checking getppid() for
    # 1 would be wrong where the server itself is PID 1, as in a container.)
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


def run(kind_name: str, source: Path, result: Path) -> int:
    """Parse `source` and write the JSON result; returns the exit code."""
    # Imported only now, under the limits: PyMuPDF and lxml are loaded for their kind only.
    from quarry.documents.parsing.model import DocumentKind, DocumentParseError
    from quarry.documents.parsing.parse import parse_document

    kind = DocumentKind(kind_name)
    if kind is DocumentKind.PDF:
        import pymupdf

        # MuPDF prints every complaint about a malformed file to stderr; the reasons that
        # matter reach the user through exceptions, so keep stderr for real crashes.
        pymupdf.TOOLS.mupdf_display_errors(False)  # type: ignore[no-untyped-call]
        pymupdf.TOOLS.mupdf_display_warnings(False)  # type: ignore[no-untyped-call]
    payload: dict[str, object]
    try:
        # Only the page texts travel: the parent lays them out with offsets again.
        payload = {"pages": [page.text for page in parse_document(source, kind).pages]}
    except DocumentParseError as exc:
        if is_out_of_memory(exc):
            return EXIT_OUT_OF_MEMORY
        payload = {"error": exc.reason}
    with result.open("w", encoding="utf-8") as out:
        json.dump(payload, out, ensure_ascii=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind")
    parser.add_argument("source", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--file-bytes", type=int, required=True)
    args = parser.parse_args(argv)
    set_limits(
        cpu_seconds=args.cpu_seconds, memory_bytes=args.memory_bytes, file_bytes=args.file_bytes
    )
    try:
        return run(args.kind, args.source, args.result)
    except BaseException as exc:
        return exit_code_for(exc)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: skip interpreter teardown, which can itself fail after a MemoryError.
    os._exit(code)
