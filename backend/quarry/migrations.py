"""Run the Alembic migrations from Python (`quarry migrate`, `quarry serve` on SQLite).

The migration scripts are not part of the installed package: they live next to `alembic.ini` at
the repository root in a checkout, and in the working directory (/app) of the Docker image.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

#: backend/quarry/migrations.py → the repository root, when running from a checkout.
_REPO_ROOT = Path(__file__).resolve().parents[2]


class MigrationsNotFound(RuntimeError):
    """Neither the working directory nor the checkout holds alembic.ini and alembic/."""


def _holds_migrations(directory: Path) -> bool:
    return (directory / "alembic.ini").is_file() and (directory / "alembic" / "env.py").is_file()


def find_alembic_ini() -> Path:
    """The alembic.ini to use: the working directory's first (the Docker image's /app), then
    the repository root of the checkout this package was imported from."""
    for directory in (Path.cwd(), _REPO_ROOT):
        if _holds_migrations(directory):
            return (directory / "alembic.ini").resolve()
    raise MigrationsNotFound(
        f"Cannot find alembic.ini and alembic/ in {Path.cwd()} or {_REPO_ROOT}; "
        "run this from the Quarry repository root (or /app in the Docker image)."
    )


def alembic_config(database_url: str) -> Config:
    """An Alembic `Config` for Quarry's migrations against `database_url`.

    The URL travels in `config.attributes`, not in the ini options, so a password with `%`
    in it is not mangled by ConfigParser interpolation. Logging is left to the caller.
    """
    ini = find_alembic_ini()
    config = Config(str(ini))
    # ConfigParser interpolates option values: a literal % in the path must be doubled.
    config.set_main_option("script_location", str(ini.parent / "alembic").replace("%", "%%"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def run_migrations(database_url: str) -> None:
    """Upgrade the database at `database_url` to the latest schema (`alembic upgrade head`).

    Synchronous, and must be called outside any running event loop (the migration environment
    runs its own with `asyncio.run`): call it before starting the server or worker.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_migrations() is synchronous and cannot run inside an event loop; call it "
            "before starting one (or from a worker thread)."
        )
    command.upgrade(alembic_config(database_url), "head")
