"""Reading codebook files: the format, JSON too, and every problem listed with its variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quarry.extract.codebook import CodebookError, load_codebook
from quarry.variables.types import VariableType


def test_a_codebook_file_gives_the_project_and_its_variables_in_order(tmp_path: Path) -> None:
    path = tmp_path / "trials.yaml"
    path.write_text(
        "settings:\n  llm_model: gpt-4o\n  group_size: 3\n"
        "variables:\n"
        "  - name: dose\n    type: number\n    unit: mg\n    description: Daily dose\n"
        "    examples:\n      - {value: '12,5 mg', snippet: 12.5 mg a day}\n"
        "  - name: design\n    type: category\n    description: Design\n"
        "    allowed_values: [RCT, Cohort]\n"
    )
    book = load_codebook(path)
    assert book.name == "trials"  # no project name: the file's
    assert (book.project.llm_model, book.project.group_size) == ("gpt-4o", 3)
    assert [(v.name, v.type) for v in book.variables] == [
        ("dose", VariableType.NUMBER),
        ("design", VariableType.CATEGORY),
    ]
    assert book.variables[0].examples[0].snippet == "12.5 mg a day"


def test_json_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "codebook.json"
    path.write_text(
        json.dumps(
            {
                "quarry_codebook": 1,
                "name": "From JSON",
                "variables": [{"name": "n", "type": "integer", "description": "N"}],
            }
        )
    )
    book = load_codebook(path)
    assert book.name == "From JSON" and [v.name for v in book.variables] == ["n"]


def test_every_problem_is_listed_with_its_variable(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "settings:\n  group_size: 50\n  colour: blue\n"
        "variables:\n"
        "  - name: n\n    type: integer\n    description: N\n    examples: [240]\n"
        "  - name: n\n    type: integer\n    description: again\n"
        "  - name: when\n    type: date\n    description: W\n"
        "    examples: [{value: someday}]\n"
        "  - type: text\n    description: no name\n"
        "  - name: design\n    type: category\n    description: D\n"
    )
    with pytest.raises(CodebookError) as refused:
        load_codebook(path)
    problems = refused.value.problems
    assert any(p.startswith("settings: colour is not a project setting") for p in problems)
    assert any(p.startswith("settings: group_size") for p in problems)
    assert "variable 1 (n): examples are a list of {value, snippet} entries" in problems[2]
    assert "variable 2 (n): the name n is used twice." in problems
    assert any(p.startswith("variable 3 (when): example 1 does not fit") for p in problems)
    assert "variable 4: name is required." in problems
    assert any(p.startswith("variable 5 (design): ") and "allowed" in p for p in problems)
    assert len(problems) == 7, problems


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("variables: [\n", "is not valid YAML or JSON at line 2"),
        ("- a\n- b\n", "expected a mapping with `variables`"),
        ("name: x\n", "variables: expected a non-empty list of variables."),
        ("quarry_codebook: 2\nvariables: []\n", "this Quarry reads version 1, not 2"),
        ("project: {}\nvariables: []\n", "unknown top-level keys: project"),
    ],
)
def test_a_file_of_the_wrong_shape_gets_a_sentence(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "codebook.yaml"
    path.write_text(text)
    with pytest.raises(CodebookError) as refused:
        load_codebook(path)
    assert any(problem in p for p in refused.value.problems), refused.value.problems
