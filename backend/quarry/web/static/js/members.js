// Members: who is in the project and in which role (every member sees this); owners add
// existing users by email, change roles and remove members, and read what happened in the
// project (its audit log).

import { can } from "./access.js";
import { del, get, patch, post } from "./api.js";
import {
  add, confirmDialog, errorBox, formatDate, h, notify, setChildren, showError, uid, withBusy,
} from "./ui.js";

const ROLES = [
  ["owner", "Owner — everything, members and deleting the project included"],
  ["editor", "Editor — codebook, documents, runs, exports"],
  ["reviewer", "Reviewer — reviews values, exports"],
  ["viewer", "Viewer — reads and exports"],
];
const ACTION_WORDS = {
  "member.added": "added a member",
  "member.role_changed": "changed a role",
  "member.removed": "removed a member",
  "project.exported": "exported",
  "project.deleted": "deleted the project",
  "variable.deleted": "deleted a variable",
  "document.deleted": "deleted a document",
  "profile.deleted": "deleted a model profile",
  "webhook.deleted": "deleted a webhook",
  "reference_list.deleted": "deleted a reference list",
};

function roleSelect(id, value, label, { short = false } = {}) {
  return h("select", { id, "aria-label": label },
    ROLES.map(([role, words]) => h("option", { value: role, selected: role === value },
      short ? words.split(" — ")[0] : words)));
}

function describe(event) {
  const d = event.detail || {};
  if (event.action === "member.role_changed") return `${d.email}: ${d.previous_role} → ${d.role}`;
  if (event.action.startsWith("member.")) return `${d.email} (${d.role})`;
  return d.name || d.filename || [d.format, d.layout].filter(Boolean).join(", ") || "";
}

export async function renderMembers(ctx) {
  const { project } = ctx;
  const base = `/projects/${project.id}/members`;
  const manages = can(project, "manage");
  const errors = errorBox();
  const list = h("div", { class: "member-list" });
  const activity = h("div", { class: "project-activity" });

  async function load(focusAfter) {
    const page = await get(base, {}, { signal: ctx.signal });
    setChildren(list, h("table", { class: "data" },
      h("caption", { class: "visually-hidden" }, "Members of the project"),
      h("thead", {}, h("tr", {}, ["Email", "Role", "Added", manages ? "" : null].filter((t) => t !== null)
        .map((t) => h("th", { scope: "col" }, t || h("span", { class: "visually-hidden" }, "Actions"))))),
      h("tbody", {}, page.items.map(row))));
    if (focusAfter) focusAfter();
  }

  function row(member) {
    const cells = [
      h("th", { scope: "row" }, member.email,
        member.is_active ? null : h("span", { class: "muted" }, " (deactivated)")),
    ];
    if (!manages || member.is_creator) {
      cells.push(h("td", {}, member.role, member.is_creator
        ? h("span", { class: "muted" }, " (created the project)") : null));
    } else {
      const select = roleSelect(uid("member-role"), member.role, `Role of ${member.email}`, { short: true });
      select.addEventListener("change", async () => {
        showError(errors, null);
        try {
          await patch(`${base}/${member.user_id}`, { role: select.value });
          notify(`${member.email} is now ${select.value === "owner" || select.value === "editor" ? "an" : "a"} ${select.value}.`, "success");
          await Promise.all([load(), loadActivity()]);
        } catch (error) {
          select.value = member.role;
          showError(errors, error);
        }
      });
      cells.push(h("td", {}, select));
    }
    cells.push(h("td", { class: "nowrap" }, formatDate(member.added_at)));
    if (manages) {
      const remove = member.is_creator ? null : h("button", {
        type: "button", class: "danger-quiet", "aria-label": `Remove ${member.email}`,
      }, "Remove");
      if (remove) {
        remove.addEventListener("click", async () => {
          const ok = await confirmDialog({
            title: `Remove ${member.email} from the project?`,
            message: "They no longer see anything in it. Their reviews stay.",
            confirmLabel: "Remove",
            danger: true,
          });
          if (!ok) return;
          showError(errors, null);
          try {
            await del(`${base}/${member.user_id}`);
            notify(`${member.email} removed.`, "success");
            await Promise.all([load(), loadActivity()]);
          } catch (error) {
            showError(errors, error);
          }
        });
      }
      cells.push(h("td", {}, remove));
    }
    return h("tr", { "data-member": member.user_id }, cells);
  }

  // -- adding a member (owners) -----------------------------------------------------------------
  let form = null;
  if (manages) {
    const emailId = uid("member-email");
    const roleId = uid("member-role");
    const email = h("input", { id: emailId, type: "email", required: true, autocomplete: "off" });
    const role = roleSelect(roleId, "reviewer", null);
    const submit = h("button", { type: "submit", class: "primary" }, "Add member");
    form = h("form", { class: "card member-form", "aria-labelledby": "add-member-title" },
      h("h3", { id: "add-member-title" }, "Add a member"),
      h("p", { class: "muted small" }, "Someone who already has an account (an administrator ",
        "creates accounts on the Users page)."),
      h("div", { class: "field" }, h("label", { for: emailId }, "Email"), email),
      h("div", { class: "field" }, h("label", { for: roleId }, "Role"), role),
      h("div", { class: "actions" }, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      showError(errors, null);
      try {
        const added = await withBusy(submit, "Adding…", () =>
          post(base, { email: email.value, role: role.value }));
        notify(`${added.email} added as ${added.role}.`, "success");
        email.value = "";
        await Promise.all([load(), loadActivity()]);
      } catch (error) {
        showError(errors, error);
        email.focus();
      }
    });
  }

  // -- what happened (owners) -------------------------------------------------------------------
  async function loadActivity() {
    if (!manages) return;
    const page = await get(`/projects/${project.id}/audit-events`, { limit: 20 }, { signal: ctx.signal });
    setChildren(activity, page.items.length
      ? h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, "Recent activity, newest first"),
        h("thead", {}, h("tr", {}, ["When", "Who", "What", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, page.items.map((e) => h("tr", {},
          h("td", { class: "nowrap" }, formatDate(e.created_at)),
          h("td", {}, e.user_email || ""),
          h("td", {}, ACTION_WORDS[e.action] || e.action),
          h("td", {}, describe(e))))))
      : h("p", { class: "muted" }, "Nothing recorded yet."));
  }

  add(ctx.root,
    h("h2", { tabindex: "-1" }, "Members"),
    h("p", { class: "muted" }, manages
      ? "Who may see this project, and what each may do. The creator is always an owner."
      : "Who may see this project, and what each may do. An owner manages the members."),
    h("ul", { class: "muted small role-list" }, ROLES.map(([, words]) => h("li", {}, words))),
    errors,
    list,
    form,
    manages ? h("h3", {}, "Recent activity") : null,
    manages ? activity : null);
  await Promise.all([load(), loadActivity()]);
}
