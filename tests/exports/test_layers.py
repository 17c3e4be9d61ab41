"""Only the export's repository builds SQL: the service, the router and the writers may hold a
session, never a statement (CONVENTIONS.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import quarry.exports

EXPORTS = Path(quarry.exports.__file__).parent
#: What a non-repository module may take from SQLAlchemy: the session types it passes along.
ALLOWED = {"sqlalchemy.ext.asyncio"}


def sqlalchemy_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sqlalchemy")}
    return found


def test_only_the_repository_builds_sql() -> None:
    modules = sorted(EXPORTS.glob("*.py"))
    assert EXPORTS / "repository.py" in modules
    offending = {
        path.name: sorted(sqlalchemy_imports(path) - ALLOWED)
        for path in modules
        if path.name != "repository.py" and sqlalchemy_imports(path) - ALLOWED
    }
    assert offending == {}
