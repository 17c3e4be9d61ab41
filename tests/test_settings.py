"""Where a local install keeps the key it generates for itself (QUARRY_SECRET_KEY unset)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from quarry.settings import Settings


def test_the_generated_key_is_kept_in_var_whatever_the_storage_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where `make run` runs
    monkeypatch.delenv("QUARRY_SECRET_KEY", raising=False)
    monkeypatch.delenv("QUARRY_SECRET_KEY_FILE", raising=False)
    settings = Settings(_env_file=None, storage_dir=tmp_path / "elsewhere" / "files")  # type: ignore[call-arg]
    key = settings.signing_key()
    key_file = tmp_path / "var" / ".secret_key"
    assert key_file.read_text() == key and len(key) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (tmp_path / "elsewhere" / ".secret_key").exists()
    # A restart reads the same key back, so sign-in tokens stay valid.
    assert Settings(_env_file=None).signing_key() == key  # type: ignore[call-arg]


def test_the_key_file_can_be_put_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUARRY_SECRET_KEY", raising=False)
    monkeypatch.setenv("QUARRY_SECRET_KEY_FILE", str(tmp_path / "keys" / "quarry.key"))
    key = Settings(_env_file=None).signing_key()  # type: ignore[call-arg]
    assert (tmp_path / "keys" / "quarry.key").read_text() == key
