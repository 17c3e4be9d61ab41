"""Signing in, bearer tokens that must be refused, the admin bootstrap, and open health probes."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select, update

from quarry.app import create_app
from quarry.models import User
from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.api import PASSWORD, create_schema, sign_up
from tests.support.fake_llm import FakeLLM

EMAIL = "researcher@example.org"


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": email, "password": password})


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers.get("www-authenticate") == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized"
    assert isinstance(body["detail"], str) and " " in body["detail"]


async def user_id_of(app: FastAPI, email: str) -> uuid.UUID:
    async with app.state.sessionmaker() as session:
        user_id: uuid.UUID = await session.scalar(select(User.id).where(User.email == email))
    return user_id


def token(claims: dict[str, Any], key: str, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about the short key the forgeries use
        return jwt.encode(claims, key, algorithm=algorithm)


async def test_right_password_gives_a_token_that_identifies_the_user(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(app, client, EMAIL)

    response = await sign_in(client, EMAIL, PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC)

    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200, me.text
    assert me.json()["email"] == EMAIL and me.json()["is_active"] is True
    assert "password_hash" not in me.json()


async def test_email_is_matched_without_regard_to_case_or_spaces(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(app, client, EMAIL)
    response = await sign_in(client, "  Researcher@Example.ORG ", PASSWORD)
    assert response.status_code == 200, response.text


async def test_wrong_password_and_unknown_email_get_the_same_401(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(app, client, EMAIL)

    wrong_password = await sign_in(client, EMAIL, "not the password")
    unknown_email = await sign_in(client, "nobody@example.org", PASSWORD)
    empty_password = await sign_in(client, EMAIL, "")

    assert_unauthorized(wrong_password)
    assert wrong_password.json()["detail"] == "Incorrect email or password."
    # The same answer either way, so sign-in cannot be used to learn who has an account.
    assert unknown_email.status_code == wrong_password.status_code
    assert unknown_email.json() == wrong_password.json()
    # An empty password is a wrong password (or a request-shape error), never a sign-in.
    assert empty_password.status_code in (401, 422)
    assert "access_token" not in empty_password.json()


async def test_a_deactivated_user_can_neither_sign_in_nor_use_an_old_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, EMAIL)
    async with app.state.sessionmaker() as session:
        await session.execute(update(User).where(User.email == EMAIL).values(is_active=False))
        await session.commit()

    assert_unauthorized(await sign_in(client, EMAIL, PASSWORD))
    assert_unauthorized(await client.get("/api/v1/users/me", headers=headers))


TokenFactory = Callable[[uuid.UUID, str], str]

FUTURE = timedelta(hours=1)

BAD_TOKENS: dict[str, TokenFactory] = {
    "garbage": lambda _uid, _key: "not-a-jwt",
    "three garbage segments": lambda _uid, _key: "abc.def.ghi",
    "expired": lambda uid, key: token(
        {"sub": str(uid), "exp": datetime.now(UTC) - timedelta(minutes=1)}, key
    ),
    "signed with another key": lambda uid, _key: token(
        {"sub": str(uid), "exp": datetime.now(UTC) + FUTURE},
        "another-secret-key-that-is-long-enough-for-hs256",
    ),
    "alg none": lambda uid, _key: token(
        {"sub": str(uid), "exp": datetime.now(UTC) + FUTURE}, "", algorithm="none"
    ),
    "HS512 with the right key": lambda uid, key: token(
        {"sub": str(uid), "exp": datetime.now(UTC) + FUTURE}, key, algorithm="HS512"
    ),
    "no expiry": lambda uid, key: token({"sub": str(uid)}, key),
    "no subject": lambda _uid, key: token({"exp": datetime.now(UTC) + FUTURE}, key),
    "subject not a user id": lambda _uid, key: token(
        {"sub": "admin", "exp": datetime.now(UTC) + FUTURE}, key
    ),
    "unknown user": lambda _uid, key: token(
        {"sub": str(uuid.uuid4()), "exp": datetime.now(UTC) + FUTURE}, key
    ),
}


async def test_me_without_a_token_is_401(client: httpx.AsyncClient) -> None:
    assert_unauthorized(await client.get("/api/v1/users/me"))
    assert_unauthorized(await client.get("/api/v1/users/me", headers={"Authorization": "Bearer"}))
    assert_unauthorized(
        await client.get("/api/v1/users/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    )


async def test_me_refuses_every_bad_token(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    # One user for all cases: each sign-up costs an argon2 hash.
    await sign_up(app, client, EMAIL)
    uid = await user_id_of(app, EMAIL)
    # Sanity check: a well-formed token for the same user is accepted, so each 401 is the case's.
    good = token({"sub": str(uid), "exp": datetime.now(UTC) + FUTURE}, settings.signing_key())
    ok = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {good}"})
    assert ok.status_code == 200, ok.text

    for case, make in BAD_TOKENS.items():
        forged = make(uid, settings.signing_key())
        response = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"}
        )
        try:
            assert_unauthorized(response)
        except AssertionError as exc:
            raise AssertionError(f"token {case!r} was not refused: {exc}") from exc


async def test_passwords_are_stored_as_argon2id_hashes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await sign_up(app, client, EMAIL)
    async with app.state.sessionmaker() as session:
        stored = await session.scalar(select(User.password_hash).where(User.email == EMAIL))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_health_endpoints_need_no_token(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    ready = await client.get("/health/ready")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"


async def test_admin_from_settings_exists_after_start_up_and_survives_a_restart(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    settings = make_settings(
        tmp_path,
        fake_llm,
        admin_email="Admin@Example.org",
        admin_password=SecretStr("admin password 123"),
    )
    await create_schema(settings.database_url)

    for _start in range(2):  # the second start-up finds the admin and neither fails nor duplicates
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://quarry.test") as c:
                response = await sign_in(c, "admin@example.org", "admin password 123")
                assert response.status_code == 200, response.text
                me = await c.get(
                    "/api/v1/users/me",
                    headers={"Authorization": f"Bearer {response.json()['access_token']}"},
                )
                assert me.json()["email"] == "admin@example.org"
            async with app.state.sessionmaker() as session:
                admins = await session.scalar(
                    select(func.count()).select_from(User).where(User.email == "admin@example.org")
                )
                stored = await session.scalar(select(User.password_hash))
            assert admins == 1
            assert stored is not None and stored.startswith("$argon2id$")
