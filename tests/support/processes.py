"""Real child processes for tests (`quarry worker`, servers): started with a clean environment,
their output captured to a log file, and always ended at teardown.

    with ProcessGroup(tmp_path / "logs") as group:
        worker = group.start("worker-1", quarry_command("worker"), env=env, cwd=tmp_path)
        worker.wait_for_output("worker.started", timeout=30)
        worker.kill()          # SIGKILL, as a crash or the OOM killer would
        print(group.report())  # the tail of every log, for a failure message

Each child leads its own process group, so ending it ends anything it spawned too; nothing
but the processes started here is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

#: Environment variables passed through to children; everything else (notably any QUARRY_*
#: or OPENAI_* of the developer's shell) is left out, so a test fully decides the settings.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")
_REPO_ROOT = Path(__file__).resolve().parents[2]


def quarry_command(*args: str) -> list[str]:
    """The `quarry` CLI of this checkout, run by the test's own interpreter."""
    return [sys.executable, "-m", "quarry.cli", *args]


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env["PYTHONPATH"] = str(_REPO_ROOT / "backend")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


class ManagedProcess:
    """One child process and its log file."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for_output(self, text: str, timeout: float) -> None:
        """Wait until the log contains `text`; fail with the log if the process exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.alive:
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}) before printing {text!r}:\n"
                    f"{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not print {text!r} in {timeout} s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown — a crash."""
        self.send(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit code."""
        self.send(signal.SIGTERM)
        return self.wait_or_kill(timeout)

    def wait_or_kill(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.wait()

    def close(self) -> None:
        self._log.close()

    def send(self, sig: signal.Signals) -> None:
        if self.alive:
            # The group this child leads (start_new_session): the child and its children only.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)


class ProcessGroup:
    """Starts named children and ends every one of them when the block exits."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path
    ) -> ManagedProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(name, argv, child_env(env), cwd, self.log_dir / f"{name}.log")
        self.processes.append(process)
        return process

    def report(self, lines: int = 60) -> str:
        """The tail of every child's log, for a failure message."""
        parts = []
        for p in self.processes:
            state = "running" if p.alive else f"exit {p.popen.returncode}"
            parts.append(f"----- {p.name} (pid {p.pid}, {state}) {p.log_path}\n{p.tail(lines)}")
        return "\n\n".join(parts)

    def close(self) -> None:
        """SIGTERM every child that still runs (all at once, so they stop in parallel), then
        SIGKILL whichever has not exited within a few seconds."""
        for process in self.processes:
            process.send(signal.SIGTERM)
        for process in self.processes:
            process.wait_or_kill(timeout=5)
            process.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
