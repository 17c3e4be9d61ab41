"""What `quarry extract` was asked to read: documents from files, folders and globs, and the
output file's format from its extension."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from quarry.exports.schemas import ExportFormat

#: The files a folder or a glob contributes: the formats Quarry reads. A file named
#: explicitly is always sent (and refused with a sentence if Quarry cannot read it).
DOCUMENT_SUFFIXES = frozenset({".pdf", ".docx", ".docm", ".txt", ".text", ".md", ".markdown"})
_FORMATS = {".xlsx": ExportFormat.XLSX, ".csv": ExportFormat.CSV, ".json": ExportFormat.JSON}


class InputError(ValueError):
    """An argument that names nothing usable; the message is a sentence for the user."""


def output_format(path: Path) -> ExportFormat:
    """The export format the output file's extension asks for."""
    found = _FORMATS.get(path.suffix.lower())
    if found is None:
        raise InputError(
            f"The output {path} must end in .xlsx, .csv or .json (the format is chosen by it)."
        )
    return found


def _in_folder(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in DOCUMENT_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def find_documents(arguments: Sequence[str]) -> list[Path]:
    """The documents the arguments name, in the order given (a folder's and a glob's in
    name order), each once. Raises `InputError` for an argument that names nothing."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            matches = _in_folder(path)
            if not matches:
                raise InputError(
                    f"The folder {argument} holds no PDF, DOCX, TXT or Markdown documents."
                )
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(argument):
            matches = sorted(
                Path(p)
                for p in glob.glob(str(path), recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in DOCUMENT_SUFFIXES
            )
            if not matches:
                raise InputError(f"The pattern {argument} matches no documents.")
        else:
            raise InputError(f"There is no file or folder {argument}.")
        found.extend(matches)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())
