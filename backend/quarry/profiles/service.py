"""Model profiles: create, read, change, delete; and the profile a run names, as the llm
layer's `ModelProfile` (what a run's snapshot freezes)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.errors import BadRequest, Conflict, NotFound
from quarry.llm.client import (
    OPENAI_COMPATIBLE,
    LLMCallError,
    api_key_from_env,
    key_variable_problem,
)
from quarry.llm.providers import canonical_provider, provider_problem
from quarry.models import ModelProfileRow, Project
from quarry.profiles import repository
from quarry.profiles.schemas import ProfileCreate, ProfileOut, ProfileUpdate, check_consistent
from quarry.settings import Settings

#: Defaults of a new profile's optional fields (the environment's profile has its own, from
#: QUARRY_LLM_*): a profile is usually a local or second server, so calls are fewer at once
#: and may take longer than the environment's defaults.
DEFAULTS: dict[str, object] = {
    "provider": "openai",
    "temperature": 0.0,
    "context_window": 128_000,
    "max_output_tokens": 4096,
    "concurrency": 4,
    "output_mode": "auto",
    "timeout_seconds": 120.0,
    "batch": False,
    "batch_discount": 0.5,
}


def to_out(profile: ModelProfileRow) -> ProfileOut:
    return ProfileOut(
        id=profile.id,
        project_id=profile.project_id,
        name=profile.name,
        provider=profile.provider,
        base_url=profile.base_url,
        model=profile.model,
        api_key_env=profile.api_key_env,
        api_key_present=_key_present(profile.api_key_env),
        temperature=profile.temperature,
        context_window=profile.context_window,
        max_output_tokens=profile.max_output_tokens,
        concurrency=profile.concurrency,
        rpm=profile.rpm,
        tpm=profile.tpm,
        price_input=profile.price_input,
        price_output=profile.price_output,
        output_mode=profile.output_mode,
        learned_mode=profile.learned_mode,
        timeout_seconds=profile.timeout_seconds,
        batch=profile.batch,
        batch_discount=profile.batch_discount,
        created_at=profile.created_at,
        updated_at=profile.updated_at,
    )


async def list_profiles(session: AsyncSession, project: Project) -> Sequence[ModelProfileRow]:
    return await repository.list_profiles(session, project.id)


async def get_profile(
    session: AsyncSession, project: Project, profile_id: uuid.UUID
) -> ModelProfileRow:
    profile = await repository.get_profile(session, project.id, profile_id)
    if profile is None:
        raise NotFound("No such model profile in this project.")
    return profile


async def find_profile(session: AsyncSession, project: Project, ref: str) -> ModelProfileRow:
    """The profile a run names, by id or by name (404 when the project has none such)."""
    profile = None
    try:
        profile_id = uuid.UUID(ref)
    except ValueError:
        profile = await repository.get_profile_by_name(session, project.id, ref.strip())
    else:
        profile = await repository.get_profile(session, project.id, profile_id)
    if profile is None:
        raise NotFound(f"No model profile named {ref!r} in this project.")
    return profile


async def _flush(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        if "uq_model_profiles_project_id_name" in str(exc.orig) or "model_profiles.name" in str(
            exc.orig
        ):
            raise Conflict(f"The project already has a model profile named '{name}'.") from exc
        raise


def _key_present(name: str | None) -> bool:
    try:
        return bool(api_key_from_env(name))
    except LLMCallError:  # a name no profile may use (saved before that rule): never read
        return False


def _check_provider(
    settings: Settings, provider: str, base_url: str | None, api_key_env: str | None
) -> None:
    """Refuse (400) a profile that names a key variable it may not send (see
    llm/client.py `key_variable_problem`), and one of a LangChain provider that could not
    make calls: its package is not installed, it names no key variable, an azure one has no
    API version."""
    problem = key_variable_problem(settings, provider, base_url, api_key_env)
    if problem is not None:
        raise BadRequest(problem)
    if provider == OPENAI_COMPATIBLE:
        return
    problem = provider_problem(provider, base_url, api_key_env)
    if problem is not None:
        raise BadRequest(problem)


async def create_profile(
    session: AsyncSession, project: Project, data: ProfileCreate, settings: Settings
) -> ModelProfileRow:
    values: dict[str, Any] = {**DEFAULTS, **data.model_dump(exclude_none=True)}
    values["provider"] = canonical_provider(values["provider"])
    try:
        check_consistent(
            values["context_window"],
            values["max_output_tokens"],
            values.get("price_input"),
            values.get("price_output"),
            values["provider"],
            values["batch"],
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    if "base_url" in values:
        values["base_url"] = str(values["base_url"]).rstrip("/")
    _check_provider(settings, values["provider"], values.get("base_url"), values.get("api_key_env"))
    profile = ModelProfileRow(project_id=project.id, **values)
    session.add(profile)
    await _flush(session, data.name)
    await session.refresh(profile)
    return profile


async def update_profile(
    session: AsyncSession, profile: ModelProfileRow, data: ProfileUpdate, settings: Settings
) -> ModelProfileRow:
    """Change the fields `data` sets (null clears an optional one). Runs already made keep
    what they froze."""
    changes = data.model_dump(exclude_unset=True)
    required = {"name", "model", *DEFAULTS}
    cleared = sorted(k for k, v in changes.items() if v is None and k in required)
    if cleared:
        raise BadRequest(f"These fields cannot be null: {', '.join(cleared)}.")
    if "base_url" in changes and changes["base_url"] is not None:
        changes["base_url"] = str(changes["base_url"]).rstrip("/")
    if changes.get("provider") is not None:
        changes["provider"] = canonical_provider(changes["provider"])
    try:
        check_consistent(
            changes.get("context_window", profile.context_window),
            changes.get("max_output_tokens", profile.max_output_tokens),
            changes.get("price_input", profile.price_input),
            changes.get("price_output", profile.price_output),
            changes.get("provider", profile.provider),
            changes.get("batch", profile.batch),
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    if {"provider", "base_url", "api_key_env"} & changes.keys():
        _check_provider(
            settings,
            changes.get("provider", profile.provider),
            changes.get("base_url", profile.base_url),
            changes.get("api_key_env", profile.api_key_env),
        )
    server_changed = any(
        key in changes and changes[key] != getattr(profile, key)
        for key in ("provider", "base_url", "model", "output_mode")
    )
    for key, value in changes.items():
        setattr(profile, key, value)
    if server_changed:
        profile.learned_mode = None  # what worked with the old server says nothing of this one
    await _flush(session, profile.name)
    await session.refresh(profile)
    return profile


async def delete_profile(session: AsyncSession, profile: ModelProfileRow) -> None:
    """Delete the profile, unless a run that is not over uses it (409)."""
    for settings in await repository.active_run_settings(session, profile.project_id):
        frozen: dict[str, Any] = settings or {}
        second: dict[str, Any] = frozen.get("second_profile") or {}
        if str(profile.id) in (frozen.get("profile_id"), second.get("profile_id")):
            raise Conflict(
                f"The model profile '{profile.name}' is in use by a run that is not over; "
                "cancel the run or wait for it to end, then delete the profile."
            )
    await session.delete(profile)
    await session.flush()
