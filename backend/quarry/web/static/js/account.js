// The signed-in user's own account: change the password (with the current one); and, for
// someone holding a one-time link from an administrator, set a password and sign in.

import { get, put, session, setPasswordWithLink } from "./api.js";
import { add, errorBox, h, notify, setChildren, showError, uid, withBusy } from "./ui.js";

function crumbs(label) {
  setChildren(document.getElementById("crumbs"),
    h("ol", {}, h("li", {}, h("span", { "aria-current": "page" }, label))));
}

function passwordField(label, autocomplete) {
  const id = uid("pw");
  const input = h("input", { id, type: "password", autocomplete, required: true, minlength: 8 });
  return { input, field: h("div", { class: "field" }, h("label", { for: id }, label), input) };
}

/** The new password twice; `check()` is a sentence when they cannot be used, else null. */
function newPasswordFields() {
  const first = passwordField("New password (at least 8 characters)", "new-password");
  const again = passwordField("New password again", "new-password");
  return {
    fields: [first.field, again.field],
    first: first.input,
    value: () => first.input.value,
    check: () => (first.input.value !== again.input.value
      ? "The two new passwords are not the same." : null),
  };
}

export async function renderChangePassword(ctx) {
  document.title = "Change password · Quarry";
  crumbs("Change password");
  const current = passwordField("Current password", "current-password");
  const fresh = newPasswordFields();
  const errors = errorBox();
  const submit = h("button", { type: "submit", class: "primary" }, "Change password");
  const form = h("form", { class: "card narrow", "aria-labelledby": "password-title" },
    current.field, ...fresh.fields, errors, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(errors, null);
    const problem = fresh.check();
    if (problem) {
      showError(errors, new Error(problem));
      fresh.first.focus();
      return;
    }
    try {
      const token = await withBusy(submit, "Changing…", () => put("/users/me/password", {
        current_password: current.input.value, new_password: fresh.value(),
      }));
      session.replaceToken(token.access_token, token.expires_at);
    } catch (error) {
      showError(errors, error);
      return;
    }
    form.reset();
    notify("Password changed. You stay signed in here; every other session has been signed out.",
      "success");
    ctx.navigate("#/projects");
  });
  add(ctx.root,
    h("h1", { id: "password-title", tabindex: "-1" }, "Change password"),
    h("p", { class: "muted narrow" }, `Signed in as ${session.email || "you"}. `,
      "Changing your password signs you out everywhere else."),
    form);
  ctx.focusTarget = current.input;
}

export async function renderSetPassword(ctx) {
  document.title = "Set your password · Quarry";
  crumbs("Set your password");
  const token = ctx.query.get("token") || "";
  add(ctx.root, h("h1", { id: "set-password-title", tabindex: "-1" }, "Set your password"));
  if (!token) {
    add(ctx.root, h("div", { class: "notice", role: "alert" },
      "This page needs the link an administrator gave you (it ends with ?token=…)."));
    return;
  }
  const fresh = newPasswordFields();
  const errors = errorBox();
  const submit = h("button", { type: "submit", class: "primary" }, "Set password and sign in");
  const form = h("form", { class: "card narrow", "aria-labelledby": "set-password-title" },
    ...fresh.fields, errors, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(errors, null);
    const problem = fresh.check();
    if (problem) {
      showError(errors, new Error(problem));
      fresh.first.focus();
      return;
    }
    try {
      await withBusy(submit, "Setting…", async () => {
        await setPasswordWithLink(token, fresh.value());
        session.setUser(await get("/users/me"));
      });
    } catch (error) {
      showError(errors, error);
      return;
    }
    notify("Your password is set; you are signed in.", "success");
    // The link is used up: do not leave it in the address bar or the history.
    window.history.replaceState(null, "", "#/projects");
    ctx.navigate("#/projects");
  });
  add(ctx.root,
    h("p", { class: "muted narrow" },
      "Choose the password you will sign in with. The link works once; then it stops working."),
    form);
  ctx.focusTarget = fresh.first;
}
