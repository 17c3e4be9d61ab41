"""A stand-in for `quarry.documents.parsing.child` that misbehaves on cue, for tests only.

No file we can craft reliably segfaults MuPDF or makes a parser sleep, so tests point
`quarry.documents.parsing.isolation.CHILD_MODULE` here. It takes the real child's arguments
and sets the real limits; a file whose first line is `QUARRY-TEST-FAULT:<fault>` then gets
the fault, and any other file the real parser. Production code has no such switch.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path

from quarry.documents.parsing import child

MARKER = b"QUARRY-TEST-FAULT:"


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


def main() -> int:
    argv = sys.argv[1:]
    kind, source, result = argv[0], Path(argv[1]), Path(argv[2])
    options = dict(arg.removeprefix("--").split("=", 1) for arg in argv[3:])
    child.set_limits(
        cpu_seconds=int(options["cpu-seconds"]),
        memory_bytes=int(options["memory-bytes"]),
        file_bytes=int(options["file-bytes"]),
    )
    with source.open("rb") as file:
        first_line = file.readline(200)
    try:
        if first_line.startswith(MARKER):
            fault = first_line[len(MARKER) :].strip().decode()
            return _commit(fault, kind, source, result)
        return child.run(kind, source, result)
    except BaseException as exc:
        return child.exit_code_for(exc)


if __name__ == "__main__":
    os._exit(main())
