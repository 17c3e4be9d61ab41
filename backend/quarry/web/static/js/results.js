// Results and review: a grid of documents × variables built from GET …/extractions, a panel with
// the value, its evidence highlighted in the document text, confidence and model, and accept /
// correct / reject (PUT …/reviews/{document}/{variable}). Keyboard: arrow keys move, Enter
// opens, a / c / r accept, correct, reject, Escape closes the panel.

import { get, listAll, mapLimit, post, put } from "./api.js";
import { hasPageImages, pageImageViewer, pageViewer } from "./documents.js";
import {
  add, announce, badge, errorBox, formatDate, formatValue, h, notify, pager, setChildren,
  showError, uid, withBusy,
} from "./ui.js";

const PAGE_SIZE = 25;
const LOW_CONFIDENCE = 0.5; // the exports highlight below this too
const ANSWERED = new Set(["succeeded", "not_found"]);

/** The extraction that is a cell's current answer: newest answered, else newest of any status. */
function currentExtraction(list) {
  if (!list.length) return null;
  const answered = list.filter((e) => ANSWERED.has(e.status));
  const pool = answered.length ? answered : list;
  const time = (iso) => (iso ? Date.parse(iso) : -Infinity);
  return [...pool].sort((a, b) =>
    (time(b.finished_at) - time(a.finished_at)) || (time(b.created_at) - time(a.created_at)))[0];
}

/** What a cell shows: its state, text, flags, and words for screen readers. */
function describeCell(cell) {
  const e = cell.extraction;
  // Dual review: a cell's reviewer sees their own verdict in the grid (the final value, once
  // there is one, is in the panel); everyone else the cell's verdict.
  const mine = e && e.dual_review && e.dual_review.assigned;
  const r = mine ? e.dual_review.your_review : cell.review;
  const out = { state: "empty", text: "", flags: [], words: [] };
  if (!e) {
    out.state = "empty";
    out.words.push("not extracted yet");
  } else if (e.model_hidden) {
    // Blind dual review: the model's answer is withheld until this reviewer has reviewed it.
    out.state = "hidden";
    out.text = "…";
    out.words.push("the model's value is hidden until you review it");
  } else if (e.status === "pending" || e.status === "running") {
    out.state = "pending";
    out.text = "…";
    out.words.push("being extracted");
  } else if (e.status === "failed") {
    out.state = "failed";
    out.text = "failed";
    out.words.push("extraction failed");
  } else if (e.status === "cancelled") {
    out.state = "empty";
    out.text = "cancelled";
    out.words.push("cancelled");
  } else if (e.status === "not_found") {
    out.state = "not-found";
    out.text = "not stated";
    out.words.push("not stated in the document");
  } else {
    out.state = "value";
    out.text = formatValue(e.value);
    if (e.grounded === false) {
      out.flags.push(["ungrounded", "⚠"]);
      out.words.push("quote not found in the document");
    } else if (e.support === "unsupported") {
      out.flags.push(["unsupported", "≠"]);
      out.words.push("quote does not contain the value");
    }
    if (e.ocr_low_confidence) {
      out.flags.push(["ocr-low", "◌"]);
      out.words.push("quote read by OCR with low confidence");
    }
    if (e.confidence !== null && e.confidence !== undefined && e.confidence < LOW_CONFIDENCE) {
      out.flags.push(["low", "?"]);
      out.words.push(`low confidence ${e.confidence}`);
    }
  }
  // A value matched to a reference list that needs a reviewer's choice of row.
  if (e && e.status === "succeeded" && !e.match_review) {
    if (e.match_status === "ambiguous") {
      out.flags.push(["match", "≈"]);
      out.words.push("matches several rows of its reference list");
    } else if (e.match_status === "unmatched") {
      out.flags.push(["match", "∅"]);
      out.words.push("matches no row of its reference list");
    }
  }
  // A consistency finding (open) involves this cell.
  if (cell.finding) {
    out.flags.push(["finding", "!"]);
    out.words.push("disagrees with another document or the reference list");
  }
  // A two-profile run whose second profile answered differently (a value or "not stated").
  if (e && e.models_disagree && !r) {
    out.flags.push(["disagree", "⇄"]);
    out.words.push("the two models disagree");
  }
  const dual = e && e.dual_review;
  if (dual && dual.both_reviewed && dual.agree === false && !dual.adjudicated) {
    out.flags.push(["conflict", "⚑"]);
    out.words.push("the two reviewers disagree");
  }
  if (r) {
    if (r.status === "accepted") {
      out.flags.push(["accepted", "✓"]);
      out.words.push("accepted");
    } else if (r.status === "corrected") {
      out.text = r.value === null || r.value === undefined ? "not stated" : formatValue(r.value);
      out.flags.push(["corrected", "✎"]);
      out.words.push("corrected");
    } else if (r.status === "rejected") {
      out.flags.push(["rejected", "✗"]);
      out.words.push("rejected");
    }
  }
  return out;
}

const LEGEND = [
  ["value", "", "A value"],
  ["not-found", "", "Not stated in the document"],
  ["failed", "", "Extraction failed"],
  ["ungrounded", "⚠", "Quote not found in the document"],
  ["unsupported", "≠", "Quote does not contain the value"],
  ["low", "?", `Low confidence (below ${LOW_CONFIDENCE})`],
  ["ocr-low", "◌", "Quote read by OCR with low confidence: check it on the page"],
  ["disagree", "⇄", "The two models of a two-profile run disagree"],
  ["match", "≈", "Matches several rows of its reference list (∅: none); choose the row"],
  ["finding", "!", "A consistency finding: documents of the case, or the reference list, disagree"],
  ["conflict", "⚑", "Dual review: the two reviewers disagree (see Review → Conflicts)"],
  ["hidden", "", "Blind review: the model's value is hidden until you review the cell"],
  ["empty", "", "Not extracted yet"],
  ["accepted", "✓", "Accepted"],
  ["corrected", "✎", "Corrected"],
  ["rejected", "✗", "Rejected"],
];

