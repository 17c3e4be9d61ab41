"""Grounding against a real PDF's text as the parser stores it: line breaks, hyphens, pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarry.documents.parsing import DocumentKind, ParsedDocument, parse_document
from quarry.runs.grounding import MatchMethod, locate_evidence
from tests.support.documents import make_pdf

PAGES = [
    "STATIN-OLD: a randomised trial of atorvastatin in adults over seventy\n\n"
    "Abstract. In this multicentre trial, 1,482 participants aged 70 to 89 years were "
    "randomly assigned to atorvastatin 20 mg or placebo and followed for a median of 4.2 "
    "years. The primary outcome was the first major cardiovascular event.",
    "Methods. Participants were recruited from general practices in three regions between "
    "January 2016 and March 2018. Those with a history of muscle symptoms, liver disease or "
    "a life expectancy below two years were excluded. A physiotherapy assessment and treat-\n"
    "ment plan was offered to every participant at the baseline visit. Allocation was "
    "concealed by a central web-based system and the trial ran until the last participant "
    "had been followed for at least",
    "three years, after which the data monitoring committee reviewed the unblinded results.\n"
    "Results. Major cardiovascular events occurred in 112 participants in the atorvastatin "
    "group and in 139 in the placebo group. Muscle symptoms were reported by 8.1% and 7.4% "
    "of participants respectively.",
]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> ParsedDocument:
    path = Path(tmp_path_factory.mktemp("pdf")) / "trial.pdf"
    path.write_bytes(make_pdf(PAGES))
    return parse_document(path, DocumentKind.PDF)


def ground(document: ParsedDocument, quote: str) -> tuple[str, int, MatchMethod] | None:
    starts = [page.char_start for page in document.pages]
    location = locate_evidence(document.text, starts, quote)
    if location is None:
        return None
    return document.text[location.char_start : location.char_end], location.page, location.method


def test_the_pdf_text_really_has_line_breaks_inside_sentences(document: ParsedDocument) -> None:
    # The premise of the tests below: the parser keeps the PDF's own line wrapping.
    assert "randomly assigned" not in document.text.replace("randomly\nassigned", "")
    assert "\n" in document.pages[0].text.split("Abstract.")[1]
    assert "treat-\nment" in document.pages[1].text


def test_a_quote_across_line_breaks_is_found_on_its_page(document: ParsedDocument) -> None:
    quote = (
        "In this multicentre trial, 1,482 participants aged 70 to 89 years were randomly "
        "assigned to atorvastatin 20 mg or placebo and followed for a median of 4.2 years."
    )
    found = ground(document, quote)
    assert found is not None
    span, page, method = found
    assert page == 1 and method is MatchMethod.NORMALISED
    assert " ".join(span.split()) == quote


def test_hyphenation_across_a_line_end_is_found(document: ParsedDocument) -> None:
    found = ground(document, "A physiotherapy assessment and treatment plan was offered")
    assert found is not None
    span, page, _ = found
    assert page == 2 and span.startswith("A physiotherapy") and span.endswith("was offered")
    assert "treat-\nment" in span


def test_a_quote_running_onto_the_next_page_is_on_the_page_it_starts(
    document: ParsedDocument,
) -> None:
    quote = "followed for at least three years, after which the data monitoring committee"
    found = ground(document, quote)
    assert found is not None
    span, page, _ = found
    assert page == 2
    assert " ".join(span.split()) == quote  # the page separator is whitespace too
    third = ground(document, "Muscle symptoms were reported by 8.1% and 7.4% of participants")
    assert third is not None and third[1] == 3


def test_an_ellipsis_quote_spans_both_parts_across_lines(document: ParsedDocument) -> None:
    found = ground(document, "Participants were recruited from general practices … were excluded.")
    assert found is not None
    span, page, method = found
    assert page == 2 and method is not MatchMethod.FUZZY
    assert span.startswith("Participants were recruited") and span.endswith("were excluded.")


def test_a_lightly_paraphrased_quote_is_a_fuzzy_match(document: ParsedDocument) -> None:
    found = ground(
        document,
        "Major cardiovascular events occured in 112 participants in the atorvastatin arm",
    )
    assert found is not None
    span, page, method = found
    assert page == 3 and method is MatchMethod.FUZZY
    assert span.startswith("Major cardiovascular events occurred in 112 participants")


@pytest.mark.parametrize(
    "quote",
    [
        "Major cardiovascular events occurred in 121 participants in the atorvastatin group",
        "Muscle symptoms were reported by 8.1% and 4.7% of participants respectively",
        "1,482 participants aged 70 to 98 years were randomly assigned",
        "participants were randomly assigned to placebo and followed for three years",
        "Those with a history of liver disease were included",
        "The trial was stopped early because of muscle symptoms",
    ],
)
def test_quotes_not_in_the_pdf_are_not_grounded(document: ParsedDocument, quote: str) -> None:
    assert ground(document, quote) is None
