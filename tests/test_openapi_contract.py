"""The committed API contract is the one the code generates (regenerate with `make openapi`)."""

from __future__ import annotations

from pathlib import Path

from quarry.openapi import render_openapi

CONTRACT = Path(__file__).resolve().parents[1] / "contracts" / "openapi.yaml"


def test_contract_matches_the_code() -> None:
    assert CONTRACT.read_text() == render_openapi(), (
        "contracts/openapi.yaml is out of date: run `make openapi` and commit the result."
    )
