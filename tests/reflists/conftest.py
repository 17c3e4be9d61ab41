"""The app on SQLite by default; a test parametrised with `BOTH_DATABASES` runs on
PostgreSQL too (tests.support.databases)."""

from __future__ import annotations

from tests.support.databases import BOTH_DATABASES, database, settings

__all__ = ["BOTH_DATABASES", "database", "settings"]
