"""A stand-in for `quarry.documents.parsing.child` that misbehaves on cue, for tests only.

No file we can craft reliably segfaults MuPDF or makes a parser sleep, so tests point
`quarry.documents.parsing.isolation.CHILD_MODULE` here. It is the real child (arguments,
limits, protocol) with one change: a file whose first line is `QUARRY-TEST-FAULT:<fault>`
gets the fault, and any other file the real parser. Production code has no such switch.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path

from quarry.documents.parsing import child

MARKER = b"QUARRY-TEST-FAULT:"
_HOARD: list[bytearray] = []


def fault_file(fault: str, text: str = "A document that makes its parser misbehave.") -> bytes:
    """The bytes of a text file that makes this child commit `fault`."""
    return MARKER + fault.encode() + b"\n" + text.encode() + b"\n"


def _commit(fault: str, kind: str, source: Path, result: Path) -> int:
    if fault == "nap":
        # Parses normally after a pause, noting when it ran next to the file.
        started = time.monotonic()
        time.sleep(0.4)
        with source.with_name(source.name + ".runs").open("a") as runs:
            runs.write(f"{started} {time.monotonic()}\n")
        return child.run(kind, source, result)
    if fault == "pid":
        # Answers which process parsed it, so tests can tell a reused child from a new one.
        result.write_text(json.dumps({"pages": [str(os.getpid())]}))
        return 0
    if fault == "burn":
        # Uses 0.6 s of processor time, then answers like "pid".
        started = time.process_time()
        while time.process_time() - started < 0.6:
            pass
        return _commit("pid", kind, source, result)
    if fault == "hoard":
        # Keeps 200 MB of address space after its document, as a leaking parser would.
        _HOARD.append(bytearray(200 * 1024 * 1024))
        return _commit("pid", kind, source, result)
    if fault == "environ":
        result.write_text(json.dumps({"pages": [json.dumps(dict(os.environ))]}))
        return 0
    if fault == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV, as a crashing C library would
    elif fault == "abort":
        os.abort()
    elif fault == "sleep":
        pid_file = source.with_name(source.name + ".pid")
        pid_file.with_suffix(".tmp").write_text(str(os.getpid()))
        pid_file.with_suffix(".tmp").replace(pid_file)  # appears complete or not at all
        time.sleep(3600)  # blocked, using no CPU: only the wall-clock timeout ends it
    elif fault == "spin":
        while True:
            pass
    elif fault == "balloon":
        hoard = []
        while True:
            hoard.append(bytearray(32 * 1024 * 1024))
    elif fault == "garbage":
        result.write_text("{not json")
        return 0
    elif fault == "exit":
        return 1
    elif fault == "flood":
        with result.open("w") as out:
            while True:
                out.write("x" * 1024 * 1024)
    raise ValueError(f"unknown fault {fault!r}")


def parse_or_fault(kind: str, source: Path, result: Path) -> int:
    """The real parser, unless the file asks for a fault."""
    with source.open("rb") as file:
        first_line = file.readline(200)
    if first_line.startswith(MARKER):
        return _commit(first_line[len(MARKER) :].strip().decode(), kind, source, result)
    return child.run(kind, source, result)


if __name__ == "__main__":
    child.exit_now(child.main(parse=parse_or_fault))
