"""Reading a codebook file for `quarry extract` and the Python client: the codebook service's
own reader (variables/codebook_files.py; README "Codebook files"), so a file the API imports
is one the CLI runs, with the same sentences for what is wrong.

YAML, JSON, CSV or XLSX by the file's extension (sniffed when it has none). Every problem is
reported, each with the variable or row it is in, before anything is changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from quarry.errors import PayloadTooLarge
from quarry.projects.schemas import ProjectUpdate
from quarry.variables.codebook_files import format_from_filename, read_codebook, sniff_format
from quarry.variables.codebook_format import Codebook as FileCodebook
from quarry.variables.codebook_format import InvalidCodebook
from quarry.variables.schemas import VariableCreate


class CodebookError(ValueError):
    """A codebook file that cannot be used, with every problem found (one sentence each)."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + " ".join(problems))


@dataclass(frozen=True)
class Codebook:
    """A codebook file's project settings and variables, validated as the API would."""

    name: str
    project: ProjectUpdate
    variables: list[VariableCreate] = field(default_factory=list)
    #: The file as the codebook service read it (what `PUT …/codebook` applies).
    checked: FileCodebook | None = None


def load_codebook(path: Path) -> Codebook:
    """The codebook in `path`, checked; raises `CodebookError` listing every problem. The
    variables keep the file's order; a file without a name is named after the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CodebookError(path, [f"It cannot be read ({exc.strerror or exc})."]) from exc
    file_format = format_from_filename(path.name) or sniff_format(data)
    try:
        checked = read_codebook(data, file_format)
    except InvalidCodebook as exc:
        raise CodebookError(path, [problem.message for problem in exc.problems]) from exc
    except PayloadTooLarge as exc:
        raise CodebookError(path, [exc.detail]) from exc
    project = ProjectUpdate.model_validate(
        {
            **checked.settings,
            **({"name": checked.name} if checked.name else {}),
            **({"description": checked.description} if checked.description else {}),
        }
    )
    return Codebook(
        name=checked.name or path.stem,
        project=project,
        variables=list(checked.variables),
        checked=checked,
    )
