"""Matching values to a list column: what each method tolerates, and when it is unsure."""

from __future__ import annotations

from quarry.reflists.matching import ListRow, Matcher, MatchMethod, MatchStatus, Thresholds

CLIENTS = [
    ListRow(2, "Jonathon Smith", "C001"),
    ListRow(3, "Maria Garcia", "C002"),
    ListRow(4, "Robert Chen", "C003"),
    ListRow(5, "María García", "C004"),
    ListRow(6, "Jane Smith", "C005"),
    ListRow(7, "John Smith", "C006"),
]


def _match(method: MatchMethod, rows: list[ListRow], value: object, **limits: float):  # type: ignore[no-untyped-def]
    return Matcher(method, rows).match_many([value], Thresholds(**limits))[0]


def test_names_tolerate_order_case_accents_and_a_misspelling() -> None:
    for value in ("Robert Chen", "CHEN, robert", "Róbert Chen"):
        result = _match(MatchMethod.NAME, CLIENTS, value)
        assert (result.status, result.key) == (MatchStatus.MATCHED, "C003"), value
    misspelt = _match(MatchMethod.NAME, CLIENTS, "Jonathan Smith")
    assert (misspelt.status, misspelt.key) == (MatchStatus.MATCHED, "C001")
    assert misspelt.score is not None and misspelt.score < 100


def test_an_initial_matches_one_name_and_is_ambiguous_between_two() -> None:
    chen = _match(MatchMethod.NAME, CLIENTS, "R. Chen")
    assert (chen.status, chen.key) == (MatchStatus.MATCHED, "C003")
    smith = _match(MatchMethod.NAME, CLIENTS, "J. Smith")
    assert smith.status is MatchStatus.AMBIGUOUS and smith.key is None
    assert {c.key for c in smith.candidates[:3]} >= {"C005", "C006"}


def test_near_duplicates_are_ambiguous_with_both_candidates() -> None:
    result = _match(MatchMethod.NAME, CLIENTS, "maria garcia")
    assert result.status is MatchStatus.AMBIGUOUS
    assert [c.key for c in result.candidates[:2]] == ["C002", "C004"]


def test_a_name_far_from_every_row_is_unmatched() -> None:
    assert _match(MatchMethod.NAME, CLIENTS, "Wilhelmina Okonkwo").status is MatchStatus.UNMATCHED


def test_thresholds_decide_between_matched_and_ambiguous() -> None:
    strict = _match(MatchMethod.NAME, CLIENTS, "Jonathan Smith", match=99)
    assert strict.status is MatchStatus.AMBIGUOUS and strict.candidates[0].key == "C001"


def test_identifiers_tolerate_spacing_and_punctuation_only() -> None:
    rows = [ListRow(2, "PN-1001", "C001"), ListRow(3, "PN-1002", "C002")]
    assert _match(MatchMethod.IDENTIFIER, rows, "pn 1001").key == "C001"
    assert _match(MatchMethod.IDENTIFIER, rows, "PN.1002").key == "C002"
    assert _match(MatchMethod.IDENTIFIER, rows, "PN-1003").status is MatchStatus.UNMATCHED


def test_dates_match_exactly_after_normalisation() -> None:
    rows = [ListRow(2, "1980-05-01", "C001"), ListRow(3, "23 November 1975", "C002")]
    assert _match(MatchMethod.DATE, rows, "1 May 1980").key == "C001"
    assert _match(MatchMethod.DATE, rows, "1975-11-23").key == "C002"
    assert _match(MatchMethod.DATE, rows, "1980-05-02").status is MatchStatus.UNMATCHED


def test_rows_sharing_a_key_count_once() -> None:
    rows = [ListRow(2, "Ann Lee", "C1"), ListRow(3, "Ann Lee", "C1")]
    assert _match(MatchMethod.NAME, rows, "ann lee").status is MatchStatus.MATCHED
