"""Who may import what (CONVENTIONS.md "Layers"), read from the source of backend/quarry.

The rules, each failing with the file, the line and the import:

- a `router.py` speaks HTTP only: it does not import a repository (it calls a service);
- only `worker.py` imports `arq` (the facade that keeps a switch away from Arq mechanical);
- only `llm/` imports LangChain or `openai` (the single typed interface to chat models);
- only repositories (`*/repository.py`), lifecycle modules (`*/lifecycle.py`, where a
  protocol's state transitions live), `db.py`, `migrations.py` and `models/` build SQL, i.e.
  import SQL-construction names from SQLAlchemy (`select`, `update`, `text`, `func`, …).
  Types (`AsyncSession`, `Select`), exceptions (`IntegrityError`), engines and the ORM
  session's own methods (`session.get`, `add`, `flush`) are fine anywhere.

Imports are found by walking each module's syntax tree, so imports inside functions and
`TYPE_CHECKING` blocks count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "backend" / "quarry"

#: Names whose import means the module writes SQL itself. `import sqlalchemy` (the whole
#: namespace) counts as well, since `sqlalchemy.select(...)` is then one attribute away.
SQL_CONSTRUCTION_NAMES = frozenset(
    {
        "select", "insert", "update", "delete", "text", "func", "bindparam", "and_", "or_",
        "not_", "case", "literal", "literal_column", "column", "table", "exists", "union",
        "union_all", "intersect", "intersect_all", "except_", "except_all", "cast",
        "type_coerce", "tuple_", "null", "true", "false", "distinct", "desc", "asc",
        "nulls_first", "nulls_last", "over", "within_group", "values", "lateral", "join",
        "outerjoin", "alias", "aliased", "any_", "all_", "between", "collate", "extract",
        "label", "sql", "expression", "Insert", "Update", "Delete", "TextClause",
    }
)  # fmt: skip
#: Modules (relative to backend/quarry) allowed to build SQL besides repositories and
#: lifecycle modules.
SQL_MODULES = frozenset({"db.py", "migrations.py"})

#: TEMPORARY, to be removed when the engine rewrite lands: modules in the areas others are
#: rewriting now (runs/, exports/, documents/) that break a rule today, each exempt from
#: that rule only ("router": imports a repository; "sql": builds SQL). Delete an entry as
#: soon as its module keeps the rule — the test fails on an exemption that is no longer
#: needed, so the list can only shrink.
TEMPORARY_EXCEPTIONS: dict[str, frozenset[str]] = {}


@dataclass(frozen=True)
class ImportedName:
    """One thing a module imports: `module` (absolute) and, for `from … import`, `name`."""

    module: str
    name: str | None
    line: int

    def __str__(self) -> str:
        if self.name is None:
            return f"import {self.module}"
        return f"from {self.module} import {self.name}"


def _module_name(path: Path) -> str:
    parts = ["quarry", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[ImportedName]:
    """Every import in `source` (the code of `module`), relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportedName(alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield ImportedName(base, alias.name, node.lineno)


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _is_repository(imported: ImportedName) -> bool:
    return imported.module.split(".")[-1] == "repository" or imported.name == "repository"


def _builds_sql(imported: ImportedName) -> bool:
    if _top(imported.module) != "sqlalchemy":
        return False
    if imported.name is None:  # `import sqlalchemy` or `import sqlalchemy.sql…`
        return imported.module == "sqlalchemy" or imported.module.startswith("sqlalchemy.sql")
    return imported.name in SQL_CONSTRUCTION_NAMES or imported.name == "*"


def may_build_sql(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return (
        name in ("repository.py", "lifecycle.py")
        or relative in SQL_MODULES
        or relative.startswith("models/")
    )


def _broken_rules(relative: str, imported: ImportedName) -> Iterator[tuple[str, str]]:
    """(rule, why) for each rule the import breaks in the module at `relative`."""
    top = _top(imported.module)
    if relative.endswith("router.py") and _is_repository(imported):
        yield "router", "a router speaks HTTP only; call the service instead"
    if top == "arq" and relative != "worker.py":
        yield "arq", "only worker.py (the Arq facade) may import arq"
    if (top.startswith("langchain") or top == "openai") and not relative.startswith("llm/"):
        yield "llm", "only llm/ may import LangChain or openai"
    if _builds_sql(imported) and not may_build_sql(relative):
        yield "sql", "builds SQL outside a repository; move the query into one (*/repository.py)"


def violations(relative: str, source: str, *, exempt: bool = True) -> list[str]:
    """What the module at `relative` (e.g. "runs/router.py") imports against the rules,
    leaving out its temporary exceptions unless `exempt` is false."""
    path = PACKAGE_ROOT / relative
    allowed = TEMPORARY_EXCEPTIONS.get(relative, frozenset()) if exempt else frozenset()
    return [
        f"backend/quarry/{relative}:{imported.line}: {imported} — {why}"
        for imported in imports_of(source, _module_name(path), path.name == "__init__.py")
        for rule, why in _broken_rules(relative, imported)
        if rule not in allowed
    ]


def _modules() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE_ROOT)) for p in PACKAGE_ROOT.rglob("*.py"))


