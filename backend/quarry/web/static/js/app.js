// Entry point: the hash router, the top bar, sign-in/sign-out and the project shell.
// Routes:
//   #/signin, #/set-password?token=… (a one-time link from an administrator)
//   #/projects
//   #/projects/{id}/codebook | documents | documents/{docId} | runs | runs/{runId} | results | cases
//     | review | export | members | webhooks
//   #/projects/{id}/results?documents=a,b&case=K&document=d&variable=v (a case's documents, a cell open)
//   #/users (administrators), #/account/password

import { applyAccess, clearAccess } from "./access.js";
import { renderChangePassword, renderSetPassword } from "./account.js";
import { ApiError, get, onUnauthorized, session, signIn } from "./api.js";
import { renderCases } from "./cases.js";
import { renderCodebook } from "./codebook.js";
import { renderDocuments, renderDocumentText } from "./documents.js";
import { renderExport } from "./exports.js";
import { renderMembers } from "./members.js";
import { renderProjects } from "./projects.js";
import { renderResults } from "./results.js";
import { renderReview } from "./review.js";
import { renderRun, renderRuns } from "./runs.js";
import { add, clearToasts, errorBox, h, setChildren, showError, withBusy } from "./ui.js";
import { renderUsers } from "./users.js";
import { renderWebhooks } from "./webhooks.js";

const RETURN_KEY = "quarry.returnTo";
const TABS = [
  ["codebook", "Codebook"],
  ["documents", "Documents"],
  ["runs", "Runs"],
  ["results", "Results"],
  ["cases", "Cases"],
  ["review", "Review"],
  ["export", "Export"],
  ["members", "Members"],
  ["webhooks", "Webhooks"],
];
// Tabs only some roles can use (the rest are for every member).
const TAB_NEEDS = { webhooks: "manage" };

let current = null; // the view on screen: {controller, cleanups}
let flash = null; // a message for the sign-in page (e.g. why the session ended)

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, queryString = ""] = raw.split("?");
  return { path: path.replace(/\/+$/, "") || "/", query: new URLSearchParams(queryString) };
}

export function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

// -- session ------------------------------------------------------------------------------------

function sendToSignIn(message) {
  const { path } = parseHash();
  if (path !== "/signin") sessionStorage.setItem(RETURN_KEY, window.location.hash);
  session.clear();
  flash = message || null;
  navigate("#/signin");
}

onUnauthorized((error) => {
  if (parseHash().path === "/signin" && !session.read()) return;
  sendToSignIn(error.message);
});

function renderAccount() {
  const account = document.getElementById("account");
  if (!session.read()) {
    setChildren(account);
    return;
  }
  setChildren(account,
    h("span", { class: "account-email", title: "Signed in" }, session.email || "Signed in"),
    session.isAdmin ? h("a", { href: "#/users", class: "account-link" }, "Users") : null,
    h("a", { href: "#/account/password", class: "account-link" }, "Change password"),
    h("button", {
      type: "button",
      class: "link-button",
      onclick: () => {
        session.clear();
        sessionStorage.removeItem(RETURN_KEY);
        flash = null;
        navigate("#/signin");
      },
    }, "Sign out"),
  );
}

function setCrumbs(...items) {
  const nav = document.getElementById("crumbs");
  const list = h("ol");
  items.forEach(([label, href], index) => {
    const last = index === items.length - 1;
    add(list, h("li", {}, last || !href
      ? h("span", { "aria-current": last ? "page" : null }, label)
      : h("a", { href }, label)));
  });
  setChildren(nav, list);
}

async function renderSignIn(ctx) {
  document.title = "Sign in · Quarry";
  setCrumbs();
  const message = flash;
  flash = null;
  const email = h("input", {
    id: "signin-email", type: "email", name: "username", autocomplete: "username", required: true,
  });
  const password = h("input", {
    id: "signin-password", type: "password", name: "password",
    autocomplete: "current-password", required: true,
  });
  const errors = errorBox();
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "signin-title" },
    h("div", { class: "field" }, h("label", { for: "signin-email" }, "Email"), email),
    h("div", { class: "field" }, h("label", { for: "signin-password" }, "Password"), password),
    errors,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(errors, null);
    try {
      await withBusy(submit, "Signing in…", async () => {
        await signIn(email.value, password.value);
        session.setUser(await get("/users/me"));
      });
    } catch (error) {
      showError(errors, error);
      password.select();
      return;
    }
    const back = sessionStorage.getItem(RETURN_KEY);
    sessionStorage.removeItem(RETURN_KEY);
    navigate(back && back !== "#/signin" ? back : "#/projects");
  });
  const notice = message ? h("div", { class: "notice", role: "alert" }, message) : null;
  add(ctx.root, 
    h("h1", { id: "signin-title", tabindex: "-1" }, "Sign in to Quarry"),
    notice,
    form,
    h("p", { class: "muted narrow" },
      "No account yet? An administrator creates one on the Users page (or with ",
      h("code", {}, "quarry create-user you@example.org"), ") and gives you a link to set your password."),
  );
  ctx.focusTarget = email;
}

// -- the project shell ----------------------------------------------------------------------------

