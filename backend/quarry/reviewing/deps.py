"""The request's reader of a project's verdicts, as a dependency (verdicts.py: blindness)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from quarry.projects.deps import AccessDep
from quarry.reviewing.service import lens_for
from quarry.reviewing.verdicts import Lens


async def _reader_lens(access: AccessDep) -> Lens:
    return lens_for(access.project, access.user.id, access.role)


ReaderLens = Annotated[Lens, Depends(_reader_lens)]
"""Who reads the cells in this request: what dual review lets them see."""
