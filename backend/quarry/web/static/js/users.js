// Users (administrators only): add a user — with a one-time link to set their password, or a
// first password — deactivate and reactivate, make and unmake administrators, reset a
// password to a link; and the recent user-administration events.

import { get, patch, post, session } from "./api.js";
import {
  add, badge, confirmDialog, errorBox, formatDate, h, notify, pager, setChildren, showError,
  uid, withBusy,
} from "./ui.js";

const PAGE_SIZE = 50;
const EVENT_WORDS = {
  "user.created": "created",
  "user.deactivated": "deactivated",
  "user.reactivated": "reactivated",
  "user.admin_granted": "made an administrator",
  "user.admin_revoked": "made a regular user",
  "user.password_reset": "password reset",
  "user.password_changed": "changed their password",
  "user.password_set": "set their password with a link",
};

function statusOf(user) {
  if (!user.is_active) return badge("deactivated", "muted");
  if (user.password_set) return badge("active", "ok");
  const expires = user.password_link_expires_at;
  if (expires && Date.parse(expires) > Date.now()) {
    return h("span", {}, badge("waiting for a password", "busy"), " ",
      h("span", { class: "muted small" }, `link until ${formatDate(expires)}`));
  }
  return badge("link expired: reset the password", "bad");
}

export async function renderUsers(ctx) {
  document.title = "Users · Quarry";
  setChildren(document.getElementById("crumbs"),
    h("ol", {}, h("li", {}, h("span", { "aria-current": "page" }, "Users"))));
  const errors = errorBox();
  const linkBox = h("div", { class: "notice", role: "status", hidden: true });
  const list = h("div", { class: "user-list" });
  const activity = h("div", { class: "user-activity" });

  // -- adding a user ----------------------------------------------------------------------------
  const emailId = uid("user-email");
  const email = h("input", { id: emailId, type: "email", required: true, autocomplete: "off" });
  const admin = h("input", { type: "checkbox", id: uid("user-admin") });
  const byLink = h("input", { type: "radio", name: "how", value: "link", checked: true });
  byLink.defaultChecked = true; // what the form goes back to after each user added
  const byPassword = h("input", { type: "radio", name: "how", value: "password" });
  const passwordId = uid("user-password");
  const password = h("input", {
    id: passwordId, type: "password", autocomplete: "new-password", minlength: 8,
  });
  const passwordField = h("div", { class: "field", hidden: true },
    h("label", { for: passwordId }, "First password (at least 8 characters)"), password);
  for (const radio of [byLink, byPassword]) {
    radio.addEventListener("change", () => {
      passwordField.hidden = !byPassword.checked;
      password.required = byPassword.checked;
    });
  }
  const submit = h("button", { type: "submit", class: "primary" }, "Add user");
  const form = h("form", { class: "card user-form", "aria-labelledby": "add-user-title" },
    h("h2", { id: "add-user-title" }, "Add a user"),
    h("div", { class: "field" }, h("label", { for: emailId }, "Email"), email),
    h("fieldset", {}, h("legend", {}, "How they get in"),
      h("label", { class: "check" }, byLink, " A one-time link to set their own password ",
        h("span", { class: "muted" }, "(recommended: no one else ever knows it; valid 7 days)")),
      h("label", { class: "check" }, byPassword, " A first password that you choose")),
    passwordField,
    h("label", { class: "check", for: admin.id }, admin, " Administrator (manages users)"),
    h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(errors, null);
    const body = { email: email.value, is_admin: admin.checked };
    if (byPassword.checked) body.password = password.value;
    try {
      const created = await withBusy(submit, "Adding…", () => post("/users", body));
      form.reset();
      passwordField.hidden = true;
      notify(`User ${created.email} added.`, "success");
      if (created.password_link) showLink(created, "invitation");
      await Promise.all([load(), loadActivity()]);
    } catch (error) {
      showError(errors, error);
      email.focus();
    }
  });

  function showLink(user, kind) {
    const url = `${window.location.origin}${user.password_link.path}`;
    const field = h("input", {
      type: "text", readonly: true, value: url, class: "secret", "aria-label": `Link for ${user.email}`,
      onfocus: (event) => event.target.select(),
    });
    linkBox.hidden = false;
    setChildren(linkBox,
      h("p", {}, kind === "reset" ? "The password is reset. " : "", "Give ",
        h("strong", {}, user.email),
        ` this link to set ${kind === "reset" ? "a new" : "their"} password. Copy it now: it is `,
        `not shown again, and it works once, until ${formatDate(user.password_link.expires_at)}.`),
      h("p", {}, field),
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => copy(field) }, "Copy link"),
        h("button", { type: "button", onclick: () => { linkBox.hidden = true; linkBox.replaceChildren(); } }, "Done")));
    field.focus();
  }

  async function copy(field) {
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      notify("Link copied.", "success");
    } catch {
      notify("Select the link and copy it (Ctrl+C).", "info");
    }
  }

  // -- the list ---------------------------------------------------------------------------------
  let offset = 0;
  async function load(focusAfter) {
    const page = await get("/users", { limit: PAGE_SIZE, offset }, { signal: ctx.signal });
    setChildren(list,
      h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, "Users"),
        h("thead", {}, h("tr", {}, ["Email", "Status", "Administrator", "Created", ""].map((t) =>
          h("th", { scope: "col" }, t ? t : h("span", { class: "visually-hidden" }, "Actions"))))),
        h("tbody", {}, page.items.map(row))),
      pager(page, (next) => { offset = next; load(); }, "users"));
    if (focusAfter) focusAfter();
  }

  function row(user) {
    const self = user.email === session.email;
    const act = async (button, change, done) => {
      showError(errors, null);
      try {
        await withBusy(button, null, () => patch(`/users/${user.id}`, change));
        notify(done, "success");
        await Promise.all([load(() => focusRow(user.id, button.dataset.action)), loadActivity()]);
      } catch (error) {
        showError(errors, error);
      }
    };
    const active = h("button", {
      type: "button", "data-action": "active", class: user.is_active ? "danger-quiet" : null,
      "aria-label": `${user.is_active ? "Deactivate" : "Reactivate"} ${user.email}`,
    }, user.is_active ? "Deactivate" : "Reactivate");
    active.addEventListener("click", async () => {
      if (user.is_active) {
        const ok = await confirmDialog({
          title: `Deactivate ${user.email}?`,
          message: "They are signed out at once and cannot sign in until reactivated. Their "
            + "projects and memberships stay as they are.",
          confirmLabel: "Deactivate",
          danger: true,
        });
        if (!ok) return;
      }
      await act(active, { is_active: !user.is_active },
        `${user.email} ${user.is_active ? "deactivated" : "reactivated"}.`);
    });
    const adminButton = h("button", {
      type: "button", "data-action": "admin",
      "aria-label": `${user.is_admin ? "Remove administrator rights of" : "Make administrator:"} ${user.email}`,
    }, user.is_admin ? "Remove administrator" : "Make administrator");
    adminButton.addEventListener("click", () => act(adminButton, { is_admin: !user.is_admin },
      `${user.email} is ${user.is_admin ? "no longer" : "now"} an administrator.`));
    const reset = self ? h("a", { href: "#/account/password", class: "button" }, "Change password")
      : h("button", { type: "button", "data-action": "reset", "aria-label": `Reset the password of ${user.email}` },
        "Reset password");
    if (!self) {
      reset.addEventListener("click", async () => {
        const ok = await confirmDialog({
          title: `Reset the password of ${user.email}?`,
          message: "Their password and every session stop working at once. You get a one-time "
            + "link (valid 24 hours) to give them, with which they set a new one.",
          confirmLabel: "Reset password",
          danger: true,
        });
        if (!ok) return;
        showError(errors, null);
        try {
          const updated = await post(`/users/${user.id}/password`, {});
          showLink(updated, "reset");
          await Promise.all([load(), loadActivity()]);
        } catch (error) {
          showError(errors, error);
        }
      });
    }
    return h("tr", { "data-user": user.id },
      h("th", { scope: "row" }, user.email, self ? h("span", { class: "muted" }, " (you)") : null),
      h("td", {}, statusOf(user)),
      h("td", {}, user.is_admin ? "Yes" : "No"),
      h("td", { class: "nowrap" }, formatDate(user.created_at)),
      h("td", {}, h("div", { class: "row-actions" }, active, adminButton, reset)));
  }

  function focusRow(id, action) {
    const button = list.querySelector(`tr[data-user="${CSS.escape(id)}"] [data-action="${action}"]`);
    if (button) button.focus();
  }

  // -- recent changes ---------------------------------------------------------------------------
  async function loadActivity() {
    const page = await get("/users/audit-events", { limit: 20 }, { signal: ctx.signal });
    setChildren(activity, page.items.length
      ? h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, "Recent changes to users, newest first"),
        h("thead", {}, h("tr", {}, ["When", "User", "What", "By"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, page.items.map((e) => h("tr", {},
          h("td", { class: "nowrap" }, formatDate(e.created_at)),
          h("td", {}, (e.detail && e.detail.email) || ""),
          h("td", {}, EVENT_WORDS[e.action] || e.action),
          h("td", {}, e.user_email || "")))))
      : h("p", { class: "muted" }, "No changes to users yet."));
  }

  add(ctx.root,
    h("h1", { tabindex: "-1" }, "Users"),
    h("p", { class: "muted" },
      "Administrators manage accounts, not data: who is in a project, and in which role, is up ",
      "to its owners (each project's Members tab)."),
    errors,
    linkBox,
    list,
    form,
    h("h2", {}, "Recent changes"),
    activity);
  await Promise.all([load(), loadActivity()]);
}
