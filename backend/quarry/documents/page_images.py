"""Page images for review: rendered once in an isolated parser child, then cached on disk.

A page image is a function of the document's bytes, the page, the width and the format, so
it is cached under the blob's content hash (`LocalStorage.page_image_dir`) and removed with
the blob. Rendering runs MuPDF or Pillow over the uploaded file, so it happens in a child
process under the parser's limits (`IsolatedParser.render`), never in the API process.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from quarry.documents.parsing import DocumentKind
from quarry.documents.parsing.isolation import IsolatedParser
from quarry.documents.storage import LocalStorage

if TYPE_CHECKING:
    from quarry.settings import Settings

#: Page images rendered at once by one process (each in a child of its own pool).
RENDER_CONCURRENCY = 1


class PageImages:
    """This process's page-image renderer and cache; `aclose` it when the process stops."""

    def __init__(self, storage: LocalStorage, parser: IsolatedParser) -> None:
        self._storage = storage
        self._parser = parser
        self._locks: dict[Path, asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, settings: Settings, storage: LocalStorage) -> PageImages:
        return cls(storage, IsolatedParser.from_settings(settings, RENDER_CONCURRENCY))

    async def image(
        self, storage_key: str, kind: DocumentKind, page: int, width: int, fmt: str
    ) -> Path:
        """The cached image file of the page, rendered first if need be. Raises
        `DocumentParseError` when the page cannot be rendered."""
        target = self._storage.page_image_dir(storage_key) / f"{page}-{width}.{fmt}"
        if await asyncio.to_thread(target.is_file):
            return target
        # One render per image at a time: a reviewer's panel asks for the same page at once.
        lock = self._locks.setdefault(target, asyncio.Lock())
        try:
            async with lock:
                if await asyncio.to_thread(target.is_file):
                    return target
                source = self._storage.path_for(storage_key)
                data = await self._parser.render(source, kind, page, width, fmt)
                await asyncio.to_thread(_write_atomically, target, data)
                return target
        finally:
            if not lock.locked():
                self._locks.pop(target, None)

    async def aclose(self) -> None:
        await self._parser.aclose()


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".render-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
