// What the signed-in user may do in the project on screen. The server says it with every
// project (`role`, `permissions`); the server also refuses anything else (403 with a
// sentence, which the views show), so hiding a control is a courtesy, not the check.
//
// A control marked data-needs="edit" (or "review", "manage") is hidden by app.css while
// <body data-lacks="…"> names that permission: views mark their controls and need not
// know the role.

const OPTIONAL = ["review", "edit", "manage"];

/** True when the user's role in `project` allows `permission` (read, review, edit, manage). */
export function can(project, permission) {
  return Boolean(project && (project.permissions || []).includes(permission));
}

/** Hide, from here on, the controls of what the user may not do in `project`. */
export function applyAccess(project) {
  document.body.dataset.lacks = OPTIONAL.filter((p) => !can(project, p)).join(" ");
  document.body.dataset.role = project.role || "";
}

/** Outside a project, nothing is hidden by role. */
export function clearAccess() {
  delete document.body.dataset.lacks;
  delete document.body.dataset.role;
}

