"""The `quarry` command line: serve, worker, migrate, create-user, extract."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from quarry.exports.schemas import ExportLayout
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
    admin: Annotated[
        bool, typer.Option("--admin", help="Make the user an administrator (manages users)")
    ] = False,
) -> None:
    """Create a user who can sign in (`--admin`: one who manages the other users too; the
    first user of an installation without an active administrator becomes one anyway, so
    that someone can add the others)."""
    from quarry.auth.service import create_user, has_active_admin
    from quarry.db import create_engine, create_sessionmaker, session_scope
    from quarry.errors import QuarryError

    async def create() -> tuple[str, bool]:
        settings = get_settings()
        engine = create_engine(settings.database_url)
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                make_admin = admin or not await has_active_admin(session)
                user = await create_user(session, settings, email, password, is_admin=make_admin)
                return user.email, user.is_admin
        finally:
            await engine.dispose()

    try:
        created, is_admin = asyncio.run(create())
    except QuarryError as exc:
        typer.echo(f"Error: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Created {'administrator' if is_admin else 'user'} {created}.")


@app.command("extract")
def extract_command(
    codebook: Annotated[Path, typer.Argument(help="The codebook file (YAML or JSON)")],
    documents: Annotated[
        list[str], typer.Argument(help="Documents: files, folders (read recursively) and globs")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write: .xlsx, .csv or .json")
    ],
    work_dir: Annotated[
        Path,
        typer.Option(help="Database, stored files and result cache, kept between runs"),
    ] = Path(".quarry"),
    model: Annotated[
        str | None,
        typer.Option(help="The model (default: the codebook's llm_model, else QUARRY_LLM_MODEL)"),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="An OpenAI-compatible server (default: OPENAI_BASE_URL)"),
    ] = None,
    group_size: Annotated[
        int | None,
        typer.Option(min=1, max=20, help="Variables asked per call (default: the codebook's, 1)"),
    ] = None,
    budget: Annotated[
        float | None, typer.Option(min=0.000001, help="Stop before spending more USD than this")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=512, help="LLM calls at once (default: QUARRY_LLM_CONCURRENCY)"),
    ] = None,
    layout: Annotated[
        ExportLayout, typer.Option(help="For .csv and .json: a row per document, or per value")
    ] = ExportLayout.WIDE,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only print the estimate: no LLM call is made")
    ] = False,
) -> None:
    """Extract the codebook's variables from the documents and write the results, no server.

    Re-running the same command reuses every stored answer (the work directory is the
    result cache), so an interrupted or failed extraction goes on where it stopped. Exit
    status: 0 done, 1 some pairs have no answer or some documents could not be read (the
    reasons are listed), 2 bad input, 130 interrupted.
    """
    from pydantic import ValidationError
    from rich.console import Console

    from quarry.errors import QuarryError
    from quarry.extract.codebook import CodebookError, load_codebook
    from quarry.extract.display import LiveProgress, summary_lines
    from quarry.extract.inputs import InputError, find_documents, output_format
    from quarry.extract.service import (
        ExtractRequest,
        ExtractResult,
        WorkDirectoryBusy,
        extract_settings,
        run_extract,
        work_directory_lock,
    )
    from quarry.logs import configure_logging
    from quarry.migrations import run_migrations

    def fail(message: str) -> typer.Exit:
        typer.echo(f"Error: {message}", err=True)
        return typer.Exit(2)

    try:
        book = load_codebook(codebook)
        paths = find_documents(documents)
        export_format = output_format(output)
    except CodebookError as exc:
        typer.echo(f"Error: the codebook {exc.path} cannot be used:", err=True)
        for problem in exc.problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(2) from exc
    except InputError as exc:
        raise fail(str(exc)) from exc
    try:
        settings = extract_settings(
            work_dir, model=model, base_url=base_url, concurrency=concurrency
        )
    except ValidationError as exc:
        raise fail(f"the settings in the environment are not valid: {exc}") from exc
    request = ExtractRequest(
        codebook=book,
        documents=paths,
        output=output,
        format=export_format,
        layout=layout,
        budget_usd=budget,
        model=model,
        group_size=group_size,
        dry_run=dry_run,
    )
    console = Console(stderr=True)

    async def extract() -> ExtractResult:
        task = asyncio.current_task()
        if task is not None:  # SIGTERM stops as Ctrl-C does: answers in flight are kept
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with LiveProgress(console) as display:
            return await run_extract(settings, request, display)

    try:
        with work_directory_lock(work_dir):
            # The terminal shows progress and errors; the whole log goes to the work directory.
            configure_logging("ERROR", json=False, file=work_dir / "extract.log")
            run_migrations(settings.database_url)
            result = asyncio.run(extract())
    except WorkDirectoryBusy as exc:
        raise fail(str(exc)) from exc
    except QuarryError as exc:
        raise fail(exc.detail) from exc
    for line in summary_lines(result):
        typer.echo(line)
    if result.refused is not None:
        raise fail(result.refused)
    if result.interrupted:
        raise typer.Exit(130)
    if result.pairs_not_done or result.unreadable:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
