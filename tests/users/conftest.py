"""On SQLite by default; tests marked `BOTH_DATABASES` run on PostgreSQL too."""

from __future__ import annotations

from tests.support.databases import database, settings

__all__ = ["database", "settings"]
