"""Grounding evidence quotes in document text: what is found, where, how, and what never is."""

from __future__ import annotations

import random
import time

import pytest

from quarry.runs.grounding import MatchMethod, locate_evidence

TRIAL = (
    "Methods. Between 2015 and 2017 we enrolled 1,234 adults from 12 centres. Patients were "
    "randomised to receive either aspirin 100 mg daily or a matching placebo, and were "
    "followed for twelve months. The mean age of participants was 45 years (SD 9.5). The "
    "primary outcome – death from any cause – was assessed by a blinded committee.\n"
    "Results. Aspirin was not associated with lower mortality (p>0.05). The dose was 3.5 mg/kg "
    "in children. Adverse events were rare; no patient withdrew because of bleeding. Hospital "
    "admissions increased in the placebo group."
)


def located(text: str, quote: str, **kwargs: float) -> str | None:
    location = locate_evidence(text, [0], quote, **kwargs)
    return None if location is None else text[location.char_start : location.char_end]


def test_a_verbatim_quote_is_an_exact_match() -> None:
    location = locate_evidence(TRIAL, [0], "we enrolled 1,234 adults from 12 centres")
    assert location is not None
    assert location.method is MatchMethod.EXACT and location.score == 1.0
    assert TRIAL[location.char_start : location.char_end] == (
        "we enrolled 1,234 adults from 12 centres"
    )
    assert location.adjust_confidence(0.8) == 0.8


@pytest.mark.parametrize(
    ("quote", "span"),
    [
        # Case, curly versus straight quotes and dashes, whitespace runs.
        (
            "the PRIMARY outcome - death from any cause - was assessed",
            "primary outcome – death from any cause – was assessed",
        ),
        # Punctuation dropped or changed by the model.
        (
            "the primary outcome, death from any cause, was assessed",
            "primary outcome – death from any cause – was assessed",
        ),
        (
            "Adverse events were rare: no patient withdrew",
            "Adverse events were rare; no patient withdrew",
        ),
        # Thousands separator dropped.
        ("we enrolled 1234 adults", "we enrolled 1,234 adults"),
    ],
)
def test_spelling_noise_is_a_normalised_match_with_the_documents_own_span(
    quote: str, span: str
) -> None:
    location = locate_evidence(TRIAL, [0], quote)
    assert location is not None and location.method is MatchMethod.NORMALISED
    assert location.score == 1.0
    assert TRIAL[location.char_start : location.char_end].endswith(span)


def test_hyphenation_at_a_line_end_is_undone() -> None:
    text = "Patients received a six-week course of physiotherapy treat-\nment at home."
    location = locate_evidence(text, [0], "a six-week course of physiotherapy treatment at home")
    assert location is not None and location.method is MatchMethod.NORMALISED
    assert text[location.char_start : location.char_end] == (
        "a six-week course of physiotherapy treat-\nment at home"
    )


def test_a_slight_paraphrase_is_a_fuzzy_match_that_lowers_confidence() -> None:
    quote = "Patients were randomized to receive either aspirin 100 mg daily or matching placebo"
    location = locate_evidence(TRIAL, [0], quote)
    assert location is not None and location.method is MatchMethod.FUZZY
    assert 0.9 <= location.score < 1.0
    assert TRIAL[location.char_start : location.char_end] == (
        "Patients were randomised to receive either aspirin 100 mg daily or a matching placebo"
    )
    assert 0.5 <= location.confidence_factor < 1.0
    assert location.adjust_confidence(0.9) == round(0.9 * location.confidence_factor, 4)
    assert location.adjust_confidence(None) is None
    # A stricter threshold, or 1.0 (fuzzy matching off), leaves it ungrounded.
    assert located(TRIAL, quote, fuzzy_threshold=0.99) is None
    assert located(TRIAL, quote, fuzzy_threshold=1.0) is None


@pytest.mark.parametrize(
    "quote",
    [
        # Not in the document at all.
        "The trial was stopped early for benefit after the interim analysis",
        # The document's own words, reordered.
        "daily aspirin 100 mg to receive either randomised were Patients",
        # A sentence assembled from words of the document that never stand together.
        "Patients were randomised to a blinded committee for twelve months",
        # A number changed: the document says 45.
        "The mean age of participants was 54 years",
        "The mean age of participants was 45.5 years",
        # The decimal point matters even when punctuation is ignored: 3.5 is not 35.
        "The dose was 35 mg/kg in children",
        # The comparison and the negation flip the meaning.
        "Aspirin was not associated with lower mortality (p<0.05)",
        "Aspirin was associated with lower mortality (p>0.05)",
        "Aspirin was never associated with lower mortality",
        # An invented number in an otherwise faithful quote.
        "we enrolled 1,234 adults from 13 centres",
        # One word flipped by a couple of letters.
        "Adverse events were common; no patient withdrew because of bleeding",
        "Between 2015 and 2017 we excluded 1,234 adults from 12 centres",
        "Hospital admissions decreased in the placebo group",
        "The primary outcome - death from any cause - was assessed by an unblinded committee",
    ],
)
def test_quotes_that_are_not_in_the_document_are_never_grounded(quote: str) -> None:
    assert locate_evidence(TRIAL, [0], quote) is None