def test_every_module_keeps_to_its_layer() -> None:
    modules = _modules()
    assert "worker.py" in modules and "health.py" in modules  # the walk found the package
    found = [v for m in modules for v in violations(m, (PACKAGE_ROOT / m).read_text())]
    assert not found, "Imports against CONVENTIONS.md (Layers):\n" + "\n".join(found)


def test_every_temporary_exception_is_still_needed() -> None:
    """A module that keeps a rule again must leave TEMPORARY_EXCEPTIONS (so that breaking it
    cannot creep back in unnoticed)."""
    stale = []
    for relative, rules in sorted(TEMPORARY_EXCEPTIONS.items()):
        path = PACKAGE_ROOT / relative
        if not path.exists():
            stale.append(f"{relative} (no such module)")
            continue
        broken = {
            rule
            for imported in imports_of(path.read_text(), _module_name(path))
            for rule, _why in _broken_rules(relative, imported)
        }
        stale += [f"{relative}: {rule!r} (kept now)" for rule in sorted(rules - broken)]
    assert not stale, "Remove from TEMPORARY_EXCEPTIONS: " + ", ".join(stale)


# The checker itself, on made-up modules: each rule catches what it is meant to, by name.
@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        (
            "projects/router.py",
            "from quarry.projects import repository\n",
            "projects/router.py:1: from quarry.projects import repository — a router",
        ),
        (
            "projects/router.py",
            "from .repository import get_project\n",
            "from quarry.projects.repository import get_project — a router",
        ),
        ("runs/tasks.py", "import arq\n", "import arq — only worker.py"),
        (
            "exports/service.py",
            "def f():\n    from langchain_core.messages import HumanMessage\n",
            "exports/service.py:2: from langchain_core.messages import HumanMessage — only llm/",
        ),
        ("health.py", "import openai\n", "import openai — only llm/"),
        ("metrics.py", "from sqlalchemy import func, select\n", "import func — builds SQL"),
        ("health.py", "import sqlalchemy as sa\n", "import sqlalchemy — builds SQL"),
        (
            "projects/service.py",
            "from sqlalchemy.dialects.postgresql import insert\n",
            "import insert — builds SQL",
        ),
    ],
)
def test_the_checker_names_the_file_and_the_import(
    relative: str, source: str, expected: str
) -> None:
    found = violations(relative, source, exempt=False)
    assert any(expected in v for v in found), found


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("projects/service.py", "from sqlalchemy.ext.asyncio import AsyncSession\n"),
        ("variables/service.py", "from sqlalchemy.exc import IntegrityError\n"),
        ("projects/repository.py", "from sqlalchemy import func, select\n"),
        ("runs/lifecycle.py", "from sqlalchemy import update\n"),
        ("models/run.py", "from sqlalchemy import func\n"),
        ("worker.py", "from arq.worker import Worker\n"),
        ("llm/client.py", "from langchain_openai import ChatOpenAI\nimport openai\n"),
        ("projects/router.py", "from quarry.projects import service\n"),
    ],
)
def test_the_checker_allows_what_the_layers_allow(relative: str, source: str) -> None:
    assert violations(relative, source, exempt=False) == []
