"""Reading a codebook file for `quarry extract` and the Python client: the codebook service's
own reader (variables/codebook_files.py; README "Codebook files"), so a file the API imports
is one the CLI runs, with the same sentences for what is wrong.

YAML, JSON, CSV or XLSX by the file's extension (sniffed when it has none). Every problem is
reported, each with the variable or row it is in, before anything is changed.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """A codebook file as the codebook service read it (what `PUT …/codebook` applies), named
    (a file without a name is named after the file)."""

    name: str
    checked: FileCodebook

    @property
    def project(self) -> ProjectUpdate:
        """The project's settings the file gives, with its name and description."""
        checked = self.checked
        return ProjectUpdate.model_validate(
            {
                **checked.settings,
                **({"name": checked.name} if checked.name else {}),
                **({"description": checked.description} if checked.description else {}),
            }
        )

    @property
    def variables(self) -> list[VariableCreate]:
        return list(self.checked.variables)


def load_codebook(path: Path) -> Codebook:
    """The codebook in `path`, checked; raises `CodebookError` listing every problem. The
    variables keep the file's order."""
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
    return Codebook(name=checked.name or path.stem, checked=checked)
