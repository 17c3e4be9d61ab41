"""One pydantic-settings object for the whole application (DESIGN §8)."""

from __future__ import annotations

import json
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, Request
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from quarry.documents.parsing.ocr import OcrOptions

#: Secrets shorter than this are refused in production (HS256 keys should be ≥ 256 bits).
MIN_SECRET_LENGTH = 32
#: …and must not look like a placeholder: `token_urlsafe(48)` has ~40 distinct characters,
#: `token_hex(16)` ~14; "aaaa…" or "changemechangeme…" have fewer than this.
MIN_SECRET_DISTINCT_CHARS = 8
_PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "secret", "password", "example")


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class PasswordHashProfile(StrEnum):
    """argon2id parameters for password hashes (auth/passwords.py has the numbers).

    `standard` is argon2's RFC 9106 low-memory profile (64 MiB, 3 passes, 4 lanes: about
    0.2 s per hash on one core). `test` is the cheapest argon2 allows, for test suites that
    sign hundreds of users in; only `QUARRY_ENV=test` may use it. A hash made with either
    verifies under both, and is re-made with the configured profile at the next sign-in.
    """

    STANDARD = "standard"
    TEST = "test"


class Settings(BaseSettings):
    """Configuration read from `QUARRY_*` environment variables (and `.env`)."""

    model_config = SettingsConfigDict(
        env_prefix="QUARRY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    env: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite+aiosqlite:///./var/quarry.db"
    redis_url: str | None = None
    storage_dir: Path = Path("./var/storage")
    secret_key: SecretStr | None = None
    #: Where a key generated outside production is kept (QUARRY_SECRET_KEY unset): beside
    #: the default database, whatever QUARRY_STORAGE_DIR says.
    secret_key_file: Path = Path("./var/.secret_key")
    token_expire_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 30)] = 12 * 60

    admin_email: str | None = None
    admin_password: SecretStr | None = None
    #: argon2id parameters of new password hashes; `test` only with `QUARRY_ENV=test`.
    password_hash_profile: PasswordHashProfile = PasswordHashProfile.STANDARD

    max_upload_mb: Annotated[int, Field(ge=1, le=10_000)] = 50
    # Uploads and parsing (README "Upload and parsing limits"). Every document is parsed in a
    # child process under these limits, so a hostile file fails only itself.
    #: Files accepted in one upload request (each up to `max_upload_mb`).
    max_upload_files: Annotated[int, Field(ge=1, le=1000)] = 100
    #: Wall-clock seconds one document's parser may run before it is killed.
    parse_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0
    #: Processor seconds one document's parser may use (RLIMIT_CPU).
    parse_cpu_seconds: Annotated[int, Field(ge=1, le=3600)] = 90
    #: Memory one document's parser may map, in MB (RLIMIT_AS, its whole address space).
    parse_memory_mb: Annotated[int, Field(ge=200, le=65_536)] = 1024
    #: Documents one process (the API in embedded mode, or each worker) parses at once: the
    #: size of its pool of parser child processes.
    parse_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    #: Documents a parser child parses before it is replaced by a fresh one (it is replaced
    #: at once after any failure); 1 = a fresh child for every document.
    parse_recycle_after: Annotated[int, Field(ge=1, le=100_000)] = 100
    # OCR of images and of PDF pages without a text layer (README "Scanned documents").
    #: Read such pages with Tesseract; off: images fail and scanned PDF pages stay empty.
    ocr_enabled: bool = True
    #: Tesseract's languages, `+`-joined (`eng`, `deu+eng`); each needs its language data
    #: installed (Debian: `tesseract-ocr-deu`).
    ocr_languages: Annotated[str, Field(pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$")] = "eng"
    #: Wall-clock seconds OCR of one page may take; a page over it is left empty (with a
    #: note) and the rest of the document is read.
    ocr_page_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    #: The resolution scanned PDF pages are rendered at for OCR.
    ocr_dpi: Annotated[int, Field(ge=72, le=600)] = 300
    log_level: str = "INFO"
    log_json: bool = True

    # The LLM: the standard OpenAI variables, so any OpenAI-compatible server works.
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "QUARRY_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "QUARRY_OPENAI_BASE_URL")
    )
    #: The environment variables model profiles may name for their API key (comma-separated);
    #: unset: any but Quarry's own (llm/client.py `key_variable_problem`).
    profile_key_variables: Annotated[list[str] | None, NoDecode] = None
    llm_model: str = "gpt-4o-mini"
    llm_temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    llm_concurrency: Annotated[int, Field(ge=1, le=512)] = 8
    #: Seconds one LLM call may take, from 0 up to an hour: a local model on a CPU can take
    #: minutes for one grouped answer (and a one-slot server's queue counts in it too).
    llm_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    #: The environment profile's context window in tokens: the document budget of a call is
    #: what it leaves after the instructions, the variable's part and the answer's room.
    llm_context_window: Annotated[int, Field(ge=1024, le=10_000_000)] = 128_000
    #: The most output tokens one answer may be given (`max_tokens` is sized per call up
    #: to this; an answer cut off at its budget is asked again with twice as much).
    llm_max_output_tokens: Annotated[int, Field(ge=64, le=1_000_000)] = 4096
    #: How answers' JSON shape is asked for: auto | json_schema | json_object | tools | prompt.
    llm_output_mode: Literal["auto", "json_schema", "json_object", "tools", "prompt"] = "auto"
    #: Retries of one call after a 429, a 5xx, a timeout or a dropped connection, with
    #: jittered exponential backoff that honours the provider's `Retry-After`.
    llm_max_retries: Annotated[int, Field(ge=0, le=20)] = 5
    #: The provider's limits for this deployment, shared by every worker (through Redis in
    #: distributed mode): requests and tokens per minute; unset = unlimited. `llm_concurrency`
    #: is the third limit: calls in flight at once, across all workers.
    llm_rpm: Annotated[int | None, Field(ge=1)] = None
    #: Ask for token log-probabilities and fold them into each value's confidence. Off by
    #: default: some models (OpenAI's reasoning models, some local servers) refuse the option.
    llm_logprobs: bool = False
    llm_tpm: Annotated[int | None, Field(ge=1)] = None
    #: How many times an answer that fails type validation is sent back to the model.
    llm_repair_attempts: Annotated[int, Field(ge=0, le=5)] = 2
    #: Characters of document text sent per call; longer documents are truncated (for now).
    llm_max_document_chars: Annotated[int, Field(ge=1000)] = 400_000
    #: Prices in USD per million tokens, as JSON: `{"my-model": {"input": 0.5, "output": 1.5}}`;
    #: added to the built-in table of common models (llm/pricing.py), overriding its entries.
    llm_prices: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = {}

    @field_validator("llm_prices")
    @classmethod
    def _prices_have_input_and_output(
        cls, value: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        for model, price in value.items():
            if set(price) != {"input", "output"}:
                raise ValueError(
                    f'QUARRY_LLM_PRICES: the price of "{model}" needs exactly "input" and '
                    '"output" (USD per million tokens).'
                )
        return value

    #: Similarity (0..1) an evidence quote needs to count as found approximately (fuzzy
    #: grounding) when it is not in the document word for word; 1 turns fuzzy matching off.
    grounding_fuzzy_threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.9

    # Execution (DESIGN §4). A worker renews its lease every third of the lease while a call
    # is in flight, so the lease only has to outlive a few missed renewals: short enough
    # that a killed worker's tasks come back within about a minute, long enough that a slow
    # database does not hand live work to a second worker.
    #: A running task whose lease is not renewed for this long is handed out again.
    task_lease_seconds: Annotated[int, Field(ge=2, le=3600)] = 60
    #: How long one task may take before it is stopped and marked failed; unset = derived from
    #: the LLM timeout, retries and repair attempts (see `task_timeout`).
    task_timeout_seconds: Annotated[float | None, Field(ge=1)] = None
    #: How often unfinished work (never-enqueued tasks, expired leases, unparsed documents)
    #: is found in the database and delivered again.
    sweep_interval_seconds: Annotated[float, Field(ge=0.5, le=600)] = 20.0

    # Batch mode (a profile's `batch`: batches/). A provider batch is polled first
    # after `batch_poll_min_seconds`, then less and less often (×1.5 a poll) up to
    # `batch_poll_max_seconds`: a batch takes minutes to hours, so polls cost nothing.
    batch_poll_min_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    batch_poll_max_seconds: Annotated[float, Field(gt=0, le=3600)] = 300.0
    #: Requests per provider batch (OpenAI's limit: 50,000) and bytes per input file (its
    #: limit: 200 MB; kept below it). A run with more is submitted as several batches.
    batch_max_requests: Annotated[int, Field(ge=1, le=50_000)] = 50_000
    batch_max_bytes: Annotated[int, Field(ge=1024, le=200_000_000)] = 190_000_000

    # Webhooks and email (webhooks/; README "Webhooks"). Deliveries wait in the database
    # (an outbox); every process that runs jobs sends the due ones.
    #: Allow webhook URLs on private, loopback and link-local addresses (an operator's
    #: choice: otherwise any user could make the server call its own network).
    webhook_allow_private: bool = False
    #: How long a delivery is retried (with exponential backoff) before it is failed.
    webhook_retry_seconds: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 24 * 3600.0
    #: The wait before the first retry; it doubles with each attempt, up to an hour.
    webhook_backoff_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: One delivery attempt's timeout (connect, send, answer).
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    #: How often a process looks for due deliveries.
    webhook_poll_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    #: Email the events of projects that ask for it: smtp://user:password@host:587 (STARTTLS
    #: when the server offers it), smtps://… (TLS from the start); unset = no email channel.
    smtp_url: SecretStr | None = None
    #: The sender address of those emails.
    smtp_from: str = "quarry@localhost"

    # Distributed mode: set QUARRY_REDIS_URL and run `quarry worker` processes.
    #: The Redis sorted set jobs wait in; deployments sharing one Redis need different names.
    redis_queue: Annotated[str, Field(min_length=1, max_length=200)] = "quarry:queue"
    #: On SIGTERM a worker stops taking jobs and lets running ones finish for this long.
    worker_shutdown_grace_seconds: Annotated[int, Field(ge=0, le=3600)] = 25
    #: A file a `quarry worker` touches whenever it records its health in Redis (every 15 s),
    #: so a container health check can run `quarry worker --check` (unset = no file).
    worker_heartbeat_file: Path | None = None

    # Security against hostile users (README "Security"): rate limits, browser policy, metrics.
    #: Sign-in attempts per minute for one account (email), successful or not; 0 = no limit.
    login_attempts_per_minute: Annotated[int, Field(ge=0, le=100_000)] = 10
    #: Sign-in attempts per minute from one client IP address, whatever the account; 0 = no limit.
    login_ip_attempts_per_minute: Annotated[int, Field(ge=0, le=100_000)] = 60
    #: API requests per minute for one signed-in user; 0 = no limit. Generous: the web UI polls.
    api_requests_per_minute: Annotated[int, Field(ge=0, le=1_000_000)] = 600
    #: Browser origins allowed to call the API cross-origin (comma-separated); empty = no CORS.
    cors_origins: Annotated[list[str], NoDecode] = []
    #: When set, GET /metrics needs `Authorization: Bearer <token>`; unset = open to all.
    metrics_token: SecretStr | None = None
    #: Port a `quarry worker` serves its Prometheus metrics on (all interfaces); 0 = off.
    worker_metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0

    @field_validator("profile_key_variables", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        """`LOCAL_LLM_API_KEY, ANTHROPIC_API_KEY` → a list (empty: profiles name no key)."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """`https://a.example, https://b.example` → a list (a JSON list is accepted too)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip().rstrip("/") for origin in text.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _production_needs_a_real_secret(self) -> Settings:
        if self.env is Environment.PRODUCTION:
            key = self.secret_key.get_secret_value() if self.secret_key else ""
            # A placeholder copied from an example ("change-me-…", "xxxx…") is as guessable
            # as no key at all.
            placeholder = any(word in key.lower() for word in _PLACEHOLDER_WORDS)
            too_plain = len(set(key)) < MIN_SECRET_DISTINCT_CHARS
            if len(key) < MIN_SECRET_LENGTH or too_plain or placeholder:
                raise ValueError(
                    f"QUARRY_SECRET_KEY must be set to at least {MIN_SECRET_LENGTH} random "
                    "characters in production (e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'`)."
                )
        return self

    @model_validator(mode="after")
    def _weak_password_hashing_only_in_tests(self) -> Settings:
        # A production (or development) install must never store passwords that are cheap to
        # crack because a test setting leaked into its environment or .env file.
        if (
            self.password_hash_profile is PasswordHashProfile.TEST
            and self.env is not Environment.TEST
        ):
            raise ValueError(
                "QUARRY_PASSWORD_HASH_PROFILE=test makes password hashes cheap to crack and is "
                f"only allowed with QUARRY_ENV=test (not {self.env.value})."
            )
        return self

    def ocr_options(self) -> OcrOptions:
        """The parser's OCR settings, with the Tesseract program found on this machine."""
        from quarry.documents.parsing.ocr import OcrOptions

        return OcrOptions.resolve(
            enabled=self.ocr_enabled,
            languages=self.ocr_languages,
            page_timeout_seconds=self.ocr_page_timeout_seconds,
            dpi=self.ocr_dpi,
        )

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def llm_configured(self) -> bool:
        """True when there is somewhere to send LLM calls: an API key or a custom server."""
        return bool(self.openai_api_key or self.openai_base_url)

    @property
    def task_concurrency(self) -> int:
        """Extraction tasks one process runs at once: twice the LLM limit, so that tasks
        loading and storing (database work) overlap other tasks' calls and a call is always
        ready when a limiter slot frees; the limiter keeps calls in flight at the limit."""
        return 2 * self.llm_concurrency

    @property
    def task_timeout(self) -> float:
        """Seconds one (document, variable) task may take, LLM calls, retries and re-asks included.

        Derived by default so that the timeouts nest: every attempt (1 + repair attempts) may
        make 1 + retries HTTP calls of up to the LLM timeout each, with up to a minute's
        `Retry-After` wait between them, plus a minute for loading and storing.
        """
        return self.task_timeout_for(None)

    def task_timeout_for(self, llm_timeout_seconds: float | None) -> float:
        """`task_timeout` for calls of a profile that may take `llm_timeout_seconds` each
        (None: the environment's `llm_timeout_seconds`)."""
        if self.task_timeout_seconds is not None:
            return float(self.task_timeout_seconds)
        call = self.llm_timeout_seconds if llm_timeout_seconds is None else llm_timeout_seconds
        per_attempt = (self.llm_max_retries + 1) * call
        per_attempt += self.llm_max_retries * 60
        return (self.llm_repair_attempts + 1) * per_attempt + 60

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def signing_key(self) -> str:
        """The JWT signing key; outside production a missing key is generated and kept on disk.

        Keeping it in `secret_key_file` (./var/.secret_key) means tokens survive a restart of
        `make run` without the user having to invent a secret for a local install. (It used to
        go beside the storage directory, so moving QUARRY_STORAGE_DIR scattered it elsewhere.)
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        key_file = self.secret_key_file
        if key_file.exists():
            return key_file.read_text().strip()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        key_file.write_text(key)
        key_file.chmod(0o600)
        return key


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own `Settings` and pass them to the app)."""
    return Settings()


def _app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_app_settings)]
