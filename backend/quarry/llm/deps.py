from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from quarry.llm.client import ChatModelFactory


def _llm(request: Request) -> ChatModelFactory:
    llm: ChatModelFactory = request.app.state.llm
    return llm


LLMDep = Annotated[ChatModelFactory, Depends(_llm)]
