"""argon2id parameters: strong ones outside tests, and hashes that follow the configuration."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from argon2 import extract_parameters
from argon2.profiles import RFC_9106_LOW_MEMORY
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.auth.passwords import PasswordHashing
from quarry.auth.service import create_user
from quarry.db import session_scope
from quarry.models import User
from quarry.settings import Environment, PasswordHashProfile, Settings
from tests.conftest import make_settings
from tests.support.api import PASSWORD, running_app

EMAIL = "upgraded@example.org"


@pytest.mark.parametrize("env", [Environment.PRODUCTION, Environment.DEVELOPMENT])
def test_the_cheap_profile_is_refused_outside_tests(env: Environment) -> None:
    with pytest.raises(ValidationError, match="QUARRY_PASSWORD_HASH_PROFILE=test") as refused:
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            env=env,
            secret_key="k3y-for-this-test-only-Zq8w1x5Vb7n2M4c6",
            password_hash_profile=PasswordHashProfile.TEST,
        )
    assert "only allowed with QUARRY_ENV=test" in str(refused.value)


def test_production_hashes_with_the_standard_parameters_by_default() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env=Environment.PRODUCTION,
        secret_key="k3y-for-this-test-only-Zq8w1x5Vb7n2M4c6",
    )
    assert settings.password_hash_profile is PasswordHashProfile.STANDARD


async def test_hashes_of_either_profile_verify_under_the_other() -> None:
    cheap = PasswordHashing(PasswordHashProfile.TEST)
    standard = PasswordHashing(PasswordHashProfile.STANDARD)
    cheap_hash = await cheap.hash(PASSWORD)
    assert await standard.verify(cheap_hash, PASSWORD)
    assert not await standard.verify(cheap_hash, "not the password")
    assert standard.needs_rehash(cheap_hash) and not cheap.needs_rehash(cheap_hash)
    # Unknown users cost a verification too, and never match.
    assert not await standard.verify(None, PASSWORD)


async def stored_hash(sessionmaker: async_sessionmaker[AsyncSession], email: str) -> str:
    async with sessionmaker() as session:
        value = await session.scalar(select(User.password_hash).where(User.email == email))
    assert value is not None
    return value


async def sign_in(client: httpx.AsyncClient, password: str) -> int:
    response = await client.post(
        "/api/v1/auth/token", data={"username": EMAIL, "password": password}
    )
    return response.status_code


async def test_a_cheap_hash_is_rehashed_with_the_standard_parameters_at_the_next_sign_in(
    tmp_path: Path,
) -> None:
    standard = make_settings(tmp_path, None, password_hash_profile=PasswordHashProfile.STANDARD)
    async with running_app(standard) as (app, client):
        # A user whose hash was made with weaker parameters (an older default, say).
        async with session_scope(app.state.sessionmaker) as session:
            await create_user(session, make_settings(tmp_path, None), EMAIL, PASSWORD)
        cheap_hash = await stored_hash(app.state.sessionmaker, EMAIL)
        assert extract_parameters(cheap_hash).memory_cost < RFC_9106_LOW_MEMORY.memory_cost

        assert await sign_in(client, "not the password") == 401
        assert await stored_hash(app.state.sessionmaker, EMAIL) == cheap_hash  # not upgraded

        assert await sign_in(client, PASSWORD) == 200
        upgraded = await stored_hash(app.state.sessionmaker, EMAIL)
        assert upgraded.startswith("$argon2id$")
        assert extract_parameters(upgraded) == RFC_9106_LOW_MEMORY

        # The new hash is kept (not re-made at every sign-in) and is the password's.
        assert await sign_in(client, PASSWORD) == 200
        assert await stored_hash(app.state.sessionmaker, EMAIL) == upgraded
        assert await sign_in(client, "not the password") == 401
