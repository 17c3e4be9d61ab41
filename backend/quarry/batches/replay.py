"""A chat model whose first answer came in a provider batch: the rest of the unit's calls
(re-asks after a failed validation, a grouped answer's fallbacks, a cut-off answer asked
again with more room, a smaller prompt after a context overflow) are asked live.

So a batch answer goes through exactly the code a live answer does (runs/engine.py,
runs/tasks.py, runs/groups.py): the engine asks, this model answers its first question from
the batch's line.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from quarry.llm.client import DEFAULT_MAX_TOKENS, CallGate, ChatMessage, ChatModel, ChatReply


class ReplayedChatModel:
    """`ChatModel`: `reply` (the batch's answer; None: none) for the first call, `live`
    for every other. `tokens_in`/`tokens_out` are the batch answer's (the batch price)."""

    def __init__(
        self, live: ChatModel, reply: ChatReply | None, mode: str | None, output_cap: int
    ) -> None:
        self._live = live
        self._reply = reply
        self._mode = mode
        self._cap = output_cap
        self.tokens_in = 0
        self.tokens_out = 0

    async def complete_json(
        self,
        messages: list[ChatMessage],
        gate: CallGate | None = None,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> ChatReply:
        reply, self._reply = self._reply, None
        if reply is None:
            return await self._live.complete_json(messages, gate, response_format, max_tokens)
        reply = replace(
            reply,
            output_mode=self._mode,
            prompt_chars=sum(len(m.content) for m in messages),
            prompt_messages=len(messages),
        )
        self.tokens_in += reply.tokens_in
        self.tokens_out += reply.tokens_out
        budget = max_tokens or DEFAULT_MAX_TOKENS
        if reply.truncated and budget < self._cap:
            # As the live client does: cut off by the budget, so more room, not a re-ask.
            more = await self._live.complete_json(
                messages, gate, response_format, min(budget * 2, self._cap)
            )
            return replace(
                more,
                tokens_in=more.tokens_in + reply.tokens_in,
                tokens_out=more.tokens_out + reply.tokens_out,
                prompt_chars=more.prompt_chars + reply.prompt_chars,
                prompt_messages=more.prompt_messages + reply.prompt_messages,
            )
        return reply
