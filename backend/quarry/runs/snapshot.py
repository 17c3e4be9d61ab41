"""What a run freezes when it is created, as one typed, immutable object.

Everything that decides how a run's calls are made is read from here — by the task path, the
result cache, the estimate — and nowhere else, so a setting cannot be honoured in one place
and forgotten in another. Each field is declared either to change the answers (it then feeds
the result cache's key: an answer given under other values is not reused) or not to (it
decides how the run goes, not what a model answers); `check_fields_are_classified` refuses a
field that is neither, and a test calls it.

The result cache: an answer is reused when nothing that determines it has changed — the
run's answer fields, the instructions, the document's content and the variable's rendered
prompt (`cache_key`). Editing one variable changes only its prompt, so re-running a project
after that edit calls the model for that variable alone. Reuse stays inside a project (a user
never sees an answer produced for someone else's project), takes only answers that settled
(`succeeded` or `not_found`, never a failure), and is skipped for runs made `force_fresh`.

The model profile a run asks (a project's named profile, or the one the environment gives)
is frozen here field by field: where calls go and how answers are asked for change answers
(`provider`, `base_url`, `model`, `output_mode`, `context_window`, `max_output_tokens`);
the limits, the timeout, the key's variable name, the calibration and batch mode (`batch`,
`batch_discount`: the same request, sent another way and billed less) only change how the
run goes. `llm_profile` turns it back into the llm layer's `ModelProfile`.

A two-profile run (`profiles: [a, b]`) freezes its second profile as a whole snapshot of
its own, `second_profile`: what the first profile's answers are compared with. Its fields
are filled exactly as a one-profile run of that profile would fill them (its model, price,
document budget …), so each profile's tasks are asked, cached, limited and priced by their
own snapshot (`for_slot`); the first profile's snapshot is the run's own. It is a run field:
it changes nothing the first profile answers (the second's answers have their own key).

Stored as JSON in `runs.settings`. Rows from before a field existed get its default here, or
for `model` the row's own column. The budget is not frozen: a user may raise it on retry, so it
is the run's column `budget_usd` (models/run.py); the price it is counted at is frozen here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from quarry.llm.client import ModelProfile, OutputMode
from quarry.llm.pricing import ModelPrice

#: Bump when the engine changes what it does with the same inputs (e.g. how a value is
#: validated or grounded), so that earlier answers are not reused. 3: answers parsed
#: tolerantly, `max_tokens` sent, output modes, the document budget from the context window.
ENGINE_VERSION = "3"


class FrozenPrice(BaseModel):
    """USD per million input and output tokens, as the run's calls are counted."""

    model_config = ConfigDict(frozen=True)

    input: float
    output: float

    def to_price(self) -> ModelPrice:
        return ModelPrice(input=self.input, output=self.output)