@pytest.mark.parametrize(
    ("quote", "expected"),
    [
        ("no", "no"),  # the word, not the "no" inside "not" earlier on
        ("45", "45"),
        ("4", None),  # inside "45" only, never as a number of its own
        ("aspirn", None),  # a typo in a short quote: too little text to trust a near match
        ("mortalty", None),
        ("", None),
        ('"', None),
    ],
)
def test_short_quotes_match_whole_words_exactly_or_not_at_all(
    quote: str, expected: str | None
) -> None:
    location = locate_evidence(TRIAL, [0], quote)
    if expected is None:
        assert location is None
    else:
        assert location is not None
        assert TRIAL[location.char_start : location.char_end] == expected
        assert TRIAL[location.char_start - 1].isspace()  # a whole word, not part of one
    assert located("We cannot say.", "no") is None


@pytest.mark.parametrize("ellipsis", [" … ", " ... ", "...", " [...] ", " (…) ", ". . ."])
def test_an_ellipsis_joins_two_parts_of_a_sentence(ellipsis: str) -> None:
    quote = f"Patients were randomised{ellipsis}followed for twelve months"
    location = locate_evidence(TRIAL, [0], quote)
    assert location is not None and location.method is not MatchMethod.FUZZY
    assert TRIAL[location.char_start : location.char_end] == (
        "Patients were randomised to receive either aspirin 100 mg daily or a matching "
        "placebo, and were followed for twelve months"
    )


def test_ellipsis_parts_must_be_in_order_and_close_together() -> None:
    assert (
        locate_evidence(TRIAL, [0], "followed for twelve months … Patients were randomised") is None
    )
    far = "Patients were randomised early. " + "Filler sentence here. " * 200 + "It ended."
    assert locate_evidence(far, [0], "Patients were randomised … It ended") is None
    assert locate_evidence(TRIAL, [0], "Patients were randomised … 54 years") is None
    # The first part appears twice; the second occurrence is the one followed by the rest.
    text = "The drug was given. Nothing else.\nThe drug was given twice; both arms tolerated it."
    location = locate_evidence(text, [0], "The drug was given … both arms tolerated it")
    assert location is not None and location.char_start == text.rindex("The drug")


def test_an_ellipsis_that_is_in_the_document_matches_as_is() -> None:
    text = "He wrote: wait... then nothing."
    assert located(text, "wait... then nothing") == "wait... then nothing"


def test_the_span_maps_back_through_expanded_and_dropped_characters() -> None:
    # "ﬁ" folds to two letters, "ß" to "ss", the soft hyphen and zero-width space vanish.
    text = "Die Straße war ﬁnal\u00ad gesperrt.\u200b Patients were kept inside for 3 days."
    location = locate_evidence(text, [0], "patients were kept inside for 3 days")
    assert location is not None
    assert text[location.char_start : location.char_end] == "Patients were kept inside for 3 days"
    location = locate_evidence(text, [0], "die strasse war final gesperrt")
    assert location is not None
    assert text[location.char_start : location.char_end] == "Die Straße war ﬁnal\u00ad gesperrt"


def test_the_page_is_the_page_where_the_quote_starts() -> None:
    pages = [
        "Title page of the report.",
        "Page two begins. The intervention group received",
        "counselling twice a week. Page three ends here.",
    ]
    text = "\n\n".join(pages)
    starts = [0, len(pages[0]) + 2, len(pages[0]) + len(pages[1]) + 4]
    location = locate_evidence(
        text, starts, "The intervention group received counselling twice a week"
    )
    assert location is not None and location.page == 2
    location = locate_evidence(text, starts, "Page three ends here")
    assert location is not None and location.page == 3
    location = locate_evidence(text, starts, "Title page")
    assert location is not None and location.page == 1


def test_a_page_number_between_two_pages_does_not_stop_a_quote_that_runs_across() -> None:
    pages = [
        "The committee concluded that the intervention reduced the rate of",
        "17\nhospital admissions among older adults living alone.",
    ]
    text = "\n\n".join(pages)
    starts = [0, len(pages[0]) + 2]
    quote = "the intervention reduced the rate of hospital admissions among older adults"
    location = locate_evidence(text, starts, quote)
    assert location is not None and location.page == 1
    assert location.method is MatchMethod.FUZZY
    assert text[location.char_start : location.char_end].startswith("the intervention")


def test_grounding_stays_fast_on_a_300_page_document() -> None:
    generator = random.Random(3)
    vocabulary = [
        *["patients", "randomised", "aspirin", "placebo", "months", "outcome", "mortality"],
        *["quality", "hospital", "adverse", "events", "baseline", "groups", "analysis"],
        *["protocol", "café", "naïve", "–", "“quoted”"],
    ]
    pages = [
        "\n".join(" ".join(generator.choice(vocabulary) for _ in range(12)) for _ in range(45))
        for _ in range(300)
    ]
    text = "\n\n".join(pages)
    starts = [sum(len(p) + 2 for p in pages[:i]) for i in range(len(pages))]
    quotes = [pages[i][100:180].replace("\n", " ").upper() for i in range(0, 300, 10)]
    quotes += ["a sentence that is nowhere in this document at all"] * 10
    began = time.perf_counter()
    found = [locate_evidence(text, starts, q) for q in quotes]
    elapsed = time.perf_counter() - began
    assert [f.page if f else None for f in found] == [*range(1, 301, 10), *[None] * 10]
    # 40 quotes; one full scan per quote (the old way) took about 0.5 s each here.
    assert elapsed < 8, f"grounding 40 quotes took {elapsed:.1f} s"
