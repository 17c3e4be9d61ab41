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
    # The codebook service's own sentences (the API's import says the same), one each.
    assert any("colour" in p for p in problems) and any("group_size" in p for p in problems)
    assert any(p.startswith("Variable 'n' (entry 1") and '"snippet"' in p for p in problems)
    assert any("the name 'n' is already used by entry 1" in p for p in problems), problems
    assert any(p.startswith("Variable 'when' (entry 3") for p in problems), problems
    assert any(p.startswith("Entry 4 of variables has no name") for p in problems), problems
    assert any(p.startswith("Variable 'design'") and "allowed" in p for p in problems)
    assert len(problems) == 7, problems


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("variables: [\n", "is not valid YAML on line 2"),
        ("- a\n- b\n", "a codebook is a mapping with 'variables'"),
        ("name: x\n", "The codebook has no variables"),
        ("quarry_codebook: 2\nvariables: []\n", "this Quarry reads format 1 only"),
        ("project: {}\nvariables: []\n", "the unknown key 'project'"),
    ],
)
def test_a_file_of_the_wrong_shape_gets_a_sentence(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "codebook.yaml"
    path.write_text(text)
    with pytest.raises(CodebookError) as refused:
        load_codebook(path)
    assert any(problem in p for p in refused.value.problems), refused.value.problems


def test_a_spreadsheet_codebook_runs_too(tmp_path: Path) -> None:
    """The CLI reads what the API's codebook import reads: CSV (and XLSX) as well."""
    path = tmp_path / "trials.csv"
    path.write_text("name,type,description,allowed_values\nn,integer,N,\nd,category,D,RCT;Cohort\n")
    book = load_codebook(path)
    assert book.name == "trials"
    assert [(v.name, list(v.allowed_values or [])) for v in book.variables] == [
        ("n", []),
        ("d", ["RCT", "Cohort"]),
    ]
