"""What a run would cost, before it starts (`POST …/runs` with `dry_run`).

Input tokens are counted on exactly the messages the engine would send first for each call,
with the client's own rule (`estimate_prompt_tokens`), without rendering a message per pair:
a call's messages are its document block plus a part that does not depend on the document
(instructions, the variable's prompt — or, grouped, the group's prompts — fences and
separators). So each document block is measured once (once per variable for a document past
the context budget, whose excerpts depend on the variable), each kind of call is rendered
once, and the sum over documents is exact. Pairs whose answer the result cache already holds
make no call and are left out, unless the run would be `force_fresh`.

Tokens per character: chars/4 (the client's rule) until the profile's calls have been
counted — every stored outcome adds its prompts' characters and the provider's prompt tokens
to `llm_usage` (runs/executor.py) — and from then on the observed ratio, frozen in the
snapshot when the run is made (`observed_tokens_per_char`), so a second run on similar
documents is estimated at the tokenizer's real rate.

Calls are formed as the runner forms them: with a project's `group_size` k > 1, the variables
of a document (in codebook order) are asked k at a time, less those the cache answers, and a
group of one is a single call; documents past the context budget are never grouped. (With
many workers claiming at once the groups can come out differently, and answers that fail
validation are asked again: neither is foreseen.)
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.llm.client import ChatMessage
from quarry.llm.pricing import ModelPrice, cost_usd
from quarry.profiles import repository as profiles_repository
from quarry.runs import repository
from quarry.runs.engine import (
    GroupInput,
    PairInput,
    build_group_messages,
    build_messages,
    split_evenly,
)
from quarry.runs.inputs import DocumentText
from quarry.runs.snapshot import RunSnapshot, cache_key
from quarry.variables.prompts import SYSTEM_PROMPT
from quarry.variables.types import TypeSpec, VariableType

#: Output tokens assumed per pair for a project with no answers yet: about one answer with a
#: sentence-long quote (`{"found": true, "evidence": "…", "value": …, "confidence": 0.9}`).
DEFAULT_OUTPUT_TOKENS_PER_PAIR = 100
#: Prompt characters a profile's calls must have sent before their token count calibrates
#: the estimate (fewer say little about the tokenizer).
MIN_CALIBRATION_CHARS = 2000
#: Documents whose text is read at once (bounds the memory an estimate of a large project takes).
_DOCUMENT_BATCH = 20


def _pair_input(block: str, prompt: str) -> PairInput:
    return PairInput(
        document_block=block,
        document_text="",
        page_starts=(),
        variable_prompt=prompt,
        type_spec=TypeSpec(type=VariableType.TEXT),
        repair_attempts=0,
    )


def render_call(block: str, names: Sequence[str], prompts: Sequence[str]) -> list[ChatMessage]:
    """The messages of the first call about a document block and one or more variables."""
    if len(prompts) == 1:
        return build_messages(_pair_input(block, prompts[0]))
    return build_group_messages(GroupInput(names, [_pair_input(block, p) for p in prompts]))


def _chars(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content) for m in messages)


@dataclass(frozen=True)
class CallShape:
    """A call's messages hold `rest + b` characters in `messages` messages for a document
    block of `b` characters."""

    rest: int
    messages: int

    @classmethod
    def of(cls, render: Callable[[str], list[ChatMessage]]) -> CallShape:
        empty = render("")
        shape = cls(rest=_chars(empty), messages=len(empty))
        probe = render("b" * 7)
        if _chars(probe) != shape.rest + 7 or len(probe) != shape.messages:
            raise AssertionError("The engine's messages are no longer block + the rest.")
        return shape

    def tokens(self, block_chars: int, per_char: float | None = None) -> int:
        """`estimate_prompt_tokens` of the call's messages, from the lengths alone (at
        `per_char` tokens per character once usage calibrated it, else chars/4)."""
        if per_char is not None:
            return math.ceil((self.rest + block_chars) * per_char) + 4 * self.messages
        return math.ceil((self.rest + block_chars) / 4) + 4 * self.messages


@dataclass
class BlockSizes:
    """Document blocks' lengths, summarised so that the tokens of one kind of call about each
    of them are summed in O(1): with x = rest + b, ⌈x / 4⌉ = (x + 3 − (x + 3) mod 4) / 4, and
    (x + 3) mod 4 depends only on b mod 4."""

    count: int = 0
    total: int = 0
    by_remainder: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def add(self, block_chars: int) -> None:
        self.count += 1
        self.total += block_chars
        self.by_remainder[block_chars % 4] += 1

    def tokens_for(self, shape: CallShape, per_char: float | None = None) -> int:
        """Σ over the blocks of `shape.tokens(b)` (with a calibrated `per_char`, within half a
        token per block: each block's rounding up is taken as half a token on average)."""
        if per_char is not None:
            chars = self.count * shape.rest + self.total
            return round(chars * per_char + self.count / 2) + 4 * shape.messages * self.count
        base = shape.rest + 3
        remainders = sum(n * ((base + r) % 4) for r, n in enumerate(self.by_remainder))
        quarters = (self.count * base + self.total - remainders) // 4
        return quarters + 4 * shape.messages * self.count


@dataclass(frozen=True)
class VariableRef:
    id: uuid.UUID
    name: str
    spec: dict[str, Any]
    prompt: str


@dataclass(frozen=True)
class VariableCost:
    variable_id: uuid.UUID
    name: str
    cached_pairs: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


@dataclass(frozen=True)
class Estimate:
    documents: int
    long_documents: int
    calls: int
    variables: list[VariableCost]

    @property
    def pairs(self) -> int:
        return self.documents * len(self.variables)

    @property
    def cached_pairs(self) -> int:
        return sum(v.cached_pairs for v in self.variables)

    @property
    def input_tokens(self) -> int:
        return sum(v.input_tokens for v in self.variables)

    @property
    def output_tokens(self) -> int:
        return sum(v.output_tokens for v in self.variables)

    def cost_usd(self, price: ModelPrice | None) -> float | None:
        return cost_usd(price, self.input_tokens, self.output_tokens)


async def estimate_run(
    session: AsyncSession,
    project_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID] | None,
    variables: Sequence[VariableRef],
    snapshot: RunSnapshot,
) -> Estimate:
    """Tokens and cost of the first call about every (document, variable) pair the cache
    does not answer: the project's ready documents (or `document_ids`), `variables` in
    codebook order, asked as `snapshot` says."""
    history, overall = await repository.output_tokens_per_pair(session, project_id)
    per_char = snapshot.tokens_per_char
    usual = overall if overall is not None else float(DEFAULT_OUTPUT_TOKENS_PER_PAIR)
    size = max(snapshot.group_size, 1)
    chunks = [range(i, min(i + size, len(variables))) for i in range(0, len(variables), size)]
    shapes: dict[tuple[int, ...], CallShape] = {}

    def shape_of(members: tuple[int, ...]) -> CallShape:
        if members not in shapes:
            names = [variables[i].name for i in members]
            prompts = [variables[i].prompt for i in members]
            shapes[members] = CallShape.of(lambda block: render_call(block, names, prompts))
        return shapes[members]

    # Documents within the context budget: their blocks, by the kind of call made about them
    # (which variables it asks). Long documents' calls are counted one by one.
    blocks: dict[tuple[int, ...], BlockSizes] = {}
    tokens_in = [0] * len(variables)
    asked = [0] * len(variables)
    calls = long_documents = documents = 0
    async for batch in _document_batches(session, project_id, document_ids):
        pages = await repository.pages_of(session, [doc_id for doc_id, _ in batch])
        texts = [
            DocumentText("", sha256, pages[doc_id], snapshot.max_document_chars)
            for doc_id, sha256 in batch
        ]
        documents += len(texts)
        keys = {
            (n, i): cache_key(
                snapshot,
                system_prompt=SYSTEM_PROMPT,
                document_sha256=text.sha256,
                variable_prompt=variable.prompt,
            )
            for n, text in enumerate(texts)
            for i, variable in enumerate(variables)
        }
        known: set[str] = set()
        if not snapshot.force_fresh:
            known = await repository.settled_keys_among(session, project_id, list(keys.values()))
        for n, text in enumerate(texts):
            fresh = [keys[(n, i)] not in known for i in range(len(variables))]
            if text.chunked:
                long_documents += 1
                for i, variable in enumerate(variables):
                    if fresh[i]:
                        block = text.block_for(variable.spec)[0]
                        tokens_in[i] += shape_of((i,)).tokens(len(block), per_char)
                        asked[i] += 1
                        calls += 1
                continue
            block_chars = len(text.block_for({})[0])
            for chunk in chunks:
                members = tuple(i for i in chunk if fresh[i])
                if members:
                    blocks.setdefault(members, BlockSizes()).add(block_chars)
    for members, sizes in blocks.items():
        # A grouped call's tokens are shared evenly among its variables, as the run does.
        shares = split_evenly(sizes.tokens_for(shape_of(members), per_char), len(members))
        for i, share in zip(members, shares, strict=True):
            tokens_in[i] += share
            asked[i] += sizes.count
        calls += sizes.count

    costs = []
    price = snapshot.model_price
    for i, variable in enumerate(variables):
        tokens_out = round(history.get(variable.id, usual) * asked[i])
        costs.append(
            VariableCost(
                variable.id,
                variable.name,
                documents - asked[i],
                tokens_in[i],
                tokens_out,
                cost_usd(price, tokens_in[i], tokens_out),
            )
        )
    return Estimate(
        documents=documents, long_documents=long_documents, calls=calls, variables=costs
    )


