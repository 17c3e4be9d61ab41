"""How the run log words counts: "1 extraction", "2 extractions"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, in the singular for exactly one (`plural` defaults to noun + "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
