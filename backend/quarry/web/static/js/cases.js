// Cases: the project's documents grouped by its case key (GET …/cases), each case with its
// reference row's label, its documents, every variable combined across them, a badge with its
// open findings, and under it those findings with every value's documents, pages and quotes
// (links that open the cell's evidence in the results' review panel) and the resolve actions
// (POST …/findings/{id}/resolution). A form sets the case key (PATCH …/projects/{id}).

import { get, listAll, patch, post } from "./api.js";
import {
  add, announce, badge, errorBox, formatDate, formatValue, h, notify, pager, setChildren,
  showError, withBusy,
} from "./ui.js";

const PAGE_SIZE = 20;

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

export async function renderCases(ctx) {
  let { project } = ctx;
  const pid = project.id;
  const variables = (await get(`/projects/${pid}/variables`, {}, { signal: ctx.signal })).items;
  const byName = new Map(variables.map((v) => [v.name, v]));
  let offset = 0;

  const errors = errorBox();
  const summary = h("p", { class: "muted" });
  const list = h("div", { class: "case-list" });
  const pagerSlot = h("div");
  const keyForm = caseKeyForm();

  add(ctx.root,
    h("div", { class: "section-head" }, h("h2", { tabindex: "-1" }, "Cases"),
      h("button", { type: "button", onclick: () => load() }, "Refresh")),
    h("p", { class: "muted" },
      "Documents with the same case key form a case. Each variable is combined across a case's "
      + "documents by its rule; where they disagree (or disagree with the reference list) the "
      + "case has a finding to resolve."),
    keyForm,
    errors,
    summary,
    list,
    pagerSlot,
  );

  /** The form choosing the variable whose value (or matched reference row) is the case key. */
  function caseKeyForm() {
    const select = h("select", { id: "case-key-variable" },
      h("option", { value: "" }, "No case key (no cases)"),
      variables.map((v) => h("option", {
        value: v.name, selected: project.case_key && project.case_key.variable === v.name,
      }, v.match ? `${v.label} (matched to ${v.match.list})` : v.label)));
    const save = h("button", { type: "submit" }, "Save");
    const problem = errorBox();
    const form = h("form", { class: "case-key-form", "aria-label": "Case key" },
      h("div", { class: "field" }, h("label", { for: "case-key-variable" }, "Group documents by"), select),
      save, problem);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      showError(problem, null);
      try {
        project = await withBusy(save, "Saving…", () => patch(`/projects/${pid}`,
          { case_key: select.value ? { variable: select.value } : null }, { signal: ctx.signal }));
      } catch (error) {
        if (error.name !== "AbortError") showError(problem, error);
        return;
      }
      notify(select.value ? `Documents are grouped by ${select.value}.` : "The project has no case key now.", "success");
      offset = 0;
      await load();
    });
    return form;
  }

  async function load(focus = null) {
    showError(errors, null);
    list.setAttribute("aria-busy", "true");
    let page;
    let findings;
    try {
      [page, findings] = await Promise.all([
        get(`/projects/${pid}/cases`, { limit: PAGE_SIZE, offset }, { signal: ctx.signal }),
        listAll(`/projects/${pid}/findings`, {}, { signal: ctx.signal }),
      ]);
    } catch (error) {
      if (error.name !== "AbortError") showError(errors, error);
      return;
    } finally {
      list.removeAttribute("aria-busy");
    }
    const keyVariable = project.case_key ? byName.get(project.case_key.variable) : null;
    const open = findings.filter((f) => f.status === "open").length;
    setChildren(summary, !keyVariable ? "" : [
      "Grouped by ", h("strong", {}, keyVariable.label),
      keyVariable.match ? `, matched to the reference list ${keyVariable.match.list}` : "",
      `: ${plural(page.total, "case")}, ${plural(open, "open finding")}.`,
    ]);
    if (!keyVariable) {
      setChildren(list, h("p", { class: "empty" },
        "This project has no case key. Choose the variable that identifies a case above "
        + "(for example a client or patient name matched to a reference list)."));
      setChildren(pagerSlot);
      return;
    }
    if (!page.items.length) {
      setChildren(list, h("p", { class: "empty" },
        keyVariable.match
          ? "No cases yet: no document's value has been matched to a row of the list "
            + "(run the project, or choose the rows of ambiguous matches in Results)."
          : "No cases yet: no document has a value of the case key (run the project)."));
    } else {
      const byCase = new Map();
      for (const f of findings) {
        if (!byCase.has(f.case_key)) byCase.set(f.case_key, []);
        byCase.get(f.case_key).push(f);
      }
      setChildren(list, page.items.map((c) => caseSection(c, keyVariable, byCase.get(c.key) || [])));
    }
    setChildren(pagerSlot, pager(page, (next) => { offset = next; load(); }, "cases"));
    if (focus) {
      const heading = list.querySelector(`[data-case="${CSS.escape(focus)}"] h3`);
      if (heading) heading.focus();
    }
  }

  /** A results link showing the case's documents; `document` (and `variable`) open a cell. */
  function resultsLink(c, documentId, variableId) {
    const query = new URLSearchParams({ case: c.key, documents: c.documents.map((d) => d.id).join(",") });
    if (documentId) query.set("document", documentId);
    if (variableId) query.set("variable", variableId);
    return `#/projects/${pid}/results?${query}`;
  }

  function caseSection(c, keyVariable, caseFindings) {
    const titleId = `case-${c.key.replace(/[^A-Za-z0-9_-]/g, "_")}-title`;
    const label = c.reference_row && keyVariable.match
      ? c.reference_row.values[keyVariable.match.column] : null;
    const names = new Map(c.documents.map((d) => [d.id, d.filename]));
    const openFor = new Set(caseFindings.filter((f) => f.status === "open").map((f) => f.variable));
    const heading = h("h3", { id: titleId, tabindex: "-1" }, `Case ${c.key}`,
      label ? h("span", { class: "case-label" }, ` · ${label}`) : null,
      c.open_findings ? [" ", h("span", {
        class: "badge badge-bad case-badge",
        title: "Open consistency findings: documents of the case, or the reference list, disagree",
      }, h("span", { "aria-hidden": "true" }, "! "), plural(c.open_findings, "open finding"))] : null);

    const documents = h("ul", { class: "case-documents" }, c.documents.map((d) => h("li", {},
      h("a", { href: resultsLink(c, d.id) }, d.filename))));

    const values = h("table", { class: "data case-values" },
      h("caption", {}, `Values of case ${c.key}, combined across its documents`),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Variable"),
        h("th", { scope: "col" }, "Value"),
        h("th", { scope: "col" }, "From"))),
      h("tbody", {}, variables.map((v) => {
        const combined = c.values[v.name] || { value: null, document_ids: [] };
        const empty = combined.value === null || combined.value === undefined
          || (Array.isArray(combined.value) && !combined.value.length);
        return h("tr", { "data-variable": v.name },
          h("th", { scope: "row" }, v.label, h("span", { class: "slug" }, v.name)),
          h("td", {}, empty ? h("span", { class: "muted" }, "not stated") : formatValue(combined.value),
            v.unit && !empty ? ` ${v.unit}` : "",
            openFor.has(v.name) ? [" ", badge("! disagrees", "bad")] : null),
          h("td", {}, combined.document_ids.map((id, i) => [i ? ", " : "",
            h("a", { href: resultsLink(c, id, v.id) }, names.get(id) || id)])));
      })));

    const reference = c.reference_row ? h("details", { class: "case-reference" },
      h("summary", {}, `Reference row ${c.reference_row.row_number}`
        + (keyVariable.match ? ` of ${keyVariable.match.list}` : "")),
      h("dl", { class: "facts" }, Object.entries(c.reference_row.values).map(([column, cell]) => [
        h("dt", {}, column), h("dd", {}, cell === null || cell === "" ? "—" : formatValue(cell))]))) : null;

    return h("section", { class: "case", "aria-labelledby": titleId, "data-case": c.key },
      heading,
      h("h4", {}, "Documents"),
      documents,
      reference,
      values,
      caseFindings.length ? [
        h("h4", {}, `Findings of case ${c.key}`),
        h("ul", { class: "findings-list case-findings" }, caseFindings.map((f) => findingItem(c, f, keyVariable))),
      ] : null);
  }

  function findingItem(c, f, keyVariable) {
    const variable = byName.get(f.variable);
    const label = variable ? variable.label : f.variable;
    const what = f.kind === "reference"
      ? [`differs from the reference list: ${f.reference_column} is `, h("strong", {}, formatValue(f.reference_value)),
        f.reference_row_number ? ` (row ${f.reference_row_number}${keyVariable.match ? ` of ${keyVariable.match.list}` : ""})` : ""]
      : "the case's documents disagree";
    const problem = errorBox();
    const values = h("ul", { class: "finding-values" }, f.values.map((v) => h("li", {},
      h("strong", { class: "finding-value" }, formatValue(v.value)),
      v.agrees_with_reference === true ? " (agrees with the reference list)" : "",
      v.agrees_with_reference === false ? " (not the reference list's value)" : "",
      h("ul", { class: "finding-sources" }, v.documents.map((d) => h("li", {},
        h("a", {
          href: variable ? resultsLink(c, d.document_id, variable.id) : resultsLink(c, d.document_id),
          "aria-label": `${d.filename}${d.page ? `, page ${d.page}` : ""}: open the evidence`,
        }, d.filename),
        d.page ? `, page ${d.page}` : "",
        d.reviewed ? " (a reviewer's value)" : "",
        d.evidence ? [": ", h("q", {}, d.evidence)] : h("span", { class: "muted" }, ": no quote")))))));

    let actions = null;
    if (f.status === "open") {
      actions = h("div", { class: "actions finding-actions", role: "group", "aria-label": `Resolve: ${label} of case ${c.key}` },
        f.values.map((v) => h("button", { type: "button", onclick: (event) => resolve(c, f, { resolution: "value", value: v.value }, event.currentTarget, problem) },
          `${formatValue(v.value)} is right`)),
        h("button", { type: "button", onclick: (event) => resolve(c, f, { resolution: "both_correct" }, event.currentTarget, problem) },
          "Both correct"));
    } else if (f.resolution) {
      const r = f.resolution;
      actions = h("p", { class: "muted small" },
        r.resolution === "both_correct" ? "Resolved: both correct" : ["Resolved: ", h("strong", {}, formatValue(r.value)), " is right"],
        r.note ? ` (“${r.note}”)` : "", ` · ${formatDate(r.created_at)}`);
    }
    return h("li", { "data-finding": f.id, "data-status": f.status },
      h("p", {}, h("strong", {}, label), " — ", what, " ",
        f.status === "open" ? badge("Open", "bad") : badge("Resolved", "ok")),
      values,
      problem,
      actions);
  }

  async function resolve(c, finding, body, button, problem) {
    showError(problem, null);
    try {
      await withBusy(button, "Saving…", () => post(`/projects/${pid}/findings/${finding.id}/resolution`, body, { signal: ctx.signal }));
    } catch (error) {
      if (error.name !== "AbortError") showError(problem, error);
      return;
    }
    notify("Finding resolved.", "success");
    announce(`Finding on ${finding.variable} of case ${c.key} resolved.`);
    await load(c.key);
  }

  await load();
}
