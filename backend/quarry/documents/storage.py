"""Content-addressed local file storage under QUARRY_STORAGE_DIR."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from quarry.errors import BadRequest, PayloadTooLarge

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class StagedFile:
    """An upload copied to a temporary file, with its digest and size."""

    path: Path
    sha256: str
    size: int


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

    def stage(self, source: BinaryIO, filename: str, max_bytes: int) -> StagedFile:
        """Copy an upload to a temp file, hashing as it goes; refuse it past `max_bytes`.

        Synchronous (file I/O): call it in a thread.
        """
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self._staging, prefix="upload-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK_SIZE):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"{filename} is larger than the {max_bytes // (1024 * 1024)} MB "
                            "upload limit (QUARRY_MAX_UPLOAD_MB)."
                        )
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise BadRequest(f"{filename} is empty.")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return StagedFile(path=path, sha256=digest.hexdigest(), size=size)

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

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)
