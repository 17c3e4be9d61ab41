"""`ProjectDep`: every route under /projects/{project_id} resolves its project here."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.models import Project
from quarry.projects.service import get_project_for_user


async def _owned_project(project_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> Project:
    return await get_project_for_user(session, project_id, user)


ProjectDep = Annotated[Project, Depends(_owned_project)]
