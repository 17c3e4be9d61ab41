"""argon2id password hashing, off the event loop.

A hash with the standard parameters takes about 0.2 s of processor time and 64 MiB of memory
— on purpose, to make stolen hashes expensive to crack, and far too long to block the event
loop for: one sign-in would stall every other request (readiness probes included) that long.
So hashing and verifying run in a small thread pool of their own (argon2-cffi releases the GIL
while it works). Not the loop's default executor: a burst of sign-ins would queue there in
front of everything else that uses it (the DNS lookups of new database and Redis connections
among them), whereas here it queues only in front of other sign-ins. The pool is also what
bounds the memory a burst can take: `HASHING_THREADS` × 64 MiB.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar, TypeVarTuple

from argon2 import Parameters, PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY

from quarry.settings import PasswordHashProfile, Settings

_R = TypeVar("_R")
_Args = TypeVarTuple("_Args")

_PARAMETERS: dict[PasswordHashProfile, Parameters] = {
    # argon2-cffi's default: RFC 9106's second recommendation (64 MiB, t=3, p=4).
    PasswordHashProfile.STANDARD: RFC_9106_LOW_MEMORY,
    # The least argon2 accepts, with the standard hash and salt lengths so that stored hashes
    # look like production ones. Settings refuse it outside QUARRY_ENV=test.
    PasswordHashProfile.TEST: Parameters(
        type=Type.ID,
        version=19,
        salt_len=16,
        hash_len=32,
        time_cost=1,
        memory_cost=8,
        parallelism=1,
    ),
}

#: Hashes computed at once per process. Each standard hash keeps one core busy for about 0.2 s
#: (argon2-cffi computes its 4 lanes one after the other) and holds 64 MiB, so threads beyond
#: the cores would add memory, not throughput.
HASHING_THREADS = max(1, min(4, os.cpu_count() or 1))
_executor = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="quarry-password")


class PasswordHashing:
    """Hash and verify passwords with one profile's parameters, in the hashing threads."""

    def __init__(self, profile: PasswordHashProfile) -> None:
        self.profile = profile
        self._hasher = PasswordHasher.from_parameters(_PARAMETERS[profile])
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    async def hash(self, password: str) -> str:
        return await _in_hashing_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; as slow for a user who does not exist (`None`) as for
        one who does, so that sign-in timing does not tell who has an account."""
        return await _in_hashing_thread(self._verify, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than this profile's (cheap: it
        only reads the parameters from the hash string)."""
        return self._hasher.check_needs_rehash(password_hash)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            matched = self._hasher.verify(password_hash or self._dummy(), password)
        except (VerificationError, InvalidHashError):
            return False
        return matched and password_hash is not None

    def _dummy(self) -> str:
        # Made on first use (not at import, where it cost every process 0.2 s at start-up),
        # with this profile's parameters so that it costs what a real hash costs.
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash("quarry-timing-equaliser")
            return self._dummy_hash


@cache
def _hashing_for(profile: PasswordHashProfile) -> PasswordHashing:
    return PasswordHashing(profile)


def password_hashing(settings: Settings) -> PasswordHashing:
    """The process's hashing for the configured profile (shared, so its dummy hash is made
    once)."""
    return _hashing_for(settings.password_hash_profile)


async def _in_hashing_thread(function: Callable[[*_Args], _R], *args: *_Args) -> _R:
    return await asyncio.get_running_loop().run_in_executor(_executor, function, *args)