export async function renderResults(ctx) {
  const { project } = ctx;
  const pid = project.id;
  const variables = (await get(`/projects/${pid}/variables`, {}, { signal: ctx.signal })).items;
  let offset = 0;
  let documents = [];
  let page = { total: 0, limit: PAGE_SIZE, offset: 0 };
  let cells = new Map(); // "docId:varId" → {doc, variable, extraction, review}
  let active = { row: 0, col: 0 };
  let panelKey = null;
  let followTimer = null;
  const texts = new Map(); // document id → Promise of its text
  ctx.cleanup(() => clearTimeout(followTimer));
  // A link from another view (the Cases view): ?documents=a,b shows only those documents (of
  // case ?case=K), ?document=d focuses its row, and with &variable=v opens that cell's panel.
  const linked = {
    documents: (ctx.query.get("documents") || "").split(",").filter(Boolean),
    document: ctx.query.get("document"),
    variable: ctx.query.get("variable"),
    case: ctx.query.get("case"),
  };

  const key = (docId, varId) => `${docId}:${varId}`;
  const gridErrors = errorBox();
  const gridWrap = h("div", { class: "grid-wrap" });
  const pagerSlot = h("div");
  const panel = h("aside", { class: "review-panel", hidden: true, "aria-labelledby": "panel-title" });
  const legend = h("details", { class: "legend" },
    h("summary", {}, "Legend and keyboard shortcuts"),
    h("ul", { class: "legend-list" }, LEGEND.map(([state, mark, text]) => h("li", {},
      h("span", { class: ["swatch", `cell-${state}`, `flag-${state}`], "aria-hidden": "true" }, mark || " "),
      text))),
    h("p", { class: "small" },
      h("kbd", {}, "←"), " ", h("kbd", {}, "→"), " ", h("kbd", {}, "↑"), " ", h("kbd", {}, "↓"),
      " move between cells · ", h("kbd", {}, "Enter"), " open · ", h("kbd", {}, "a"), " accept · ",
      h("kbd", {}, "c"), " correct · ", h("kbd", {}, "r"), " reject · ", h("kbd", {}, "Esc"), " close"));
  legend.open = true;

  const findingsBox = h("details", { class: "findings", hidden: true });
  add(ctx.root, 
    h("div", { class: "section-head" }, h("h2", { tabindex: "-1" }, "Results"),
      h("button", { type: "button", onclick: () => load(true) }, "Refresh")),
    linked.documents.length ? h("p", { class: "notice" },
      linked.case ? `The documents of case ${linked.case}. ` : `${linked.documents.length} chosen documents. `,
      h("a", { href: `#/projects/${pid}/results` }, "Show every document"),
      linked.case ? [" · ", h("a", { href: `#/projects/${pid}/cases` }, "Back to the cases")] : null) : null,
    legend,
    findingsBox,
    gridErrors,
    h("div", { class: "results-layout" }, h("div", { class: "grid-column" }, gridWrap, pagerSlot), panel),
  );

  if (!variables.length) {
    setChildren(gridWrap, h("p", { class: "empty" }, "Define the codebook and start a run to see results here."));
    return;
  }

  // -- loading ------------------------------------------------------------------------------------

  /**
   * Every extraction (all runs) of each document, in the order of `docs`. There is no "current
   * value per cell" endpoint, so the grid picks the current answer itself, as the exports do.
   * A small project's whole history comes in a few pages; a large one is read per document.
   */
  async function extractionHistories(docs) {
    const path = `/projects/${pid}/extractions`;
    const first = await get(path, { limit: 500, offset: 0 }, { signal: ctx.signal });
    let all = null;
    if (first.total <= first.items.length) all = first.items;
    else if (first.total <= 500 * Math.max(4, docs.length / 4)) {
      all = [...first.items];
      for (let next = 500; next < first.total; next += 500) {
        const more = await get(path, { limit: 500, offset: next }, { signal: ctx.signal });
        if (!more.items.length) break;
        all.push(...more.items);
      }
    }
    if (all) {
      const byDocument = new Map(docs.map((d) => [d.id, []]));
      for (const e of all) if (byDocument.has(e.document_id)) byDocument.get(e.document_id).push(e);
      return docs.map((d) => byDocument.get(d.id));
    }
    return mapLimit(docs, 3, (doc) => listAll(path, { document_id: doc.id }, { signal: ctx.signal }));
  }
  async function load(keepFocus = false) {
    showError(gridErrors, null);
    gridWrap.setAttribute("aria-busy", "true");
    try {
      if (linked.documents.length) {
        const items = await mapLimit(linked.documents, 3, (id) => get(`/projects/${pid}/documents/${id}`, {}, { signal: ctx.signal }));
        page = { items, total: items.length, limit: items.length, offset: 0 };
      } else {
        page = await get(`/projects/${pid}/documents`, { limit: PAGE_SIZE, offset }, { signal: ctx.signal });
      }
      documents = page.items;
      const histories = await extractionHistories(documents);
      const findings = (await get(`/projects/${pid}/findings`, { status: "open", limit: 500 }, { signal: ctx.signal })).items;
      const involved = new Map();
      for (const f of findings) for (const v of f.values) for (const d of v.documents) involved.set(key(d.document_id, f.variable_id), f);
      renderFindings(findings);
      cells = new Map();
      documents.forEach((doc, i) => {
        const byVariable = new Map();
        for (const e of histories[i]) {
          if (!byVariable.has(e.variable_id)) byVariable.set(e.variable_id, []);
          byVariable.get(e.variable_id).push(e);
        }
        for (const variable of variables) {
          const list = byVariable.get(variable.id) || [];
          const extraction = currentExtraction(list);
          const reviewed = list.find((e) => e.review);
          cells.set(key(doc.id, variable.id), {
            doc, variable, extraction, review: reviewed ? reviewed.review : null,
            finding: involved.get(key(doc.id, variable.id)) || null,
          });
        }
      });
    } catch (error) {
      if (error.name !== "AbortError") showError(gridErrors, error);
      return;
    } finally {
      gridWrap.removeAttribute("aria-busy");
    }
    active.row = Math.min(active.row, Math.max(0, documents.length - 1));
    renderGrid();
    setChildren(pagerSlot, pager(page, (next) => { offset = next; active = { row: 0, col: 0 }; load(); }, "documents"));
    if (keepFocus) focusActive();
    if (panelKey && cells.has(panelKey)) renderPanel(cells.get(panelKey), {});
  }

  /** The open findings, each value with its documents and quotes; a document opens its cell. */
  function renderFindings(findings) {
    findingsBox.hidden = !findings.length;
    if (!findings.length) return;
    findingsBox.open = true;
    setChildren(findingsBox,
      h("summary", {}, `Findings (${findings.length} open)`),
      h("ul", { class: "findings-list" }, findings.map((f) => h("li", { "data-finding": f.id },
        h("strong", {}, `Case ${f.case_key} · ${f.variable}`),
        f.kind === "reference" ? ` — the reference list says ${formatValue(f.reference_value)}` : " — the documents disagree",
        h("ul", {}, f.values.map((v) => h("li", {},
          h("strong", {}, formatValue(v.value)), v.agrees_with_reference === false ? " (not the reference value)" : "",
          v.documents.map((d) => h("span", {}, " ",
            h("button", { type: "button", class: "link", onclick: () => {
              const cell = cells.get(key(d.document_id, f.variable_id));
              if (cell) openPanel(cell, { focusPanel: true });
            } }, d.filename),
            d.page ? ` p. ${d.page}` : "", d.evidence ? h("q", {}, d.evidence) : ""))))),
        h("button", { type: "button", class: "quiet", "data-needs": "review", onclick: () => resolveFinding(f, { resolution: "both_correct" }) }, "Both correct"),
        f.values.map((v) => h("button", { type: "button", class: "quiet", "data-needs": "review", onclick: () => resolveFinding(f, { resolution: "value", value: v.value }) },
          `${formatValue(v.value)} is right`))))));
  }

  async function resolveFinding(finding, body) {
    try {
      await post(`/projects/${pid}/findings/${finding.id}/resolution`, body, { signal: ctx.signal });
      notify("Finding resolved.");
      await load(true);
    } catch (error) {
      if (error.name !== "AbortError") showError(gridErrors, error);
    }
  }

  async function chooseRow(cell, matchKey) {
    try {
      await post(`/projects/${pid}/extractions/${cell.extraction.id}/match`, { key: matchKey }, { signal: ctx.signal });
      notify(matchKey ? `Matched to ${matchKey}.` : "Marked as matching no row.");
      await load(true);
    } catch (error) {
      if (error.name !== "AbortError") showError(gridErrors, error);
    }
  }

  // -- the grid -------------------------------------------------------------------------------------
  let table = null;
  function renderGrid() {
    if (!documents.length) {
      setChildren(gridWrap, h("p", { class: "empty" },
        "No documents yet. Upload documents and start a run to see results here."));
      table = null;
      return;
    }
    table = h("table", {
      class: "results-grid", role: "grid", "aria-label": "Results: a row per document, a column per variable",
      "aria-rowcount": String(page.total + 1), "aria-colcount": String(variables.length + 1),
    },
    h("thead", {}, h("tr", { role: "row" },
      h("th", { scope: "col", role: "columnheader" }, "Document"),
      variables.map((v) => h("th", { scope: "col", role: "columnheader", title: v.description },
        v.label, h("span", { class: "slug" }, v.name))))),
    h("tbody", {}, documents.map((doc, row) => h("tr", { role: "row", "aria-rowindex": String(offset + row + 2) },
      h("th", { scope: "row", role: "rowheader", class: "doc-name", title: doc.filename }, doc.filename),
      variables.map((variable, col) => cellElement(cells.get(key(doc.id, variable.id)), row, col))))));
    table.addEventListener("keydown", onGridKey);
    setChildren(gridWrap, table);
  }

  function cellElement(cell, row, col) {
    const td = h("td", {
      role: "gridcell",
      tabindex: row === active.row && col === active.col ? "0" : "-1",
      "data-row": String(row),
      "data-col": String(col),
      "data-document": cell.doc.filename,
      "data-variable": cell.variable.name,
      "aria-selected": key(cell.doc.id, cell.variable.id) === panelKey ? "true" : "false",
    });
    fillCell(td, cell);
    td.addEventListener("click", () => {
      setActive(row, col);
      openPanel(cell, { focusPanel: false });
    });
    td.addEventListener("focus", () => {
      active = { row, col };
    });
    return td;
  }

  function fillCell(td, cell) {
    const d = describeCell(cell);
    td.className = ["cell", `cell-${d.state}`, ...d.flags.map(([f]) => `flag-${f}`)].join(" ");
    td.dataset.state = d.state;
    td.dataset.flags = d.flags.map(([f]) => f).join(" ");
    setChildren(td, 
      h("span", { class: "cell-text" }, d.text),
      d.flags.length ? h("span", { class: "cell-flags", "aria-hidden": "true" }, d.flags.map(([, m]) => m).join("")) : null,
      h("span", { class: "visually-hidden" }, d.words.length ? `, ${d.words.join(", ")}` : ""),
    );
    td.title = [d.text, ...d.words].filter(Boolean).join(" · ");
  }

  function cellAt(row, col) {
    return table ? table.querySelector(`td[data-row="${row}"][data-col="${col}"]`) : null;
  }

  function setActive(row, col) {
    const previous = cellAt(active.row, active.col);
    if (previous) previous.tabIndex = -1;
    active = { row, col };
    const td = cellAt(row, col);
    if (td) td.tabIndex = 0;
    return td;
  }

  function focusActive() {
    const td = cellAt(active.row, active.col) || cellAt(0, 0);
    if (td) {
      td.tabIndex = 0;
      td.focus();
    }
  }

  function activeCell() {
    const doc = documents[active.row];
    const variable = variables[active.col];
    return doc && variable ? cells.get(key(doc.id, variable.id)) : null;
  }

  function move(row, col) {
    const r = Math.min(Math.max(0, row), documents.length - 1);
    const c = Math.min(Math.max(0, col), variables.length - 1);
    const td = setActive(r, c);
    if (!td) return;
    td.focus();
    td.scrollIntoView({ block: "nearest", inline: "nearest" });
    if (!panel.hidden) {
      // The panel follows the focused cell, so reviewing is arrow, look, key.
      clearTimeout(followTimer);
      followTimer = setTimeout(() => {
        const cell = activeCell();
        if (cell && key(cell.doc.id, cell.variable.id) !== panelKey) openPanel(cell, { focusPanel: false });
      }, 150);
    }
  }

  function onGridKey(event) {
    const td = event.target.closest("td[role=gridcell]");
    if (!td || event.altKey || event.metaKey) return;
    const { row, col } = active;
    const last = variables.length - 1;
    const handled = () => event.preventDefault();
    switch (event.key) {
      case "ArrowUp": handled(); move(row - 1, col); return;
      case "ArrowDown": handled(); move(row + 1, col); return;
      case "ArrowLeft": handled(); move(row, col - 1); return;
      case "ArrowRight": handled(); move(row, col + 1); return;
      case "Home": handled(); move(event.ctrlKey ? 0 : row, 0); return;
      case "End": handled(); move(event.ctrlKey ? documents.length - 1 : row, last); return;
      case "PageUp": handled(); move(row - 10, col); return;
      case "PageDown": handled(); move(row + 10, col); return;
      case "Enter":
      case " ":
        handled();
        openPanel(activeCell(), { focusPanel: true });
        return;
      case "Escape":
        if (!panel.hidden) {
          handled();
          closePanel();
        }
        return;
      default:
        break;
    }
    if (event.ctrlKey) return;
    const letter = event.key.toLowerCase();
    if (letter === "a") { handled(); review(activeCell(), "accepted"); }
    if (letter === "r") { handled(); review(activeCell(), "rejected"); }
    if (letter === "c") { handled(); openPanel(activeCell(), { correct: true }); }
  }

  function refreshCell(cell) {
    const row = documents.findIndex((d) => d.id === cell.doc.id);
    const col = variables.findIndex((v) => v.id === cell.variable.id);
    const td = cellAt(row, col);
    if (td) fillCell(td, cell);
  }

  // -- reviewing ----------------------------------------------------------------------------------
  async function review(cell, status, value = undefined, note = "") {
    if (!cell) return false;
    const body = { status, note };
    if (status === "corrected") body.value = value;
    const inPanel = panelKey === key(cell.doc.id, cell.variable.id);
    // Reviewed from the panel (a key or a button in it): the panel is drawn again, and focus
    // must stay in it rather than fall to <body>, where no key works.
    const focusInPanel = inPanel && panel.contains(document.activeElement);
    const box = (inPanel && panel.querySelector(".panel-errors")) || gridErrors;
    showError(gridErrors, null);
    showError(box, null);
    try {
      cell.review = await put(`/projects/${pid}/reviews/${cell.doc.id}/${cell.variable.id}`, body);
      // Dual review: what the cell shows now (your verdict, maybe the model's value a blind
      // review withheld, whether the other reviewer agrees) is the server's to say.
      if (cell.extraction && cell.extraction.dual_review) await refetchCell(cell);
    } catch (error) {
      if (error.name !== "AbortError") showError(box, error);
      return false;
    }
    refreshCell(cell);
    const words = { accepted: "Accepted", corrected: "Corrected", rejected: "Rejected" }[status];
    announce(`${words}: ${cell.variable.label} of ${cell.doc.filename}.`);
    notify(`${words} ${cell.variable.name} of ${cell.doc.filename}.`, "success");
    if (panelKey === key(cell.doc.id, cell.variable.id)) renderPanel(cell, { focusPanel: focusInPanel });
    return true;
  }

  async function refetchCell(cell) {
    const list = await listAll(`/projects/${pid}/extractions`,
      { document_id: cell.doc.id, variable_id: cell.variable.id }, { signal: ctx.signal });
    cell.extraction = currentExtraction(list);
    const reviewed = list.find((e) => e.review);
    cell.review = reviewed ? reviewed.review : null;
  }

  function closePanel() {
    panel.hidden = true;
    setChildren(panel);
    const old = panelKey;
    panelKey = null;
    if (table) table.querySelectorAll("td[aria-selected=true]").forEach((td) => td.setAttribute("aria-selected", "false"));
    if (old) focusActive();
  }

  function openPanel(cell, options) {
    clearTimeout(followTimer); // an explicit open wins over a pending "follow the focus"
    if (!cell) return;
    const newKey = key(cell.doc.id, cell.variable.id);
    if (table) {
      table.querySelectorAll("td[aria-selected=true]").forEach((td) => td.setAttribute("aria-selected", "false"));
      const row = documents.findIndex((d) => d.id === cell.doc.id);
      const col = variables.findIndex((v) => v.id === cell.variable.id);
      const td = cellAt(row, col);
      if (td) td.setAttribute("aria-selected", "true");
    }
    panelKey = newKey;
    panel.hidden = false;
    panel.scrollTop = 0; // it opens at its title, whatever the last cell scrolled to
    renderPanel(cell, options);
  }

  function documentText(docId) {
    if (!texts.has(docId)) {
      const promise = get(`/projects/${pid}/documents/${docId}/text`, {}, { signal: ctx.signal });
      promise.catch(() => texts.delete(docId));
      texts.set(docId, promise);
    }
    return texts.get(docId);
  }

  function renderPanel(cell, { focusPanel = false, correct = false }) {
    const e = cell.extraction;
    const r = cell.review;
    const v = cell.variable;
    const d = describeCell(cell);
    const title = h("h3", { id: "panel-title", tabindex: "-1" }, v.label,
      h("span", { class: "muted" }, ` — ${cell.doc.filename}`));
    const errors = errorBox();
    errors.classList.add("panel-errors");
    const facts = [];
    const fact = (label, ...value) => facts.push(h("dt", {}, label), h("dd", {}, ...value));
    if (!e) fact("Status", badge("Not extracted yet", "muted"));
    else {
      const statusWords = {
        succeeded: ["Extracted", "ok"], not_found: ["Not stated in the document", "muted"],
        failed: ["Failed", "bad"], pending: ["Waiting", "busy"], running: ["Extracting", "busy"],
        cancelled: ["Cancelled", "muted"],
      }[e.status] || [e.status, ""];
      fact("Status", badge(statusWords[0], statusWords[1]));
    }
    if (e && e.model_hidden) fact("Extracted value", h("span", { class: "muted" }, "Hidden until you have reviewed this cell (blind review)"));
    else if (e && e.status === "succeeded") fact("Extracted value", h("strong", { class: "panel-value" }, formatValue(e.value)), v.unit ? ` ${v.unit}` : "");
    if (e && e.status === "failed" && e.error) fact("Reason", e.error);
    const dual = e && e.dual_review;
    const verdictWords = (review) => {
      const said = { accepted: "Accepted", corrected: "Corrected", rejected: "Rejected" }[review.status] || review.status;
      return [badge(said, review.status === "rejected" ? "bad" : "ok"),
        review.status !== "rejected" ? h("strong", { class: "panel-reviewed-value" }, ` ${review.value === null ? "not stated" : formatValue(review.value)}`) : "",
        h("span", { class: "muted small" }, ` · ${formatDate(review.created_at)}`)];
    };
    if (dual) {
      // Dual review: the panel shows the user's own verdict; the other reviewer's only once
      // both have reviewed (and then on the conflicts list).
      if (dual.assigned) {
        fact("Your verdict", dual.your_review ? verdictWords(dual.your_review) : h("span", { class: "muted" }, "Not reviewed yet"));
        fact("Dual review", `You are reviewer ${dual.assigned.toUpperCase()}. `,
          !dual.both_reviewed ? "The other reviewer's verdict stays hidden until both of you have reviewed."
            : dual.agree ? "Both reviewers agree."
              : dual.adjudicated ? "You disagreed; the conflict was adjudicated."
                : h("span", { class: "flag-text" }, "⚑ You disagree: a conflict for the adjudicator."));
      } else {
        fact("Dual review", !dual.both_reviewed ? "Waiting for both reviewers."
          : dual.agree ? "Both reviewers agree." : dual.adjudicated ? "Adjudicated."
            : h("span", { class: "flag-text" }, "⚑ The reviewers disagree: see Review → Conflicts."));
      }
      if (r && dual.both_reviewed && (dual.agree || dual.adjudicated)) fact("Final value", ...verdictWords(r));
    } else if (r) {
      const words = { accepted: "Accepted", corrected: "Corrected", rejected: "Rejected" }[r.status] || r.status;
      fact("Review", badge(words, r.status === "rejected" ? "bad" : "ok"),
        r.status === "corrected" ? h("strong", { class: "panel-reviewed-value" }, ` ${r.value === null ? "not stated" : formatValue(r.value)}`) : "",
        h("span", { class: "muted small" }, ` · ${formatDate(r.created_at)}`));
      if (e && r.extraction_id && r.extraction_id !== e.id && JSON.stringify(r.value) !== JSON.stringify(e.value)
        && r.status !== "rejected") {
        fact("Note", "A newer extraction disagrees with this review.");
      }
    }
    if (e && e.confidence !== null && e.confidence !== undefined) {
      fact("Confidence", h("meter", { min: 0, max: 1, low: LOW_CONFIDENCE, optimum: 1, value: e.confidence, "aria-label": "Confidence" }),
        ` ${e.confidence}`, e.confidence < LOW_CONFIDENCE ? h("span", { class: "flag-text" }, " low") : "");
    }
    if (e && e.model) fact("Model", e.model, e.profile ? ` (profile ${e.profile})` : "", e.cached ? " (from cache)" : "");
    if (e && e.second) {
      const s = e.second;
      const said = s.status === "succeeded" ? formatValue(s.value)
        : s.status === "not_found" ? "not stated" : s.status;
      const verdict = { agree: "agrees", disagree: "disagrees", one_missing: "gave no answer to compare" }[e.agreement]
        || "not compared yet";
      fact("Second model", h("strong", {}, said), ` — ${s.profile} (${s.model || "?"}) ${verdict}`,
        e.agreement === "disagree" ? h("span", { class: "flag-text" }, " ⇄") : "");
    }
    if (e && e.match_status) {
      const chosen = e.match_review;
      const words = chosen ? (chosen.key ? `${chosen.key} (chosen by a reviewer)` : "no row (chosen by a reviewer)")
        : e.match_status === "matched" ? `${e.match_key} (score ${e.match_score})` : e.match_status;
      fact("Reference row", h("strong", {}, words),
        (e.match_candidates || []).length ? h("ul", { class: "candidates" }, e.match_candidates.map((c) => h("li", {},
          `${c.key}: ${c.value} (row ${c.row_number}, score ${c.score}) `,
          h("button", { type: "button", class: "quiet", "data-needs": "review", onclick: () => chooseRow(cell, c.key) }, "Choose")))) : "",
        h("button", { type: "button", class: "quiet", "data-needs": "review", onclick: () => chooseRow(cell, null) }, "None of these"));
    }
    if (e && e.status !== "pending") fact("Prompt version", String(e.prompt_version));
    if (e && (e.tokens_in || e.tokens_out)) fact("Tokens in / out", `${e.tokens_in} / ${e.tokens_out}`);

    // Only an answer can be accepted: a failed or unextracted cell is corrected instead; a
    // value blind review hides cannot be accepted either.
    const answered = e && !e.model_hidden && (e.status === "succeeded" || e.status === "not_found");
    const notMine = dual && !dual.assigned;
    const correctButton = h("button", { type: "button", "aria-keyshortcuts": "c", onclick: () => showCorrect() },
      "Correct… ", h("kbd", { "aria-hidden": "true" }, "c"));
    const actions = notMine ? h("p", { class: "muted review-actions" },
      "Not one of your documents: in dual review only its two assigned reviewers review it.")
      : h("div", { class: "actions review-actions", "data-needs": "review" },
      answered ? h("button", { type: "button", class: "primary", "aria-keyshortcuts": "a", onclick: () => review(cell, "accepted") },
        "Accept ", h("kbd", { "aria-hidden": "true" }, "a")) : "",
      correctButton,
      h("button", { type: "button", class: "danger-quiet", "aria-keyshortcuts": "r", onclick: () => review(cell, "rejected") },
        "Reject ", h("kbd", { "aria-hidden": "true" }, "r")));
    const correctSlot = h("div", { class: "correct-slot" });

    const evidence = h("div", { class: "evidence-block" });
    if (e && e.evidence) {
      add(evidence, h("h4", {}, "Evidence"), h("blockquote", { class: "quote" }, e.evidence));
      if (e.grounded === false) {
        add(evidence, h("p", { class: "flag-text" },
          "⚠ This quote was not found in the document's text: check the value against the document."));
      } else if (e.page) {
        add(evidence, h("p", { class: "muted small" }, `Found on page ${e.page}; highlighted below.`));
      }
      if (e.ocr_low_confidence) {
        add(evidence, h("p", { class: "flag-text" },
          `◌ This quote was read by OCR with low confidence (${e.ocr_confidence}): check the value on the page image.`));
      }
      if (e.grounded !== false && e.support === "unsupported") {
        add(evidence, h("p", { class: "flag-text" },
          "≠ This quote does not contain the value: check the value against the document."));
      } else if (e.support === "unchecked") {
        add(evidence, h("p", { class: "muted small" },
          "The quote could not be checked against the value (it lacks the variable's cue words)."));
      }
    }
    const textSlot = h("div", { class: "panel-text" }, h("p", { class: "muted" }, "Loading the document's text…"));
    const history = h("details", { class: "history" }, h("summary", {}, "Review history"));
    history.addEventListener("toggle", async () => {
      if (!history.open || history.dataset.loaded) return;
      history.dataset.loaded = "1";
      try {
        const items = await get(`/projects/${pid}/reviews/${cell.doc.id}/${v.id}`, {}, { signal: ctx.signal });
        add(history, items.length
          ? h("ol", {}, items.map((item) => h("li", {}, `${item.status}`,
            item.status === "corrected" ? ` to ${formatValue(item.value) || "not stated"}` : "",
            item.note ? ` (“${item.note}”)` : "",
            h("span", { class: "muted small" }, ` · ${item.kind === "adjudication" ? "adjudication by " : ""}${item.reviewer_email || "a former user"} · ${formatDate(item.created_at)}`))))
          : h("p", { class: "muted" }, "Not reviewed yet."));
      } catch (error) {
        if (error.name !== "AbortError") add(history, h("p", { class: "error" }, error.message));
      }
    });

    setChildren(panel, 
      h("div", { class: "panel-head" }, title,
        h("button", { type: "button", class: "quiet", "aria-label": "Close the panel", onclick: closePanel }, "Close ", h("kbd", {}, "Esc"))),
      h("p", { class: "muted small" }, v.description),
      h("dl", { class: "facts" }, facts),
      errors,
      actions,
      correctSlot,
      evidence,
      textSlot,
      history,
    );
    panel.dataset.document = cell.doc.filename;
    panel.dataset.variable = v.name;
    panel.dataset.state = d.state;

    panel.onkeydown = (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        if (correctSlot.childElementCount) {
          setChildren(correctSlot);
          correctButton.focus();
        } else {
          closePanel();
        }
        return;
      }
      if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
      const letter = event.key.toLowerCase();
      if (letter === "a") { event.preventDefault(); review(cell, "accepted"); }
      if (letter === "r") { event.preventDefault(); review(cell, "rejected"); }
      if (letter === "c") { event.preventDefault(); showCorrect(); }
    };

    function showCorrect() {
      const initial = r && r.status === "corrected" ? r.value : e ? e.value : null;
      const form = correctForm(v, initial, async (value, note) => {
        const ok = await review(cell, "corrected", value, note);
        if (ok) focusActive();
        return ok;
      }, () => {
        setChildren(correctSlot);
        correctButton.focus();
      });
      setChildren(correctSlot, form.element);
      form.focus();
    }

    if (cell.doc.status === "ready") {
      documentText(cell.doc.id).then((text) => {
        if (!textSlot.isConnected) return;
        const highlight = e && e.grounded && e.char_start !== null && e.char_end !== null
          ? { start: e.char_start, end: e.char_end } : null;
        const page = (e && e.page) || 1;
        const textView = () => pageViewer(text, { page, highlight, label: `Text of ${cell.doc.filename}` }).element;
        if (!hasPageImages(cell.doc)) {
          setChildren(textSlot, h("h4", {}, "Document text"), textView());
          return;
        }
        // The page itself, with the quote outlined on it; the extracted text one click away.
        const boxes = (e && e.grounded && e.boxes) || [];
        const view = h("div", { class: "view-slot" });
        const imageButton = h("button", { type: "button", class: "quiet", "aria-pressed": "true" }, "Page image");
        const textButton = h("button", { type: "button", class: "quiet", "aria-pressed": "false" }, "Text");
        let viewer = null;
        const choose = (which) => {
          if (viewer) { viewer.close(); viewer = null; }
          imageButton.setAttribute("aria-pressed", String(which === "image"));
          textButton.setAttribute("aria-pressed", String(which === "text"));
          if (which === "image") {
            viewer = pageImageViewer(pid, cell.doc, text, {
              page, boxes, label: `Page image of ${cell.doc.filename}`, signal: ctx.signal,
            });
            setChildren(view, viewer.element);
          } else {
            setChildren(view, textView());
          }
        };
        imageButton.addEventListener("click", () => choose("image"));
        textButton.addEventListener("click", () => choose("text"));
        setChildren(textSlot, h("div", { class: "view-head" }, h("h4", {}, "Document"),
          h("div", { class: "segmented", role: "group", "aria-label": "Show the document as" }, imageButton, textButton)),
          view);
        choose("image");
        ctx.cleanup(() => { if (viewer) viewer.close(); });
      }).catch((error) => {
        if (error.name === "AbortError" || !textSlot.isConnected) return;
        setChildren(textSlot, h("p", { class: "error" }, error.message));
      });
    } else {
      setChildren(textSlot, h("p", { class: "muted" }, `The document is ${cell.doc.status}; it has no text to show.`));
    }

    if (correct) showCorrect();
    else if (focusPanel) title.focus();
  }

  await load();
  const row = documents.findIndex((d) => d.id === linked.document);
  if (row >= 0) {
    const col = Math.max(0, variables.findIndex((v) => v.id === linked.variable));
    setActive(row, col);
    if (linked.variable) openPanel(activeCell(), { focusPanel: true });
    else focusActive();
  }
}

