"""Who may do what in a project: roles, permissions, and the one table joining them.

A project's creator (`projects.owner_id`) is always its owner; everyone else reaches a
project through a `project_members` row naming their role. Each route under
`/projects/{project_id}` declares the permission it needs (`projects/deps.py`); the check is
made there and nowhere else.

| permission | covers                                         | owner | editor | reviewer | viewer |
|------------|------------------------------------------------|:-----:|:------:|:--------:|:------:|
| `read`     | every GET: codebook, documents, runs, results, |   ✓   |   ✓    |    ✓     |   ✓    |
|            | cases, findings, exports, evaluation           |       |        |          |        |
| `review`   | reviews of values and of matches, resolving    |   ✓   |   ✓    |    ✓     |        |
|            | findings                                       |       |        |          |        |
| `edit`     | project settings, variables, codebook,         |   ✓   |   ✓    |          |        |
|            | documents, runs, reference lists, profiles     |       |        |          |        |
| `manage`   | members, webhooks (they send the project's     |   ✓   |        |          |        |
|            | data out), deleting the project                |       |        |          |        |

A user who is not a member gets 404 for everything in the project, as if it did not exist; a
member without the permission gets 403 saying which role it needs.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    EDITOR = "editor"
    REVIEWER = "reviewer"
    VIEWER = "viewer"


class Permission(StrEnum):
    READ = "read"
    REVIEW = "review"
    EDIT = "edit"
    MANAGE = "manage"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission),
    Role.EDITOR: frozenset({Permission.READ, Permission.REVIEW, Permission.EDIT}),
    Role.REVIEWER: frozenset({Permission.READ, Permission.REVIEW}),
    Role.VIEWER: frozenset({Permission.READ}),
}

#: The least role holding each permission: what a 403 tells the user to ask for.
LEAST_ROLE: dict[Permission, Role] = {
    Permission.READ: Role.VIEWER,
    Permission.REVIEW: Role.REVIEWER,
    Permission.EDIT: Role.EDITOR,
    Permission.MANAGE: Role.OWNER,
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def refusal(role: Role, permission: Permission) -> str:
    """The sentence of a 403: what the user is, and which role the action needs."""
    needed = LEAST_ROLE[permission]
    article = "an" if role is Role.OWNER or role is Role.EDITOR else "a"
    return (
        f"This needs the {needed.value} role (or higher) in this project; you are "
        f"{article} {role.value}. An owner of the project can change your role."
    )
