from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from quarry.models import RunStatus


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: Annotated[list[uuid.UUID], Field(max_length=100_000)] | None = Field(
        None, description="Documents to process; default: every ready document"
    )
    variable_ids: Annotated[list[uuid.UUID], Field(max_length=1000)] | None = Field(
        None, description="Variables to extract; default: the whole codebook"
    )
    dry_run: bool = Field(
        False,
        description="Only estimate: answer 200 with a RunEstimate (tokens and cost) and "
        "create nothing. Checked exactly like a real run, except that no LLM needs to be "
        "configured.",
    )
    budget_usd: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="Keep the run's cost within this many US dollars: every LLM call "
        "reserves its estimated cost before it is sent, and a call the budget cannot cover "
        "is not made — the run stops, and the pairs not yet asked end `cancelled` saying so "
        "(calls already in flight finish and are counted: the cost can pass the budget only "
        "by what they cost beyond their estimates). Needs a known price for the model.",
    )
    force_fresh: bool = Field(
        False,
        description="Ignore cached answers and make every call, even for pairs answered before",
    )
    profile: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        None,
        description="The project's model profile to ask, by name or id; default: the "
        "profile the server's environment gives (QUARRY_LLM_*, OPENAI_*). The run freezes it.",
    )
    profiles: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], Field(max_length=10)]
        | None
    ) = Field(
        None,
        description="A two-profile run: exactly two distinct model profiles of the project "
        "(names or ids), not together with `profile`. Every pair is asked of both; the "
        "first-named profile's answer is the pair's value (reviewed and exported), and the "
        "second's is compared with it: `agreement` per extraction (a disagreement is flagged "
        "`models_disagree` and comes first in review) and per variable on the run. Neither "
        "may be a batch profile; a `budget_usd` holds over both profiles' calls, each at its "
        "own price (both need one).",
    )


class RunCounts(BaseModel):
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    not_found: int = 0
    failed: int = 0
    cancelled: int = 0


class RunBatchProgress(BaseModel):
    """A batch run's provider batches (a profile with `batch: true`)."""

    batches: int = Field(description="Provider batches the run's calls were submitted as")
    open: int = Field(description="Of them, those not answered and read yet")
    status: str = Field(
        description="The least advanced status of the open batches (of all, when none is "
        "open): submitting, validating, in_progress, finalizing, cancelling, completed, "
        "expired, cancelled, failed"
    )
    requests: int = Field(description="Requests submitted (one per call: a grouped call is one)")
    answered: int = Field(description="Requests the provider has answered so far")
    failed: int = Field(description="Of them, those the provider answered with an error")
    discount: float = Field(description="The share of the price batch calls are not billed")


class AgreementCounts(BaseModel):
    """How the two profiles of a two-profile run answered the pairs they both finished."""

    compared: int = Field(description="Pairs both profiles answered (a value or not stated)")
    agreed: int = Field(description="Of them, pairs with the same answer (type-aware)")
    disagreed: int = Field(description="Of them, pairs with different answers")
    one_missing: int = Field(
        description="Pairs only one profile answered (the other's extraction failed or was "
        "cancelled): not compared"
    )
    rate: float | None = Field(description="agreed / compared; null when nothing was compared")


class VariableAgreement(AgreementCounts):
    variable_id: uuid.UUID
    name: str


class RunAgreement(BaseModel):
    """A two-profile run's agreement, counted in SQL over its pairs' stored verdicts."""

    profiles: list[str] = Field(description="The two profiles, first (the value shown) first")
    overall: AgreementCounts
    per_variable: list[VariableAgreement] = Field(description="In the run's variable order")


class RunProfileCost(BaseModel):
    """One profile of a two-profile run: its tasks' tokens and what they cost at its price."""

    profile: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float | None


class RunFailure(BaseModel):
    reason: str = Field(description="Why these tasks failed, as their log says")
    count: int = Field(description="How many of the run's tasks failed so")
    next_step: str | None = Field(
        description="What to do about it (null when the reason says, e.g. which setting to check)"
    )


class RunOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    status: RunStatus
    model: str
    settings: dict[str, Any]
    total: int = Field(
        description="Number of tasks: (document, variable) pairs, times two for a "
        "two-profile run (each profile's answer is a task); while the run is `preparing`, "
        "some have no task row yet and count as pending"
    )
    done: int = Field(description="Tasks that reached a final status")
    progress: float = Field(description="done / total, from 0 to 1")
    counts: RunCounts
    tokens_in: int
    tokens_out: int
    cost_usd: float | None = Field(
        description="What the run's calls have cost so far, in US dollars: its tokens at "
        "the model's price (those of batch answers at the batch price); null when the price "
        "of the model is unknown (set QUARRY_LLM_PRICES)"
    )
    batch: RunBatchProgress | None = Field(
        None, description="The run's provider batches (null: the run's calls are live)"
    )
    profiles: list[RunProfileCost] | None = Field(
        None,
        description="A two-profile run's profiles, first first, each with its tokens and cost "
        "(which add up to the run's); null for a one-profile run",
    )
    agreement: RunAgreement | None = Field(
        None,
        description="A two-profile run's agreement per variable and overall (GET of one run "
        "only; null in lists and for one-profile runs)",
    )
    budget_usd: float | None = Field(
        description="The run's budget in US dollars (null: none); no new call starts once "
        "cost_usd reaches it"
    )
    budget_reached: bool = Field(
        False,
        description="The run stopped starting calls because its budget was reached (retry "
        "with a higher `budget_usd` to go on)",
    )
    failures: list[RunFailure] | None = Field(
        None,
        description="The run's failed tasks by reason, most frequent first (up to 5; GET of "
        "one run only, null in lists and progress events)",
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunRetry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_usd: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="A new budget for the run (null: no budget); leave out to keep the "
        "run's budget. A run stopped by its budget needs a higher one to go on.",
    )


class VariableEstimate(BaseModel):
    variable_id: uuid.UUID
    name: str
    cached_pairs: int
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost_usd: float | None


class RunEstimate(BaseModel):
    """What a run would cost, before it starts (`POST …/runs` with `dry_run: true`).

    Input tokens are counted on exactly the messages the run would send first for each call —
    the system instructions, the document's text (or, for a document past the context budget,
    the excerpts chosen for the variable), the variable's prompt (or, with the project's
    `group_size`, the prompts of the variables asked together) — with the rule the LLM limiter
    uses: a quarter of the characters plus four per message (OpenAI's tokenizers give about
    that for English prose). Pairs whose answer the result cache already holds make no call
    and are left out (unless `force_fresh`). Output tokens are the average this project's
    earlier pairs were answered with (per variable where known), or 100 per pair for a project
    without answers yet. Answers that fail validation and are asked again cost more than
    estimated; a grouped call's tokens are shared evenly among its variables.
    """

    pairs: int = Field(description="(document, variable) pairs the run would extract")
    documents: int
    variables: int
    calls: int = Field(
        description="LLM calls the run would make (fewer than the pairs when the project "
        "groups variables, or when the cache answers some; a two-profile run: both profiles')"
    )
    cached_pairs: int = Field(
        description="Pairs answered from the result cache, without a call (0 with force_fresh; "
        "a two-profile run counts each profile's)"
    )
    model: str
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost_usd: float | None = Field(
        description="At the model's price (at the batch price for a batch profile; a "
        "two-profile run: each profile's calls at its own price, added up); null when the "
        "price of a model is unknown"
    )
    batch_discount: float | None = Field(
        None,
        description="For a batch profile, the share of the price its calls are not billed "
        "(already taken off estimated_cost_usd); null for live calls",
    )
    long_documents: int = Field(
        description="Documents longer than the context budget (QUARRY_LLM_MAX_DOCUMENT_CHARS), "
        "of which each variable is shown the most relevant excerpts"
    )
    budget_usd: float | None
    per_variable: list[VariableEstimate]


class RunEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    level: str
    event: str
    message: str
    document_id: uuid.UUID | None
    variable_id: uuid.UUID | None
