"""The `quarry` command line as an operator uses it: migrate, create-user."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def _quarry(
    tmp_path: Path, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "QUARRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "QUARRY_STORAGE_DIR": str(tmp_path / "storage"),
        "QUARRY_LOG_JSON": "false",
    }
    if password is not None:
        env["QUARRY_NEW_USER_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "quarry.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_then_create_user(tmp_path: Path) -> None:
    migrated = _quarry(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout

    # The first user of an installation is its administrator: someone must add the others.
    created = _quarry(tmp_path, "create-user", "Grace@Example.org", password="a long password")
    assert created.returncode == 0, created.stderr
    assert "Created administrator grace@example.org" in created.stdout
    second = _quarry(tmp_path, "create-user", "ada@example.org", password="a long password")
    assert "Created user ada@example.org" in second.stdout
    third = _quarry(tmp_path, "create-user", "--admin", "al@example.org", password="a long pw!")
    assert "Created administrator al@example.org" in third.stdout

    again = _quarry(tmp_path, "create-user", "grace@example.org", password="a long password")
    assert again.returncode == 1 and "already exists" in again.stderr

    short = _quarry(tmp_path, "create-user", "bob@example.org", password="short")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr

    with sqlite3.connect(tmp_path / "cli.db") as db:
        rows = db.execute(
            "SELECT email, password_hash, is_admin FROM users ORDER BY created_at"
        ).fetchall()
    assert [(r[0], r[2]) for r in rows] == [
        ("grace@example.org", 1),
        ("ada@example.org", 0),
        ("al@example.org", 1),
    ]
    assert rows[0][1].startswith("$argon2id$") and "a long password" not in rows[0][1]