// -- correcting a value with an input that fits its type ------------------------------------------

/** A form to correct a value: {element, focus()}. onSave(value, note) resolves true on success. */
function correctForm(variable, initial, onSave, onCancel) {
  const editor = valueEditor(variable, initial);
  const notStatedId = uid("not-stated");
  const notStated = h("input", { type: "checkbox", id: notStatedId });
  const noteId = uid("note");
  const note = h("input", { type: "text", id: noteId, maxlength: 5000, autocomplete: "off" });
  const problem = h("p", { class: "field-error", role: "alert", hidden: true });
  const save = h("button", { type: "submit", class: "primary" }, "Save correction");
  notStated.addEventListener("change", () => editor.setDisabled(notStated.checked));
  const element = h("form", { class: "correct-form", "aria-label": `Correct ${variable.label}` },
    h("h4", {}, "Correct the value"),
    editor.element,
    h("div", { class: "field checkbox" }, notStated, h("label", { for: notStatedId }, "Not stated in the document")),
    h("div", { class: "field" }, h("label", { for: noteId }, "Note (optional)"), note),
    problem,
    h("div", { class: "actions" }, save, h("button", { type: "button", onclick: onCancel }, "Cancel")));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.hidden = true;
    let value = null;
    if (!notStated.checked) {
      const read = editor.read();
      if (read.error) {
        problem.textContent = read.error;
        problem.hidden = false;
        editor.focus();
        return;
      }
      value = read.value;
    }
    await withBusy(save, "Saving…", () => onSave(value, note.value.trim()));
  });
  return { element, focus: () => editor.focus() };
}

