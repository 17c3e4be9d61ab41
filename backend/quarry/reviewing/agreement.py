"""Agreement between two sources of verdicts on the same cells (pure).

For every compared cell, both sides' verdicts are judged agreeing or not by
`verdicts.verdicts_agree` (type-aware, as the evaluation compares; numbers within the
tolerance, dates at the precision of the less precise one). Per variable:

- ``agreement``: the share of compared cells where the two sides agree (0..1);
- ``kappa`` (boolean and category variables): Cohen's kappa,
  ``(p_o - p_e) / (1 - p_e)``, where ``p_o`` is that share and ``p_e`` the agreement
  expected by chance, ``sum over categories k of (n_a(k) / n) * (n_b(k) / n)``. A verdict's
  category is its value ("not stated" is one), or "rejected", or — the model's side — "no
  answer". Undefined (None) when nothing was compared or chance agreement is certain
  (p_e = 1: both sides always said the same one thing).

Overall, across variables: ``agreement`` is pooled (all agreeing cells over all compared
cells) and ``kappa`` is the pooled kappa of De Vries et al. (2008) over the boolean and
category variables: ``(mean p_o - mean p_e) / (1 - mean p_e)``, the means taken over those
variables (each with at least one compared cell).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quarry.evaluation.compare import InvalidValue, Tolerance, parse_gold
from quarry.models import ReviewStatus
from quarry.reviewing.verdicts import NO_ANSWER, verdicts_agree
from quarry.variables.types import TypeSpec, VariableType

#: Variable types whose figures include Cohen's kappa (a fixed set of categories).
KAPPA_TYPES = frozenset({VariableType.BOOLEAN, VariableType.CATEGORY})
#: Types compared within a tolerance (numbers) or at a precision (dates).
TOLERANCE_TYPES = frozenset({VariableType.INTEGER, VariableType.NUMBER, VariableType.DATE})

_REJECTED = ReviewStatus.REJECTED.value


def measure_of(variable_type: VariableType) -> str:
    """How a variable's agreement is measured: kappa, within_tolerance or exact."""
    if variable_type in KAPPA_TYPES:
        return "kappa"
    if variable_type in TOLERANCE_TYPES:
        return "within_tolerance"
    return "exact"


def cohens_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa of two raters' categories on the same items (None: undefined)."""
    chance = chance_agreement(pairs)
    if chance is None or chance == 1:
        return None
    observed = sum(a == b for a, b in pairs) / len(pairs)
    return (observed - chance) / (1 - chance)


def chance_agreement(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """p_e: the agreement two raters with these marginals would reach by chance."""
    n = len(pairs)
    if not n:
        return None
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    return sum(count * second[category] for category, count in first.items()) / (n * n)


def category_of(spec: TypeSpec, status: str, value: Any) -> Hashable:
    """A verdict's kappa category: its normalised value, "not stated", "rejected" or "no
    answer" (equal categories are exactly the verdicts `verdicts_agree` calls agreeing)."""
    if status == NO_ANSWER:
        return ("no answer",)
    if status == _REJECTED:
        return ("rejected",)
    try:
        normalised = parse_gold(spec, value)
    except InvalidValue:
        normalised = value
    if normalised is None:
        return ("not stated",)
    return ("value", json.dumps(normalised, sort_keys=True))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class Tally:
    """The compared cells of one comparison (of one variable, or pooled)."""

    kappa: bool
    compared: int = 0
    agreed: int = 0
    pairs: list[tuple[Hashable, Hashable]] = field(default_factory=list)

    def add(
        self,
        spec: TypeSpec,
        a: tuple[str, Any],
        b: tuple[str, Any],
        tolerance: Tolerance,
    ) -> bool:
        """Count one cell; returns whether the two verdicts agree."""
        agreed = verdicts_agree(spec, a, b, tolerance)
        self.compared += 1
        self.agreed += agreed
        if self.kappa:
            self.pairs.append((category_of(spec, *a), category_of(spec, *b)))
        return agreed

    @property
    def agreement(self) -> float | None:
        return _round(self.agreed / self.compared) if self.compared else None

    @property
    def cohens_kappa(self) -> float | None:
        return _round(cohens_kappa(self.pairs)) if self.kappa else None


def pooled_kappa(tallies: Sequence[Tally]) -> float | None:
    """De Vries et al.'s pooled kappa over the kappa tallies with compared cells."""
    used = [t for t in tallies if t.kappa and t.pairs]
    if not used:
        return None
    observed = sum(sum(a == b for a, b in t.pairs) / len(t.pairs) for t in used) / len(used)
    chance = sum(chance_agreement(t.pairs) or 0.0 for t in used) / len(used)
    if chance == 1:
        return None
    return _round((observed - chance) / (1 - chance))


def pooled_agreement(tallies: Sequence[Tally]) -> tuple[int, int, float | None]:
    """(compared, agreed, agreement) over all the tallies."""
    compared = sum(t.compared for t in tallies)
    agreed = sum(t.agreed for t in tallies)
    return compared, agreed, _round(agreed / compared) if compared else None
