"""Every route under /projects/{project_id} resolves its project here, and says what it needs.

A route declares one of `ProjectRead`, `ProjectReview`, `ProjectEdit` or `ProjectManage` (the
permissions of `quarry.projects.roles`): the project comes back only if the signed-in user may
do that. Not a member: 404, as if the project did not exist; a member whose role lacks the
permission: 403 naming the role it needs. This is the only permission check;
tests/test_permissions.py fails on a project route that declares none.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.models import Project, User
from quarry.projects.roles import Permission, Role
from quarry.projects.service import check_permission, get_project_access


@dataclass(frozen=True, slots=True)
class ProjectAccess:
    """The project a request is about, who asks, and their role in it."""

    project: Project
    user: User
    role: Role


async def _project_access(
    project_id: uuid.UUID, request: Request, session: SessionDep, user: CurrentUser
) -> ProjectAccess:
    project, role = await get_project_access(session, project_id, user)
    # What the audit log files this request's events under (quarry.security.audit).
    request.state.project_id = project.id
    return ProjectAccess(project, user, role)


AccessDep = Annotated[ProjectAccess, Depends(_project_access)]
"""The caller's access to the project (FastAPI resolves it once per request)."""


def _requiring(permission: Permission) -> Callable[[ProjectAccess], Awaitable[Project]]:
    async def project_for(access: AccessDep) -> Project:
        check_permission(access.role, permission)
        return access.project

    project_for.__name__ = f"project_for_{permission.value}"
    project_for.permission = permission  # type: ignore[attr-defined]
    return project_for


ProjectRead = Annotated[Project, Depends(_requiring(Permission.READ))]
ProjectReview = Annotated[Project, Depends(_requiring(Permission.REVIEW))]
ProjectEdit = Annotated[Project, Depends(_requiring(Permission.EDIT))]
ProjectManage = Annotated[Project, Depends(_requiring(Permission.MANAGE))]


def route_permissions(app: FastAPI) -> dict[tuple[str, str], Permission | None]:
    """Every operation of the app, (method, path), with the project permission it declares
    (None: it declares none — right for routes outside a project, a bug for one inside)."""
    found: dict[tuple[str, str], Permission | None] = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or context.path_format is None:
            continue
        permissions = set()
        stack = list(route.dependant.dependencies)
        while stack:
            dependant = stack.pop()
            permission = getattr(dependant.call, "permission", None)
            if isinstance(permission, Permission):
                permissions.add(permission)
            stack.extend(dependant.dependencies)
        declared = max(permissions, key=list(Permission).index) if permissions else None
        for method in context.methods or ():
            found[(method.lower(), context.path_format)] = declared
    return found
