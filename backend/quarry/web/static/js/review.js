// Review: how the project is reviewed (single or dual, blind, the adjudicator), who reviews which
// document (by hand, split evenly, or taken from the pool), the conflicts between the two
// reviewers with both values side by side and an adjudicate action, and the agreement figures.

import { get, patch, post } from "./api.js";
import { valueEditor } from "./results.js";
import {
  add, badge, errorBox, formatValue, h, notify, pager, setChildren, showError, uid, withBusy,
} from "./ui.js";

const PAGE = 50;
const COMPARISONS = [
  ["reviewers", "Reviewer A vs B"],
  ["model_vs_a", "Model vs A"],
  ["model_vs_b", "Model vs B"],
  ["model_vs_final", "Model vs final"],
];

/** A verdict as words: its value, "not stated", or "rejected". */
function verdictText(status, value) {
  if (status === "rejected") return "rejected";
  return value === null || value === undefined ? "not stated" : formatValue(value);
}

function percent(share) {
  return share === null || share === undefined ? "—" : `${Math.round(share * 1000) / 10}%`;
}

export async function renderReview(ctx) {
  const { project } = ctx;
  const pid = project.id;
  const signal = ctx.signal;
  const [me, variables] = await Promise.all([
    get("/users/me", {}, { signal }),
    get(`/projects/${pid}/variables`, {}, { signal }).then((page) => page.items),
  ]);
  let reviewers = await get(`/projects/${pid}/reviewers`, {}, { signal });
  const isOwner = project.role === "owner";
  const mayReview = project.role !== "viewer";
  const mayAdjudicate = isOwner || project.adjudicator_id === me.id;
  const dual = project.review_mode === "dual";

  add(ctx.root, h("h2", { tabindex: "-1" }, "Review"));

  // -- settings -----------------------------------------------------------------------------------
  const settingsErrors = errorBox();
  const modeId = uid("mode");
  const blindId = uid("blind");
  const adjudicatorId = uid("adjudicator");
  const mode = h("select", { id: modeId, disabled: !isOwner },
    h("option", { value: "single", selected: !dual }, "Single: one reviewer's verdict is the value"),
    h("option", { value: "dual", selected: dual }, "Dual: two independent reviewers per document"));
  const blind = h("input", { type: "checkbox", id: blindId, checked: project.review_blind, disabled: !isOwner });
  const adjudicator = h("select", { id: adjudicatorId, disabled: !isOwner },
    h("option", { value: "" }, "Only owners"),
    reviewers.filter((r) => r.role !== "owner").map((r) => h("option", {
      value: r.user_id, selected: r.user_id === project.adjudicator_id,
    }, `${r.email} (${r.role})`)));
  const saveSettings = h("button", { type: "submit", class: "primary" }, "Save review settings");
  const settingsForm = h("form", { class: "card", "aria-label": "Review settings" },
    h("h3", {}, "Review settings"),
    h("div", { class: "field" }, h("label", { for: modeId }, "Review mode"), mode),
    h("div", { class: "field checkbox" }, blind, h("label", { for: blindId },
      " Blind: reviewers see the model's value only after they have reviewed a cell")),
    h("div", { class: "field" }, h("label", { for: adjudicatorId }, "Adjudicator (resolves conflicts)"), adjudicator),
    settingsErrors,
    isOwner ? h("div", { class: "actions" }, saveSettings)
      : h("p", { class: "muted small" }, "Only an owner changes these settings."));
  settingsForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(settingsErrors, null);
    try {
      await withBusy(saveSettings, "Saving…", () => patch(`/projects/${pid}`, {
        review_mode: mode.value, review_blind: blind.checked, adjudicator_id: adjudicator.value || null,
      }));
      notify("Review settings saved.", "success");
      ctx.navigate(`#/projects/${pid}/review`);
    } catch (error) {
      showError(settingsErrors, error);
    }
  });
  add(ctx.root, settingsForm);

  // -- assignments --------------------------------------------------------------------------------
  const assignErrors = errorBox();
  const assignTable = h("div");
  const assignPager = h("div");
  let assignOffset = 0;
  let onlyMine = !isOwner && mayReview;
  const selected = new Set();
  const reviewerOptions = (label) => {
    const id = uid("rev");
    const select = h("select", { id },
      h("option", { value: "" }, "(nobody)"),
      reviewers.map((r) => h("option", { value: r.user_id }, r.email)));
    return { select, field: h("div", { class: "field" }, h("label", { for: id }, label), select) };
  };
  const slotA = reviewerOptions("Reviewer A");
  const slotB = reviewerOptions("Reviewer B");
  const assignButton = h("button", { type: "button", class: "primary" }, "Assign selected documents");
  const autoButton = h("button", { type: "button" }, "Split all documents evenly");
  const claimButton = h("button", { type: "button" }, "Take 10 documents from the pool");
  const mineId = uid("mine");
  const mineBox = h("input", { type: "checkbox", id: mineId, checked: onlyMine });
  mineBox.addEventListener("change", () => { onlyMine = mineBox.checked; assignOffset = 0; loadAssignments(); });

  assignButton.addEventListener("click", async () => {
    showError(assignErrors, null);
    if (!selected.size) {
      showError(assignErrors, new Error("Select the documents to assign first."));
      return;
    }
    try {
      await withBusy(assignButton, "Assigning…", () => post(`/projects/${pid}/assignments`, {
        document_ids: [...selected], reviewer_a: slotA.select.value || null, reviewer_b: slotB.select.value || null,
      }));
      notify(`Assigned ${selected.size} document${selected.size === 1 ? "" : "s"}.`, "success");
      selected.clear();
      await refreshAssignments();
    } catch (error) {
      showError(assignErrors, error);
    }
  });
  autoButton.addEventListener("click", async () => {
    showError(assignErrors, null);
    try {
      const result = await withBusy(autoButton, "Splitting…", () => post(`/projects/${pid}/assignments/auto`, {}));
      notify(`Filled ${result.slots_filled} reviewer slots in ${result.documents} documents.`, "success");
      await refreshAssignments();
    } catch (error) {
      showError(assignErrors, error);
    }
  });
  claimButton.addEventListener("click", async () => {
    showError(assignErrors, null);
    try {
      const taken = await withBusy(claimButton, "Taking…", () => post(`/projects/${pid}/assignments/claim`, { count: 10 }));
      notify(taken.length ? `You took ${taken.length} document${taken.length === 1 ? "" : "s"}.` : "No documents are left in the pool.", "success");
      await refreshAssignments();
    } catch (error) {
      showError(assignErrors, error);
    }
  });

  function slotCell(slot) {
    if (!slot) return h("td", { class: "muted" }, "—");
    return h("td", {}, slot.email, h("span", { class: "muted small" }, ` · ${slot.reviewed} reviewed`));
  }

  async function loadAssignments() {
    showError(assignErrors, null);
    try {
      const query = { limit: PAGE, offset: assignOffset };
      if (onlyMine) query.mine = "true";
      const page = await get(`/projects/${pid}/assignments`, query, { signal });
      setChildren(assignTable, page.items.length ? h("table", { class: "data assignments" },
        h("caption", { class: "visually-hidden" }, "Documents and their reviewers"),
        h("thead", {}, h("tr", {},
          isOwner ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Select")) : null,
          h("th", { scope: "col" }, "Document"), h("th", { scope: "col" }, "Reviewer A"),
          h("th", { scope: "col" }, "Reviewer B"))),
        h("tbody", {}, page.items.map((item) => {
          const box = isOwner ? h("input", {
            type: "checkbox", checked: selected.has(item.document_id), "aria-label": `Select ${item.filename}`,
            onchange: (event) => (event.target.checked ? selected.add(item.document_id) : selected.delete(item.document_id)),
          }) : null;
          return h("tr", { "data-document": item.filename },
            box ? h("td", {}, box) : null,
            h("th", { scope: "row" }, item.filename),
            slotCell(item.reviewer_a), slotCell(item.reviewer_b));
        })))
        : h("p", { class: "empty" }, onlyMine ? "No documents are assigned to you yet." : "No documents yet."));
      setChildren(assignPager, pager(page, (next) => { assignOffset = next; loadAssignments(); }, "documents"));
    } catch (error) {
      if (error.name !== "AbortError") showError(assignErrors, error);
    }
  }

  async function refreshAssignments() {
    reviewers = await get(`/projects/${pid}/reviewers`, {}, { signal });
    await loadAssignments();
  }

  add(ctx.root, h("section", { class: "card", "aria-labelledby": "assignments-title" },
    h("h3", { id: "assignments-title" }, "Assignments"),
    h("p", { class: "muted small" }, dual
      ? "In dual review only a document's two reviewers review it, each without seeing the other's verdicts until both have reviewed."
      : "Assignments take effect in dual review."),
    isOwner ? h("div", { class: "assign-form" }, slotA.field, slotB.field,
      h("div", { class: "actions" }, assignButton, autoButton)) : null,
    mayReview ? h("div", { class: "actions" }, claimButton,
      h("span", { class: "field-inline" }, mineBox, h("label", { for: mineId }, " Only my documents"))) : null,
    assignErrors, assignTable, assignPager));

  // -- conflicts ----------------------------------------------------------------------------------
  const conflictErrors = errorBox();
  const conflictList = h("div");
  const conflictPager = h("div");
  let conflictOffset = 0;
  const filterVariable = h("select", { id: uid("cv"), "aria-label": "Variable" },
    h("option", { value: "" }, "Every variable"), variables.map((v) => h("option", { value: v.id }, v.label)));
  const filterStatus = h("select", { id: uid("cs"), "aria-label": "Status" },
    h("option", { value: "open" }, "Open"), h("option", { value: "resolved" }, "Resolved"),
    h("option", { value: "" }, "Open and resolved"));
  const filterReviewer = h("select", { id: uid("cr"), "aria-label": "Reviewer" },
    h("option", { value: "" }, "Every reviewer"), reviewers.map((r) => h("option", { value: r.user_id }, r.email)));
  for (const select of [filterVariable, filterStatus, filterReviewer]) {
    select.addEventListener("change", () => { conflictOffset = 0; loadConflicts(); });
  }

  async function resolve(conflict, body, button) {
    showError(conflictErrors, null);
    try {
      await withBusy(button, "Saving…", () => post(
        `/projects/${pid}/conflicts/${conflict.document_id}/${conflict.variable_id}/resolution`, body));
      notify(`Resolved ${conflict.variable} of ${conflict.filename}.`, "success");
      await Promise.all([loadConflicts(), loadAgreement()]);
    } catch (error) {
      showError(conflictErrors, error);
    }
  }

  function valueForm(conflict, slot) {
    const variable = variables.find((v) => v.id === conflict.variable_id);
    const editor = valueEditor(variable, conflict.reviewer_a.value);
    const save = h("button", { type: "submit", class: "primary" }, "Save the final value");
    const form = h("form", { class: "correct-form", "aria-label": `Final value of ${conflict.variable}` },
      editor.element, h("div", { class: "actions" }, save,
        h("button", { type: "button", onclick: () => setChildren(slot) }, "Cancel")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const read = editor.read();
      if (read.error) {
        showError(conflictErrors, new Error(read.error));
        return;
      }
      resolve(conflict, { value: read.value }, save);
    });
    setChildren(slot, form);
    editor.focus();
  }

  function conflictRow(conflict) {
    const actions = h("td", { class: "actions-cell" });
    const formSlot = h("div");
    if (mayAdjudicate) {
      const useA = h("button", { type: "button" }, "Use A's");
      const useB = h("button", { type: "button" }, "Use B's");
      useA.addEventListener("click", () => resolve(conflict, { choose: "a" }, useA));
      useB.addEventListener("click", () => resolve(conflict, { choose: "b" }, useB));
      add(actions, useA, " ", useB, " ",
        h("button", { type: "button", class: "quiet", onclick: () => valueForm(conflict, formSlot) }, "Other value…"),
        formSlot);
    }
    const side = (verdict) => h("td", { class: "verdict" },
      h("strong", {}, verdictText(verdict.status, verdict.value)),
      h("div", { class: "muted small" }, verdict.email || "a former user"),
      verdict.note ? h("div", { class: "small" }, `“${verdict.note}”`) : null);
    const model = conflict.model
      ? (conflict.model.status === "succeeded" ? formatValue(conflict.model.value)
        : conflict.model.status === "not_found" ? "not stated" : conflict.model.status)
      : "—";
    const resolution = conflict.resolution
      ? h("td", {}, badge("Resolved", "ok"), " ", h("strong", {}, verdictText(conflict.resolution.status, conflict.resolution.value)),
        h("div", { class: "muted small" }, conflict.resolution.email || ""))
      : h("td", {}, badge("Open", "warn"));
    return h("tr", { "data-document": conflict.filename, "data-variable": conflict.variable },
      h("th", { scope: "row" }, conflict.filename), h("td", {}, conflict.variable),
      side(conflict.reviewer_a), side(conflict.reviewer_b), h("td", {}, model), resolution, actions);
  }

  async function loadConflicts() {
    showError(conflictErrors, null);
    const query = { limit: PAGE, offset: conflictOffset };
    if (filterVariable.value) query.variable_id = filterVariable.value;
    if (filterStatus.value) query.status = filterStatus.value;
    if (filterReviewer.value) query.reviewer_id = filterReviewer.value;
    try {
      const page = await get(`/projects/${pid}/conflicts`, query, { signal });
      setChildren(conflictList, page.items.length ? h("table", { class: "data conflicts" },
        h("caption", { class: "visually-hidden" }, "Conflicts between the two reviewers"),
        h("thead", {}, h("tr", {}, ["Document", "Variable", "Reviewer A", "Reviewer B", "Model", "Status", "Adjudicate"]
          .map((label) => h("th", { scope: "col" }, label)))),
        h("tbody", {}, page.items.map(conflictRow)))
        : h("p", { class: "empty" }, "No conflicts."));
      setChildren(conflictPager, pager(page, (next) => { conflictOffset = next; loadConflicts(); }, "conflicts"));
    } catch (error) {
      if (error.name !== "AbortError") showError(conflictErrors, error);
    }
  }

  add(ctx.root, h("section", { class: "card", "aria-labelledby": "conflicts-title" },
    h("h3", { id: "conflicts-title" }, "Conflicts"),
    h("p", { class: "muted small" }, "Cells where the two reviewers disagree. ",
      mayAdjudicate ? "Adjudicate: the resolution is the value in exports."
        : "An owner or the adjudicator resolves them."),
    h("div", { class: "filters" }, filterVariable, filterStatus, filterReviewer),
    conflictErrors, conflictList, conflictPager));

  // -- agreement ----------------------------------------------------------------------------------
  const agreementErrors = errorBox();
  const agreementTable = h("div");

  function figureCell(figures, comparison) {
    const f = figures.find((x) => x.comparison === comparison);
    if (!f || !f.compared) return h("td", { class: "muted" }, "—");
    return h("td", { "data-comparison": comparison },
      percent(f.agreement),
      f.kappa !== null ? h("span", {}, ` · κ ${f.kappa}`) : null,
      h("span", { class: "muted small" }, ` (n = ${f.compared})`));
  }

  async function loadAgreement() {
    showError(agreementErrors, null);
    try {
      const out = await get(`/projects/${pid}/agreement`, {}, { signal });
      const measure = { kappa: "% agreement, Cohen's κ", within_tolerance: "% within tolerance", exact: "% agreement" };
      setChildren(agreementTable,
        h("p", { class: "muted small" },
          `${out.double_reviewed} cell${out.double_reviewed === 1 ? "" : "s"} reviewed by both reviewers; `,
          `${out.conflicts} conflict${out.conflicts === 1 ? "" : "s"}, ${out.resolved} resolved.`),
        h("table", { class: "data agreement" },
          h("caption", { class: "visually-hidden" }, "Agreement per variable"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Variable"), h("th", { scope: "col" }, "Measure"),
            COMPARISONS.map(([, label]) => h("th", { scope: "col" }, label)))),
          h("tbody", {},
            out.variables.map((v) => h("tr", { "data-variable": v.name },
              h("th", { scope: "row" }, v.name), h("td", {}, measure[v.measure]),
              COMPARISONS.map(([key]) => figureCell(v.figures, key)))),
            h("tr", { "data-variable": "(all variables)", class: "total" },
              h("th", { scope: "row" }, "All variables"), h("td", {}, "pooled"),
              COMPARISONS.map(([key]) => figureCell(out.overall, key))))));
    } catch (error) {
      if (error.name !== "AbortError") showError(agreementErrors, error);
    }
  }

  add(ctx.root, h("section", { class: "card", "aria-labelledby": "agreement-title" },
    h("h3", { id: "agreement-title" }, "Agreement"),
    h("p", { class: "muted small" },
      "Over the cells both reviewers reviewed (the model vs the final value: every cell with one). ",
      "Numbers agree within a relative 1e-6, dates at the precision of the less precise one. ",
      "The Excel export's Agreement sheet also has the model against each reviewer."),
    agreementErrors, agreementTable));

  await Promise.all([loadAssignments(), loadConflicts(), loadAgreement()]);
}