async def observed_tokens_per_char(session: AsyncSession, key: str) -> float | None:
    """Prompt tokens per character the provider counted for a profile's calls so far (less
    the 4 per message the estimate adds), or None before `MIN_CALIBRATION_CHARS` were sent:
    the calibration of every token estimate for the profile (and of its document budget)."""
    usage = await profiles_repository.usage_of(session, key)
    if usage is None or usage.prompt_chars < MIN_CALIBRATION_CHARS:
        return None
    ratio = (usage.prompt_tokens - 4 * usage.prompt_messages) / usage.prompt_chars
    return round(min(max(ratio, 0.02), 4.0), 6)


async def _document_batches(
    session: AsyncSession, project_id: uuid.UUID, document_ids: Sequence[uuid.UUID] | None
) -> AsyncIterator[list[tuple[uuid.UUID, str]]]:
    """The run's documents in upload order, `_DOCUMENT_BATCH` at a time (id, sha256)."""
    wanted = None if document_ids is None else sorted(set(document_ids))
    groups = [None] if wanted is None else [wanted[i : i + 500] for i in range(0, len(wanted), 500)]
    for ids in groups:
        after = None
        while True:
            rows = await repository.ready_documents(
                session, project_id, ids, after, _DOCUMENT_BATCH
            )
            if not rows:
                break
            yield [(doc_id, sha256) for _, doc_id, sha256 in rows]
            after = (rows[-1][0], rows[-1][1])
