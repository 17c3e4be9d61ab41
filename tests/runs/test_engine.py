from __future__ import annotations

import pytest

from quarry.runs.engine import clamp_confidence
from quarry.runs.grounding import locate_evidence


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), (0.8, 0.8), (85, 0.85), (1000, 1.0), (-1, None), (float("nan"), None)],
)
def test_confidence_is_a_fraction(raw: float | None, expected: float | None) -> None:
    assert clamp_confidence(raw) == expected


def test_quote_is_found_across_line_breaks_and_case_on_the_right_page() -> None:
    pages = ["First page about nothing.", "A total of 1,234 patients\nwere randomised."]
    text = "\n\n".join(pages)
    starts = [0, len(pages[0]) + 2]
    location = locate_evidence(text, starts, "1,234 Patients were  randomised")
    assert location is not None and location.page == 2
    assert text[location.char_start : location.char_end] == "1,234 patients\nwere randomised"


def test_quote_not_in_the_document_is_not_grounded() -> None:
    assert (
        locate_evidence("The trial enrolled 50 people.", [0], "The trial enrolled 60 people")
        is None
    )
    assert locate_evidence("Anything", [0], "") is None


def test_curly_quotes_and_dashes_match_plain_ones() -> None:
    text = "He said \u201cno\u201d \u2014 twice."
    location = locate_evidence(text, [0], 'said "no" - twice')
    assert (
        location is not None
        and text[location.char_start : location.char_end] == "said \u201cno\u201d \u2014 twice"
    )
