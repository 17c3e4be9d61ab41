"""The `quarry` command line: serve, worker, migrate, create-user."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from quarry.settings import get_settings

app = typer.Typer(
    help="Quarry: structured extraction from documents with LLMs.", no_args_is_help=True
)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    migrate: Annotated[
        bool | None,
        typer.Option(help="Upgrade the database first (default: yes for SQLite, no otherwise)"),
    ] = None,
) -> None:
    """Start the API, the web UI and (in embedded mode) the in-process runner."""
    import uvicorn

    from quarry.migrations import run_migrations

    settings = get_settings()
    if migrate if migrate is not None else settings.is_sqlite:
        run_migrations(settings.database_url)
    typer.echo(f"Quarry is serving on http://{host}:{port}  (API docs: /docs)")
    uvicorn.run(
        "quarry.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_config=None,
        proxy_headers=True,
    )


@app.command()
def worker(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Health check: exit 0 if this machine's worker (QUARRY_WORKER_HEARTBEAT_FILE) "
            "recorded its health within --max-age seconds, else 1.",
        ),
    ] = False,
    max_age: Annotated[float, typer.Option(help="Seconds, for --check.")] = 60.0,
) -> None:
    """Run jobs from Redis (distributed mode; needs QUARRY_REDIS_URL).

    Start as many as you like, on any machine that shares the database, Redis and the
    storage directory. SIGTERM lets running jobs finish (QUARRY_WORKER_SHUTDOWN_GRACE_SECONDS).
    """
    from quarry.logs import configure_logging
    from quarry.worker import heartbeat_age, run_worker

    settings = get_settings()
    if check:
        if settings.worker_heartbeat_file is None:
            typer.echo("Error: --check needs QUARRY_WORKER_HEARTBEAT_FILE.", err=True)
            raise typer.Exit(2)
        age = heartbeat_age(settings)
        if age is None or age > max_age:
            seen = "never" if age is None else f"{age:.0f} s ago"
            typer.echo(f"unhealthy: the worker last recorded its health {seen}", err=True)
            raise typer.Exit(1)
        typer.echo(f"healthy: health recorded {age:.0f} s ago")
        return
    if not settings.redis_url:
        typer.echo(
            "Error: `quarry worker` needs QUARRY_REDIS_URL (e.g. redis://127.0.0.1:6379/0). "
            "Without it, `quarry serve` runs the jobs itself.",
            err=True,
        )
        raise typer.Exit(2)
    configure_logging(settings.log_level, json=settings.log_json)
    run_worker(settings)


@app.command("migrate")
def migrate_command() -> None:
    """Upgrade the database schema to the latest version."""
    from quarry.migrations import run_migrations

    run_migrations(get_settings().database_url)
    typer.echo("The database is up to date.")


@app.command("create-user")
def create_user_command(
    email: Annotated[str, typer.Argument(help="The user's email address (their sign-in name)")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="QUARRY_NEW_USER_PASSWORD",
            help="Asked for when not given",
        ),
    ],
) -> None:
    """Create a user who can sign in."""
    from quarry.auth.service import create_user
    from quarry.db import create_engine, create_sessionmaker, session_scope
    from quarry.errors import QuarryError

    async def create() -> str:
        settings = get_settings()
        engine = create_engine(settings.database_url)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                user = await create_user(session, settings, email, password)
                return user.email
        finally:
            await engine.dispose()

    try:
        created = asyncio.run(create())
    except QuarryError as exc:
        typer.echo(f"Error: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Created user {created}.")


if __name__ == "__main__":
    app()
