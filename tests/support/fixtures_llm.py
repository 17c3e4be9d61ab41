"""Pytest fixtures for the fake LLM server; the main conftest imports them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_llm import FakeLLM


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """A started fake OpenAI-compatible server for one test; stopped (held calls freed) after.

    Point clients at ``fake_llm.base_url`` (ends in ``/v1``) with any API key.
    """
    fake = FakeLLM()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