/** An input for one value of the variable's type: {element, read() → {value}|{error}, focus()}. */
export function valueEditor(variable, initial) {
  const id = uid("value");
  const label = (text) => h("label", { for: id }, text);
  const t = variable.type;
  const wrap = (...children) => h("div", { class: "field value-editor" }, ...children);

  if (t === "integer" || t === "number") {
    const input = h("input", {
      id, type: "number", step: t === "integer" ? "1" : "any", inputmode: t === "integer" ? "numeric" : "decimal",
      value: typeof initial === "number" ? String(initial) : "",
    });
    return {
      element: wrap(label(`Value${variable.unit ? ` (${variable.unit})` : ""}`), input),
      focus: () => input.focus(),
      setDisabled: (off) => { input.disabled = off; },
      read: () => {
        if (input.value.trim() === "" || Number.isNaN(input.valueAsNumber)) {
          return { error: t === "integer" ? "Enter a whole number." : "Enter a number." };
        }
        const n = input.valueAsNumber;
        if (t === "integer" && !Number.isInteger(n)) return { error: "Enter a whole number." };
        return { value: n };
      },
    };
  }
  if (t === "boolean") {
    const select = h("select", { id },
      h("option", { value: "" }, "Choose…"),
      h("option", { value: "true", selected: initial === true }, "Yes"),
      h("option", { value: "false", selected: initial === false }, "No"));
    return {
      element: wrap(label("Value"), select),
      focus: () => select.focus(),
      setDisabled: (off) => { select.disabled = off; },
      read: () => (select.value ? { value: select.value === "true" } : { error: "Choose yes or no." }),
    };
  }
  if (t === "category") {
    const select = h("select", { id },
      h("option", { value: "" }, "Choose…"),
      variable.allowed_values.map((a) => h("option", { value: a, selected: a === initial }, a)));
    return {
      element: wrap(label("Value"), select),
      focus: () => select.focus(),
      setDisabled: (off) => { select.disabled = off; },
      read: () => (select.value ? { value: select.value } : { error: "Choose one of the allowed values." }),
    };
  }
  if (t === "multi_category") {
    const chosen = new Set(Array.isArray(initial) ? initial : []);
    const boxes = variable.allowed_values.map((a, i) => h("input", {
      type: "checkbox", id: `${id}-${i}`, value: a, checked: chosen.has(a),
    }));
    const element = h("fieldset", { class: "field value-editor" }, h("legend", {}, "Values that apply"),
      h("ul", { class: "checklist" }, boxes.map((box, i) => h("li", {}, box,
        h("label", { for: box.id }, variable.allowed_values[i])))),
      h("p", { class: "hint" }, "Leave all unticked when the document says none apply."));
    return {
      element,
      focus: () => boxes[0] && boxes[0].focus(),
      setDisabled: (off) => boxes.forEach((b) => { b.disabled = off; }),
      read: () => ({ value: boxes.filter((b) => b.checked).map((b) => b.value) }),
    };
  }
  if (t === "date") {
    const full = typeof initial === "string" && /^\d{4}-\d{2}-\d{2}$/.test(initial) ? initial : "";
    const partial = typeof initial === "string" && !full ? initial : "";
    const input = h("input", { id, type: "date", value: full });
    const partialId = uid("partial");
    const partialInput = h("input", {
      id: partialId, type: "text", value: partial, placeholder: "YYYY or YYYY-MM", inputmode: "numeric",
      pattern: "\\d{4}(-\\d{2})?", autocomplete: "off",
    });
    return {
      element: wrap(label("Date"), input,
        h("label", { for: partialId, class: "sub-label" }, "Or, when only the year or month is stated"), partialInput),
      focus: () => (partial ? partialInput : input).focus(),
      setDisabled: (off) => { input.disabled = off; partialInput.disabled = off; },
      read: () => {
        const p = partialInput.value.trim();
        if (p) {
          return /^\d{4}(-(0[1-9]|1[0-2]))?$/.test(p)
            ? { value: p } : { error: "Write the partial date as YYYY or YYYY-MM." };
        }
        return input.value ? { value: input.value } : { error: "Enter a date." };
      },
    };
  }
  if (t === "list") {
    const list = h("ol", { class: "value-rows" });
    const addItem = h("button", { type: "button", onclick: () => addRow("", true) }, "Add item");
    const relabel = () => [...list.children].forEach((row, i) => {
      row.querySelector("input").setAttribute("aria-label", `Item ${i + 1}`);
      row.querySelector("button").setAttribute("aria-label", `Remove item ${i + 1}`);
    });
    function addRow(text, focus) {
      const input = h("input", { type: "text", value: text, autocomplete: "off" });
      const row = h("li", {}, input, h("button", {
        type: "button", class: "quiet",
        onclick: () => {
          const next = row.nextElementSibling || row.previousElementSibling;
          row.remove();
          relabel();
          (next ? next.querySelector("input") : addItem).focus();
        },
      }, "Remove"));
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          if (input.value.trim()) addRow("", true);
        }
      });
      add(list, row);
      relabel();
      if (focus) input.focus();
    }
    (Array.isArray(initial) && initial.length ? initial : [""]).forEach((item) => addRow(String(item), false));
    const element = h("fieldset", { class: "field value-editor" }, h("legend", {}, "Items"), list, addItem);
    return {
      element,
      focus: () => list.querySelector("input").focus(),
      setDisabled: (off) => element.querySelectorAll("input, button").forEach((el) => { el.disabled = off; }),
      read: () => {
        const items = [...list.querySelectorAll("input")].map((i) => i.value.trim()).filter(Boolean);
        return items.length ? { value: items } : { error: "Add at least one item, or tick “Not stated”." };
      },
    };
  }
  // text
  const area = h("textarea", { id, rows: 3 });
  area.value = initial === null || initial === undefined ? "" : formatValue(initial);
  return {
    element: wrap(label("Value"), area),
    focus: () => area.focus(),
    setDisabled: (off) => { area.disabled = off; },
    read: () => (area.value.trim() ? { value: area.value.trim() } : { error: "Enter the value, or tick “Not stated”." }),
  };
}

