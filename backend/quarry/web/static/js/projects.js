// The project list: create, open, rename and delete (with confirmation) — each project's
// rename and delete shown only to the roles that may (editor and owner).

import { can } from "./access.js";
import { del, get, patch, post } from "./api.js";
import {
  add, confirmDialog, errorBox, formatDate, h, notify, pager, promptDialog, setChildren,
  showError, withBusy,
} from "./ui.js";

const PAGE_SIZE = 50;

export async function renderProjects(ctx) {
  document.title = "Projects · Quarry";
  const crumbs = document.getElementById("crumbs");
  setChildren(crumbs, h("ol", {}, h("li", {}, h("span", { "aria-current": "page" }, "Projects"))));

  const name = h("input", {
    id: "project-name", type: "text", required: true, maxlength: 200, autocomplete: "off",
  });
  const description = h("textarea", { id: "project-description", rows: 2, maxlength: 10000 });
  const createErrors = errorBox();
  const createButton = h("button", { type: "submit", class: "primary" }, "Create project");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "new-project-title" },
    h("h2", { id: "new-project-title" }, "New project"),
    h("div", { class: "field" }, h("label", { for: "project-name" }, "Name"), name),
    h("div", { class: "field" },
      h("label", { for: "project-description" }, "Description ", h("span", { class: "muted" }, "(optional)")),
      description),
    createErrors,
    h("div", { class: "actions" }, createButton),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(createErrors, null);
    try {
      const project = await withBusy(createButton, "Creating…", () =>
        post("/projects", { name: name.value, description: description.value }));
      notify(`Project “${project.name}” created.`, "success");
      ctx.navigate(`#/projects/${project.id}/codebook`);
    } catch (error) {
      showError(createErrors, error);
      name.focus();
    }
  });

  const listErrors = errorBox();
  const list = h("div", { class: "project-list" });
  add(ctx.root, 
    h("h1", { tabindex: "-1" }, "Projects"),
    h("section", { "aria-labelledby": "project-list-title" },
      h("h2", { id: "project-list-title", class: "visually-hidden" }, "Your projects"),
      listErrors, list),
    form,
  );

  let offset = 0;
  async function load(focusAfter) {
    showError(listErrors, null);
    let page;
    try {
      page = await get("/projects", { limit: PAGE_SIZE, offset }, { signal: ctx.signal });
    } catch (error) {
      if (error.name !== "AbortError") showError(listErrors, error);
      return;
    }
    if (!page.items.length && offset > 0) {
      offset = Math.max(0, offset - PAGE_SIZE);
      await load(focusAfter);
      return;
    }
    setChildren(list, page.items.length ? table(page.items) : h("p", { class: "empty" },
      "No projects yet. Create one below: give it a name, then define the variables to extract."));
    if (page.total > PAGE_SIZE || offset > 0) {
      add(list, pager(page, (next) => { offset = next; load(); }, "projects"));
    }
    if (focusAfter) focusAfter();
  }

  function table(projects) {
    return h(
      "table",
      { class: "data" },
      h("caption", { class: "visually-hidden" }, "Your projects"),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col" }, "Description"),
        h("th", { scope: "col" }, "Your role"),
        h("th", { scope: "col" }, "Created"),
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
      h("tbody", {}, projects.map((project) => h(
        "tr",
        { "data-project-id": project.id },
        h("th", { scope: "row" }, h("a", { href: `#/projects/${project.id}/codebook` }, project.name)),
        h("td", { class: "muted clip" }, project.description || ""),
        h("td", { class: "nowrap" }, project.role),
        h("td", { class: "nowrap" }, formatDate(project.created_at)),
        h("td", { class: "row-actions" },
          can(project, "edit") ? h("button", {
            type: "button",
            "aria-label": `Rename ${project.name}`,
            onclick: () => rename(project),
          }, "Rename") : null,
          can(project, "manage") ? h("button", {
            type: "button",
            class: "danger-quiet",
            "aria-label": `Delete ${project.name}`,
            onclick: () => remove(project),
          }, "Delete") : null),
      ))),
    );
  }

  async function rename(project) {
    const newName = await promptDialog({
      title: "Rename project", label: "New name", value: project.name, confirmLabel: "Rename",
      maxLength: 200,
    });
    if (newName === null || newName === project.name) return;
    try {
      const updated = await patch(`/projects/${project.id}`, { name: newName });
      notify(`Renamed to “${updated.name}”.`, "success");
      await load(() => focusRow(project.id, "Rename"));
    } catch (error) {
      showError(listErrors, error);
    }
  }

  async function remove(project) {
    const ok = await confirmDialog({
      title: `Delete “${project.name}”?`,
      message: "This deletes its codebook, documents, runs, results and reviews. It cannot be undone.",
      confirmLabel: "Delete project",
      danger: true,
    });
    if (!ok) return;
    try {
      await del(`/projects/${project.id}`);
      notify(`Project “${project.name}” deleted.`, "success");
      await load(() => {
        const heading = ctx.root.querySelector("h1");
        if (heading) heading.focus();
      });
    } catch (error) {
      showError(listErrors, error);
    }
  }

  function focusRow(id, label) {
    const row = list.querySelector(`tr[data-project-id="${CSS.escape(id)}"]`);
    const button = row && [...row.querySelectorAll("button")].find((b) => b.textContent === label);
    if (button) button.focus();
  }

  await load();
}
