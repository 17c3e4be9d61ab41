from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: `azure_openai` and `google_genai` (LangChain's names) are saved as `azure` and `google`.
Provider = Literal[
    "openai", "anthropic", "azure", "azure_openai", "google", "google_genai", "ollama"
]
OutputModeName = Literal["auto", "json_schema", "json_object", "tools", "prompt"]
ProfileName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    Field(description="Unique in the project; a run names its profile by this or by id"),
]
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# An environment variable's name: a key pasted here by mistake ("sk-…") does not match.
EnvName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,199}$"),
    Field(
        description="The NAME of the environment variable that holds the API key (e.g. "
        "ANTHROPIC_API_KEY), read by the process that makes the calls; never the key itself. "
        "Required for anthropic, azure and google: a provider's own variables are not read"
    ),
]
BaseUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=500),
]
Timeout = Annotated[float, Field(gt=0, le=3600, description="Seconds one call may take (≤ 3600)")]


class ProfileFields(BaseModel):
    """The fields a profile is made of (all optional on update)."""

    model_config = ConfigDict(extra="forbid")

    provider: Provider | None = Field(
        None,
        description="openai (the OpenAI API or any OpenAI-compatible server: the default), "
        "or, through LangChain's init_chat_model, anthropic (needs langchain-anthropic), "
        "azure (Azure OpenAI; also azure_openai), google (the Gemini API, needs "
        "langchain-google-genai; also google_genai) or ollama (needs langchain-ollama). A "
        "provider whose package is not installed is refused (400, naming it).",
    )
    base_url: BaseUrl | None = Field(
        None,
        description="The server's http(s) URL (OpenAI-compatible: ending in /v1; azure: the "
        "resource endpoint with ?api-version=…, or a deployment's Target URI; ollama: its "
        "own URL, e.g. http://127.0.0.1:11434); null: the provider's own",
    )
    api_key_env: EnvName | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    context_window: Annotated[int, Field(ge=1024, le=10_000_000)] | None = Field(
        None, description="The model's context window in tokens"
    )
    max_output_tokens: Annotated[int, Field(ge=64, le=1_000_000)] | None = Field(
        None, description="The most output tokens one answer may be given"
    )
    concurrency: Annotated[int, Field(ge=1, le=512)] | None = Field(
        None, description="Calls in flight at once (1 for a one-slot local server)"
    )
    rpm: Annotated[int, Field(ge=1)] | None = Field(None, description="Requests per minute")
    tpm: Annotated[int, Field(ge=1)] | None = Field(None, description="Tokens per minute")
    price_input: Annotated[float, Field(ge=0)] | None = Field(
        None, description="USD per million input tokens"
    )
    price_output: Annotated[float, Field(ge=0)] | None = Field(
        None, description="USD per million output tokens"
    )
    output_mode: OutputModeName | None = Field(
        None,
        description="How answers' JSON shape is asked for; auto tries json_schema, "
        "json_object, tools, prompt in that order and remembers what works",
    )
    timeout_seconds: Timeout | None = None
    batch: bool | None = Field(
        None,
        description="Submit a run's calls through the provider's batch API (OpenAI-compatible "
        "providers with /v1/files and /v1/batches): answers come within the provider's 24 h "
        "window instead of at once, at the batch price. No budget can be held over a batch.",
    )
    batch_discount: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None,
        description="The share of the price batch calls are not billed (0.5, OpenAI's: half "
        "price); cost figures and estimates of batch runs apply it",
    )


class ProfileCreate(ProfileFields):
    name: ProfileName
    model: ModelName


class ProfileUpdate(ProfileFields):
    name: ProfileName | None = None
    model: ModelName | None = None


def check_consistent(
    context_window: int,
    max_output_tokens: int,
    price_in: float | None,
    price_out: float | None,
    provider: str = "openai",
    batch: bool = False,
) -> None:
    if max_output_tokens >= context_window:
        raise ValueError(
            f"max_output_tokens ({max_output_tokens}) must be smaller than the context "
            f"window ({context_window}): the prompt needs room too."
        )
    if (price_in is None) != (price_out is None):
        raise ValueError("Give both price_input and price_output, or neither.")
    if batch and provider != "openai":
        raise ValueError(
            f"Batch mode needs an OpenAI-compatible provider (files and batches endpoints); "
            f"the profile's provider is {provider}. Set batch to false, or provider to openai."
        )


class ProfileOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    provider: str
    base_url: str | None
    model: str
    api_key_env: str | None
    api_key_present: bool = Field(
        description="Whether api_key_env is set in this server's environment (the key is "
        "never shown)"
    )
    temperature: float
    context_window: int
    max_output_tokens: int
    concurrency: int
    rpm: int | None
    tpm: int | None
    price_input: float | None
    price_output: float | None
    output_mode: str
    learned_mode: str | None = Field(
        description="The mode `auto` found to work with this server (null: not yet)"
    )
    timeout_seconds: float
    batch: bool
    batch_discount: float
    created_at: datetime
    updated_at: datetime