async function renderProject(ctx, projectId, tab, sub) {
  const project = await get(`/projects/${projectId}`, {}, { signal: ctx.signal });
  applyAccess(project);
  const tabLabel = (TABS.find(([key]) => key === tab) || [tab, tab])[1];
  document.title = `${project.name} · ${tabLabel} · Quarry`;
  setCrumbs(["Projects", "#/projects"], [project.name, `#/projects/${project.id}/codebook`], [tabLabel]);
  const content = h("section", { class: "tab-content", "aria-label": tabLabel });
  add(ctx.root, 
    h(
      "div",
      { class: "project-head" },
      h("h1", { tabindex: "-1" }, project.name),
      project.description ? h("p", { class: "muted" }, project.description) : null,
      h("p", { class: "muted small project-role" }, "Your role: ", h("strong", {}, project.role)),
    ),
    h(
      "nav",
      { class: "tabs", "aria-label": "Project sections" },
      h("ul", {}, TABS.map(([key, label]) => h("li", { "data-needs": TAB_NEEDS[key] || null }, h("a", {
        href: `#/projects/${project.id}/${key}`,
        "aria-current": key === tab ? "page" : null,
      }, label)))),
    ),
    content,
  );
  const tabCtx = { ...ctx, root: content, project };
  if (tab === "codebook") await renderCodebook(tabCtx);
  else if (tab === "documents" && sub) await renderDocumentText(tabCtx, sub);
  else if (tab === "documents") await renderDocuments(tabCtx);
  else if (tab === "runs" && sub) await renderRun(tabCtx, sub);
  else if (tab === "runs") await renderRuns(tabCtx);
  else if (tab === "results") await renderResults(tabCtx);
  else if (tab === "cases") await renderCases(tabCtx);
  else if (tab === "review") await renderReview(tabCtx);
  else if (tab === "export") await renderExport(tabCtx);
  else if (tab === "members") await renderMembers(tabCtx);
  else if (tab === "webhooks") await renderWebhooks(tabCtx);
  ctx.focusTarget = tabCtx.focusTarget || content.querySelector("h2") || ctx.root.querySelector("h1");
}

// -- the router ---------------------------------------------------------------------------------

function matchRoute(path) {
  if (path === "/signin") return { view: renderSignIn, public: true };
  if (path === "/set-password") return { view: renderSetPassword, public: true };
  if (path === "/" || path === "/projects") return { view: renderProjects };
  if (path === "/users") return { view: renderUsers };
  if (path === "/account/password") return { view: renderChangePassword };
  let m = /^\/projects\/([^/]+)$/.exec(path);
  if (m) return { redirect: `#/projects/${m[1]}/codebook` };
  m = /^\/projects\/([^/]+)\/(codebook|documents|runs|results|cases|review|export|members|webhooks)(?:\/([^/]+))?$/.exec(path);
  if (m) return { view: (ctx) => renderProject(ctx, m[1], m[2], m[3]) };
  return null;
}

async function route() {
  if (current) {
    current.controller.abort();
    for (const cleanup of current.cleanups) {
      try {
        cleanup();
      } catch {
        // a view's cleanup must never stop the next view from rendering
      }
    }
  }
  clearToasts();
  clearAccess();
  const { path, query } = parseHash();
  const main = document.getElementById("main");
  const match = matchRoute(path);
  if (match && match.redirect) {
    window.location.replace(match.redirect);
    return;
  }
  if (match && !match.public && session.expired()) {
    if (session.read()) sendToSignIn("Your session has expired; please sign in again.");
    else sendToSignIn(null);
    return;
  }
  if (path === "/signin" && !session.expired()) {
    navigate("#/projects");
    return;
  }
  const controller = new AbortController();
  const cleanups = [];
  const state = { controller, cleanups };
  current = state;
  const root = h("div", { class: "view" });
  setChildren(main, root);
  main.setAttribute("aria-busy", "true");
  renderAccount();
  const ctx = {
    root,
    query,
    signal: controller.signal,
    cleanup: (fn) => cleanups.push(fn),
    navigate,
    focusTarget: null,
  };
  try {
    if (!match) {
      setCrumbs();
      add(root, h("h1", { tabindex: "-1" }, "Page not found"),
        h("p", {}, h("a", { href: "#/projects" }, "Go to your projects")));
    } else {
      await match.view(ctx);
    }
  } catch (error) {
    if (controller.signal.aborted || (error && error.name === "AbortError")) return;
    if (error instanceof ApiError && error.status === 401) return; // sent to sign-in already
    const box = errorBox();
    showError(box, error);
    setChildren(root, 
      h("h1", { tabindex: "-1" }, !(error instanceof ApiError) ? "Something went wrong"
        : error.status === 404 ? "Not found" : error.status === 403 ? "Not allowed"
          : "Something went wrong"),
      box,
      h("p", {}, h("a", { href: "#/projects" }, "Back to your projects")),
    );
  } finally {
    if (current === state) main.removeAttribute("aria-busy");
  }
  if (current !== state) return;
  // A view shows its controls before its data has arrived. Someone who has already
  // clicked into it (a form opened, a field typed in) keeps their focus.
  const active = document.activeElement;
  if (active && active !== root && root.contains(active)) return;
  const target = ctx.focusTarget || root.querySelector("h1");
  if (target) {
    if (!target.hasAttribute("tabindex") && !/^(INPUT|BUTTON|SELECT|TEXTAREA|A)$/.test(target.tagName)) {
      target.setAttribute("tabindex", "-1");
    }
    target.focus({ preventScroll: false });
  }
}

function start() {
  document.getElementById("skip-link").addEventListener("click", () => {
    document.getElementById("main").focus();
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
