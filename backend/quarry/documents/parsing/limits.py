"""What one document's parser may use, and the sentences a user reads when it breaks a limit.

Shared by the pool (`isolation.py`) and its handle on one child process (`process.py`).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quarry.documents.parsing.child import EXIT_OUT_OF_MEMORY, EXIT_OUTPUT_TOO_LARGE

if TYPE_CHECKING:
    from quarry.settings import Settings

CRASHED_REASON = (
    "The parser crashed while reading this file; it may be damaged or deliberately "
    "malformed. Other documents are not affected."
)
UNEXPECTED_REASON = "Quarry could not read this file (the parser failed unexpectedly)."
KILLED_REASON = (
    "The parser was killed by the system while reading this file, most likely for using too "
    "much memory; the file may be damaged or built to exhaust memory."
)
OUTPUT_TOO_LARGE_REASON = "Reading this file produced far more text than Quarry can store."


@dataclass(frozen=True)
class ParseLimits:
    """What one document's parser may use."""

    timeout_seconds: float
    cpu_seconds: int
    memory_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        return cls(
            timeout_seconds=settings.parse_timeout_seconds,
            cpu_seconds=settings.parse_cpu_seconds,
            memory_mb=settings.parse_memory_mb,
        )

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    def memory_reason(self) -> str:
        return (
            f"Reading this file needed more than {self.memory_mb} MB of memory, so the "
            "parser was stopped (it exceeded its memory limit); the file may be damaged or "
            "built to exhaust memory."
        )

    def timeout_reason(self) -> str:
        return (
            f"Reading this file took too long: the parser timed out after "
            f"{self.timeout_seconds:g} s. The file may be damaged or built to be slow to read."
        )

    def cpu_reason(self) -> str:
        return (
            f"Reading this file used more than {self.cpu_seconds} s of processor time, so "
            "the parser was stopped; the file may be damaged or built to be slow to read."
        )

    def exit_reason(self, returncode: int) -> str:
        """Why a document failed, from how its child ended (see `child.py`'s exit codes)."""
        if returncode == EXIT_OUT_OF_MEMORY:
            return self.memory_reason()
        if returncode == -signal.SIGXCPU:
            return self.cpu_reason()
        if returncode in (EXIT_OUTPUT_TOO_LARGE, -signal.SIGXFSZ):
            return OUTPUT_TOO_LARGE_REASON
        if returncode == -signal.SIGKILL:
            # Not by us (a timeout is reported before this): the kernel's OOM killer.
            return KILLED_REASON
        if returncode < 0:
            return CRASHED_REASON
        return UNEXPECTED_REASON


def signal_name(returncode: int) -> str | None:
    """`SIGSEGV` for a process ended by that signal; None for an ordinary exit."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return str(-returncode)