class RunSnapshot(BaseModel):
    """The settings a run froze (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: The engine that answered: old rows without one were answered by engine 1.
    engine_version: str = "1"
    model: str
    temperature: float = 0.0
    #: Characters of document text a call may carry (longer documents are sent as excerpts).
    max_document_chars: int = 400_000
    #: How similar a quote must be to count as found approximately (it sets `grounded`,
    #: the span and the confidence stored with an answer).
    grounding_fuzzy_threshold: float = 0.9
    #: Variables asked per call (1: one call per pair); a grouped call is a different prompt.
    group_size: int = Field(default=1, ge=1)
    #: Times an answer that fails validation is sent back with the error.
    repair_attempts: int = 2
    #: Make every call even where the result cache holds the answer.
    force_fresh: bool = False
    #: The price the run's tokens are counted at; None when the model's price is unknown.
    price: FrozenPrice | None = None

    # -- the model profile (None: the environment's, QUARRY_LLM_* / OPENAI_*) -------------
    profile_id: str | None = None
    profile_name: str | None = None
    provider: str = "openai"
    #: The profile's server; None: the environment's (OPENAI_BASE_URL) or the provider's.
    base_url: str | None = None
    #: The name of the environment variable with the API key (never the key).
    api_key_env: str | None = None
    context_window: int = 128_000
    max_output_tokens: int = 4096
    output_mode: str = "auto"
    #: The mode `auto` had learned for the profile when the run was made.
    learned_mode: str | None = None
    #: Limits and timeout of the profile (None: the environment's).
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    timeout_seconds: float | None = None
    #: Observed prompt tokens per character for the profile when the run was made (None:
    #: not enough usage yet; chars/4 is assumed).
    tokens_per_char: float | None = None
    #: Submit the run's calls as provider batches (batches/), billed at the price less
    #: `batch_discount`. Not an answer field: a batch line is the very request a live call
    #: sends, so a batch run and a live run share cached answers.
    batch: bool = False
    batch_discount: float = 0.0
    #: A two-profile run's second profile, frozen like the first (None: one profile).
    second_profile: RunSnapshot | None = None

    #: Fields whose value changes what the model answers (the result cache's key).
    ANSWER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "engine_version",
            "model",
            "temperature",
            "max_document_chars",
            "grounding_fuzzy_threshold",
            "group_size",
            "provider",
            "base_url",
            "context_window",
            "max_output_tokens",
            "output_mode",
        }
    )
    #: Fields that decide how the run goes, not what is answered.
    RUN_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "repair_attempts",
            "force_fresh",
            "price",
            "profile_id",
            "profile_name",
            "api_key_env",
            "learned_mode",
            "concurrency",
            "rpm",
            "tpm",
            "timeout_seconds",
            "tokens_per_char",
            "batch",
            "batch_discount",
            "second_profile",
        }
    )

    @classmethod
    def check_fields_are_classified(cls) -> None:
        """Every field is either an answer field or a run field, never both."""
        fields = set(cls.model_fields)
        both = cls.ANSWER_FIELDS & cls.RUN_FIELDS
        unclassified = fields - cls.ANSWER_FIELDS - cls.RUN_FIELDS
        unknown = (cls.ANSWER_FIELDS | cls.RUN_FIELDS) - fields
        if both or unclassified or unknown:
            raise TypeError(
                "RunSnapshot: decide for every field whether it changes answers "
                f"(unclassified: {sorted(unclassified)}, both: {sorted(both)}, "
                f"not fields: {sorted(unknown)})"
            )

    @classmethod
    def from_row(cls, settings: dict[str, Any] | None, model: str) -> RunSnapshot:
        """The snapshot stored in a run row (`runs.settings`, `runs.model`)."""
        data = dict(settings or {})
        data.setdefault("model", model)
        price = data.get("price")
        if price is None and isinstance(data.get("price_usd_per_million"), dict):
            data["price"] = data["price_usd_per_million"]  # as runs before this version kept it
        return cls.model_validate(data)

    def to_row(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def profile_count(self) -> int:
        """The profiles each pair is asked of (1, or 2 for a two-profile run)."""
        return 1 if self.second_profile is None else 2

    def for_slot(self, slot: int) -> RunSnapshot:
        """The snapshot the tasks of profile `slot` (0: the first, 1: the second) run by."""
        if slot == 0:
            return self
        if slot == 1 and self.second_profile is not None:
            return self.second_profile
        raise ValueError(f"the run has no profile slot {slot}")

    @property
    def profile_label(self) -> str:
        """How the log and the API name the profile: its name, else its model."""
        return self.profile_name or self.model

    @property
    def model_price(self) -> ModelPrice | None:
        return self.price.to_price() if self.price is not None else None

    @property
    def batch_price(self) -> ModelPrice | None:
        """The price of the run's batch calls (its price less the batch discount)."""
        price = self.model_price
        if price is None:
            return None
        share = 1.0 - self.batch_discount
        return ModelPrice(input=price.input * share, output=price.output * share)

    @property
    def usage_key(self) -> str:
        """Where this run's prompt sizes and tokens are summed (runs/estimate.py calibrates
        token estimates from them): per profile, or per model for the environment's."""
        return f"profile:{self.profile_id}" if self.profile_id else f"env:{self.model}"

    def llm_profile(self, environment: ModelProfile) -> ModelProfile:
        """The llm layer's profile of this run; `environment` is the environment's profile
        (for a run without a named one, and for what a named one leaves unset)."""
        frozen = replace(
            environment,
            model=self.model,
            temperature=self.temperature,
            context_window=self.context_window,
            max_output_tokens=self.max_output_tokens,
            output_mode=OutputMode(self.output_mode),
            learned_mode=OutputMode(self.learned_mode) if self.learned_mode else None,
            tokens_per_char=self.tokens_per_char or environment.tokens_per_char,
        )
        if self.profile_id is None:
            return frozen
        return replace(
            frozen,
            key=self.profile_id,
            provider=self.provider,
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            concurrency=self.concurrency or environment.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            timeout_seconds=self.timeout_seconds or environment.timeout_seconds,
        )

    def answer_fingerprint(self) -> str:
        """The answer fields, canonically (what a cache key is built from)."""
        values = {name: getattr(self, name) for name in sorted(self.ANSWER_FIELDS)}
        return json.dumps(values, sort_keys=True, separators=(",", ":"))


def cache_key(
    snapshot: RunSnapshot, *, system_prompt: str, document_sha256: str, variable_prompt: str
) -> str:
    """What determines an answer, hashed: the run's answer fields, the instructions, the
    document's content and the variable's rendered prompt (which carries its type,
    description, allowed values and examples)."""
    digest = hashlib.sha256()
    for part in (snapshot.answer_fingerprint(), system_prompt, document_sha256, variable_prompt):
        digest.update(part.encode())
        digest.update(b"\x00")  # no two different part lists hash the same text
    return digest.hexdigest()


RunSnapshot.check_fields_are_classified()
