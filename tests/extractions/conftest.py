"""The export tests' project (tests/exports/conftest.py) on SQLite and PostgreSQL: the grid
reads cells as the exports do, so it is tested on the same data."""

from tests.exports.conftest import database_url, project

__all__ = ["database_url", "project"]
