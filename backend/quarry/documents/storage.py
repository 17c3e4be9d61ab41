"""Content-addressed local file storage under QUARRY_STORAGE_DIR."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class StagedFile:
    """An upload written to a temporary file, with the client's filename, digest and size."""

    path: Path
    filename: str
    sha256: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class StagingFile:
    """An upload being written to the staging directory, hashed as its bytes arrive.

    Synchronous (file I/O): call `write`, `finish` and `discard` in a thread.
    """

    def __init__(self, path: Path, file: BinaryIO, filename: str) -> None:
        self.path = path
        self.filename = filename
        self.size = 0
        self._file = file
        self._digest = hashlib.sha256()

    def write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._digest.update(chunk)
            self._file.write(chunk)
            self.size += len(chunk)

    def finish(self) -> StagedFile:
        self._file.close()
        return StagedFile(self.path, self.filename, self._digest.hexdigest(), self.size)

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class LocalStorage:
    """Blobs stored by sha256, so the same bytes are kept once whoever uploads them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / "tmp"
        self._staging.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key_for(sha256: str) -> str:
        return f"sha256/{sha256[:2]}/{sha256}"

    def path_for(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError("storage key escapes the storage directory")
        return path

    def open_staging(self, filename: str) -> StagingFile:
        """A new temporary file in the staging directory for an upload named `filename`.

        Synchronous (file I/O): call it in a thread.
        """
        fd, name = tempfile.mkstemp(dir=self._staging, prefix="upload-")
        return StagingFile(Path(name), os.fdopen(fd, "wb"), filename)

    def commit(self, staged: StagedFile) -> str:
        """Move a staged file to its content address; returns the storage key."""
        key = self.key_for(staged.sha256)
        target = self.path_for(key)
        if target.exists():
            staged.path.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged.path, target)
        return key

    def page_image_dir(self, key: str) -> Path:
        """Where the page images rendered from the blob at `key` are cached (removed with it)."""
        return self.root / "page-images" / key.rsplit("/", 1)[-1]

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)
        shutil.rmtree(self.page_image_dir(key), ignore_errors=True)

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)
