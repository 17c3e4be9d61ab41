// Results and review: a grid of documents × variables, one page at a time from GET …/results
// (sorted, filtered and counted on the server), a panel with the value, its evidence
// highlighted in the document text, confidence and model (GET …/extractions for the cell), and
// accept / correct / reject (PUT …/reviews/{document}/{variable}). Keyboard: arrow keys move
// (across pages too), Enter opens, a / c / r accept, correct, reject, Escape closes the panel.
// In dual review the server says what each cell shows the user (their own verdict while the
// other reviewer's is sealed; in blind review "…" until they have reviewed the model's answer).
// The Cases view links here with ?documents=a,b&case=K&document=d&variable=v.

import { get, listAll, post, put } from "./api.js";
import { hasPageImages, pageImageViewer, pageViewer } from "./documents.js";
import {
  add, announce, badge, errorBox, formatDate, formatValue, h, notify, setChildren,
  showError, uid, withBusy,
} from "./ui.js";

const LOW_CONFIDENCE = 0.5; // the exports highlight below this too
// Column widths in CSS pixels: the default fits five variable columns beside the document
// column at 1024 px; "narrow columns" fits eight.
const DOC_COLUMN_PX = 192;
const COLUMN_PX = 144;
const NARROW_COLUMN_PX = 96;
const MIN_COLUMN_PX = 48;
const MAX_COLUMN_PX = 640;
const RESIZE_STEP_PX = 16;
const PAGE_KEY_ROWS = 10; // rows PageUp / PageDown move within a page
const RECOUNT_DELAY_MS = 1500; // after the last review, the filter counts are asked for again
const PREFETCH_ROWS = 3; // this close to a page's end (or start), the next (or previous) is fetched
const PAGE_SIZES = [25, 50]; // a page of 100 × 30 cells took the browser seconds to lay out and paint
const GRID_KEYS = new Set([
  "ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "PageUp", "PageDown", "Home", "End", "Enter", " ", "Escape",
]);
const REVIEW_KEYS = new Set(["a", "c", "r"]);
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
  const dual = cell.dual_review;
  const mine = dual && dual.assigned;
  const r = mine ? dual.your_review : cell.review;
  const out = { state: "empty", text: "", flags: [], words: [] };
  if (!e) {
    out.state = "empty";
    out.words.push("not extracted yet");
  } else if (cell.model_hidden) {
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
  if (e && e.status === "succeeded" && !e.match_review && !e.match_reviewed) {
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

/** In a window less tall than this the legend starts closed: open, it and the filter bar push
 * the grid's first rows below the fold (of a 1024 × 800 or a 1440 × 800 window alike). */
const LEGEND_OPEN_FROM_PX = 1000;

/** The grid's display preferences: density, page size and the legend's state for every
 * project, column widths per project (localStorage; defaults where it is unavailable). */
function gridPrefs(pid) {
  const read = (name) => {
    try {
      return JSON.parse(localStorage.getItem(name) || "null");
    } catch {
      return null;
    }
  };
  const shared = read("quarry.results") || {};
  const widths = read(`quarry.results.widths.${pid}`) || {};
  return {
    compact: shared.compact === true,
    narrow: shared.narrow === true,
    // Open by default only where it leaves the grid's first rows in view without scrolling.
    legend: typeof shared.legend === "boolean" ? shared.legend : window.innerHeight >= LEGEND_OPEN_FROM_PX,
    pageSize: PAGE_SIZES.includes(shared.pageSize) ? shared.pageSize : PAGE_SIZES[0],
    widths: typeof widths === "object" && widths ? widths : {},
  };
}

function savePrefs(pid, prefs) {
  try {
    localStorage.setItem("quarry.results", JSON.stringify({
      compact: prefs.compact, narrow: prefs.narrow, pageSize: prefs.pageSize, legend: prefs.legend,
    }));
    localStorage.setItem(`quarry.results.widths.${pid}`, JSON.stringify(prefs.widths));
  } catch {
    // storage full or refused: the preference lasts until the page is left
  }
}

/** The next frame (or a moment, where a hidden tab has no frames). */
function nextFrame() {
  return new Promise((resolve) => {
    requestAnimationFrame(() => resolve());
    setTimeout(resolve, 200);
  });
}

let measureContext = null;
/** A function giving the width in pixels of a text in `font` (a canvas measures it). */
function textMeasurer(font) {
  measureContext = measureContext || document.createElement("canvas").getContext("2d");
  measureContext.font = font;
  return (text) => measureContext.measureText(text).width;
}

/**
 * `name` cut in the middle to fit `room` pixels: its start and its end kept ("Referral let…copy
 * 2.pdf"), since copies and versions of a document differ at the end, where an ellipsis at the
 * end would cut exactly what tells them apart.
 */
export function middleCut(name, room, measure) {
  if (measure(name) <= room) return name;
  const chars = Array.from(name);
  const cut = (keep) => {
    const tail = Math.ceil(keep * 0.55);
    return chars.slice(0, keep - tail).join("") + "…" + chars.slice(chars.length - tail).join("");
  };
  let low = 1;
  let high = chars.length - 1;
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (measure(cut(mid)) <= room) low = mid;
    else high = mid - 1;
  }
  return cut(low);
}

export async function renderResults(ctx) {
  const { project } = ctx;
  const pid = project.id;
  const variables = (await get(`/projects/${pid}/variables`, {}, { signal: ctx.signal })).items;
  const prefs = gridPrefs(pid);
  // A link from another view (the Cases view): ?documents=a,b shows only those documents (of
  // case ?case=K), ?document=d focuses its row, and with &variable=v opens that cell's panel.
  const linked = {
    documents: (ctx.query.get("documents") || "").split(",").filter(Boolean),
    document: ctx.query.get("document"),
    variable: ctx.query.get("variable"),
    case: ctx.query.get("case"),
  };
  if (!linked.documents.length && linked.document) linked.documents = [linked.document];
  // What the server sorts and filters by (GET …/results); the page is `offset`.
  const query = {
    sort: "uploaded", order: "asc", sort_variable_id: null, variable_id: null,
    status: null, review: null, flag: null, name: "", value: "",
    document_id: linked.documents.length ? linked.documents : null,
  };
  let offset = 0;
  let page = { items: [], total: 0, limit: prefs.pageSize, offset: 0, documents_total: 0, counts: null };
  let documents = [];
  let cells = new Map(); // "docId:varId" → {doc, variable, extraction, review, finding, flags, detail}
  let active = { row: 0, col: 0 };
  let panelKey = null;
  let followTimer = null;
  let searchTimer = null;
  let loading = null; // the load under way: keys that change the page wait for it
  let loadToken = 0;
  let panelToken = 0;
  const texts = new Map(); // document id → Promise of its text
  ctx.cleanup(() => { clearTimeout(followTimer); clearTimeout(searchTimer); });

  const key = (docId, varId) => `${docId}:${varId}`;
  const gridErrors = errorBox();
  const gridWrap = h("div", { class: "grid-wrap" });
  const pagerSlot = h("div");
  const summary = h("p", { class: "grid-summary muted", "aria-live": "polite" });
  const panel = h("aside", { class: "review-panel", hidden: true, "aria-labelledby": "panel-title" });
  const legend = h("details", { class: "legend" },
    h("summary", {}, "Legend and keyboard shortcuts"),
    h("ul", { class: "legend-list" }, LEGEND.map(([state, mark, text]) => h("li", {},
      h("span", { class: ["swatch", `cell-${state}`, `flag-${state}`], "aria-hidden": "true" }, mark || " "),
      text))),
    h("p", { class: "small" },
      h("kbd", {}, "←"), " ", h("kbd", {}, "→"), " ", h("kbd", {}, "↑"), " ", h("kbd", {}, "↓"),
      " move between cells (↑ ↓ and ", h("kbd", {}, "PgUp"), " ", h("kbd", {}, "PgDn"),
      " go on to the previous or next page) · ", h("kbd", {}, "Enter"), " open · ", h("kbd", {}, "a"), " accept · ",
      h("kbd", {}, "c"), " correct · ", h("kbd", {}, "r"), " reject · ", h("kbd", {}, "Esc"), " close · ",
      h("kbd", {}, "Shift"), "+", h("kbd", {}, "←"), " ", h("kbd", {}, "→"), " narrow or widen the column"));
  legend.open = prefs.legend;
  legend.addEventListener("toggle", () => {
    if (prefs.legend !== legend.open) {
      prefs.legend = legend.open;
      savePrefs(pid, prefs);
    }
  });

  // -- the filter bar: searches, filters with their counts, sort, density ----------------------
  const nameSearch = h("input", { type: "search", id: uid("name-search"), autocomplete: "off", maxlength: 200, value: "" });
  const valueSearch = h("input", { type: "search", id: uid("value-search"), autocomplete: "off", maxlength: 200, value: "" });
  const columnSelect = h("select", { id: uid("column") },
    h("option", { value: "" }, "Every column"),
    variables.map((v) => h("option", { value: v.id }, v.label)));
  const statusSelect = h("select", { id: uid("status") });
  const sortSelect = h("select", { id: uid("sort") },
    h("option", { value: "uploaded" }, "Upload order"),
    h("option", { value: "filename" }, "Document name"),
    h("option", { value: "flag" }, "Flags, most serious first"),
    variables.map((v) => h("option", { value: `value:${v.id}` }, `Value of ${v.label}`)));
  const orderSelect = h("select", { id: uid("order") },
    h("option", { value: "asc" }, "Ascending"), h("option", { value: "desc" }, "Descending"));
  const sizeSelect = h("select", { id: uid("page-size") },
    PAGE_SIZES.map((n) => h("option", { value: String(n), selected: n === prefs.pageSize }, String(n))));
  const compactButton = h("button", { type: "button", class: "quiet", "aria-pressed": String(prefs.compact) }, "Compact rows");
  const narrowButton = h("button", { type: "button", class: "quiet", "aria-pressed": String(prefs.narrow) }, "Narrow columns");
  const clearButton = h("button", { type: "button", class: "quiet", hidden: true }, "Clear filters");
  const reviewChips = h("div", { class: "chips-row", role: "group", "aria-label": "Review" });
  const flagChips = h("div", { class: "chips-row", role: "group", "aria-label": "Flag" });
  const field = (label, control) => h("div", { class: "toolbar-field" }, h("label", { for: control.id }, label), control);
  const toolbar = h("div", { class: "grid-toolbar" },
    h("div", { class: "toolbar-row", role: "search", "aria-label": "Search the results" },
      field("Document name", nameSearch), field("Value", valueSearch), field("In column", columnSelect),
      field("Status", statusSelect)),
    h("div", { class: "toolbar-row" },
      field("Sort by", sortSelect), field("Order", orderSelect), field("Rows per page", sizeSelect),
      compactButton, narrowButton, clearButton),
    h("div", { class: "toolbar-row chips-line" }, h("span", { class: "chips-label", "aria-hidden": "true" }, "Review:"), reviewChips),
    h("div", { class: "toolbar-row chips-line" }, h("span", { class: "chips-label", "aria-hidden": "true" }, "Flags:"), flagChips));

  const findingsBox = h("details", { class: "findings", hidden: true });
  const linkedNotice = linked.documents.length ? h("p", { class: "notice" },
    linked.case ? `The documents of case ${linked.case}. `
      : linked.documents.length === 1 ? "One chosen document. " : `${linked.documents.length} chosen documents. `,
    h("a", { href: `#/projects/${pid}/results` }, "Show every document"),
    linked.case ? [" · ", h("a", { href: `#/projects/${pid}/cases` }, "Back to the cases")] : null) : null;
  // The Refresh button closes the toolbar: Tab goes from it to the legend and then into the grid.
  add(ctx.root,
    h("div", { class: "section-head" }, h("h2", { tabindex: "-1" }, "Results")),
    linkedNotice,
    toolbar,
    h("div", { class: "refresh-row" }, h("button", { type: "button", onclick: () => load({ keepFocus: true, findings: true }) }, "Refresh")),
    legend,
    findingsBox,
    gridErrors,
    summary,
    h("div", { class: "results-layout" }, h("div", { class: "grid-column" }, gridWrap, pagerSlot), panel),
  );
  gridWrap.classList.toggle("compact", prefs.compact);

  if (!variables.length) {
    toolbar.hidden = true;
    setChildren(gridWrap, h("p", { class: "empty" }, "Define the codebook and start a run to see results here."));
    return;
  }

  const requery = () => { offset = 0; active = { row: 0, col: active.col }; load(); };
  const searchLater = () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => {
    query.name = nameSearch.value.trim();
    query.value = valueSearch.value.trim();
    requery();
  }, 300); };
  nameSearch.addEventListener("input", searchLater);
  valueSearch.addEventListener("input", searchLater);
  columnSelect.addEventListener("change", () => { query.variable_id = columnSelect.value || null; requery(); });
  statusSelect.addEventListener("change", () => { query.status = statusSelect.value || null; requery(); });
  sortSelect.addEventListener("change", () => { setSort(sortSelect.value, query.order); requery(); });
  orderSelect.addEventListener("change", () => { query.order = orderSelect.value; requery(); });
  sizeSelect.addEventListener("change", () => {
    prefs.pageSize = Number(sizeSelect.value);
    savePrefs(pid, prefs);
    requery();
  });
  compactButton.addEventListener("click", () => {
    prefs.compact = !prefs.compact;
    compactButton.setAttribute("aria-pressed", String(prefs.compact));
    gridWrap.classList.toggle("compact", prefs.compact);
    savePrefs(pid, prefs);
    fitNames();
  });
  narrowButton.addEventListener("click", () => {
    prefs.narrow = !prefs.narrow;
    prefs.widths = {}; // the new default for every column
    narrowButton.setAttribute("aria-pressed", String(prefs.narrow));
    savePrefs(pid, prefs);
    applyWidths();
  });
  clearButton.addEventListener("click", () => {
    Object.assign(query, { variable_id: null, status: null, review: null, flag: null, name: "", value: "" });
    nameSearch.value = "";
    valueSearch.value = "";
    columnSelect.value = "";
    requery();
    nameSearch.focus();
  });

  function setSort(choice, order) {
    if (choice.startsWith("value:")) {
      query.sort = "value";
      query.sort_variable_id = choice.slice("value:".length);
    } else {
      query.sort = choice;
      query.sort_variable_id = null;
    }
    query.order = order;
  }

  const STATUS_WORDS = {
    succeeded: "Extracted", not_found: "Not stated", failed: "Failed", pending: "Waiting",
    running: "Extracting", cancelled: "Cancelled", not_extracted: "Not extracted",
  };
  const REVIEW_WORDS = { unreviewed: "Unreviewed", reviewed: "Reviewed" };
  const FLAG_WORDS = {
    failed: "Failed", review_disagrees: "Newer extraction disagrees", models_disagree: "Models disagree",
    not_found: "Not stated", ungrounded: "Ungrounded", unsupported_evidence: "Unsupported",
    match_unmatched: "No reference row", match_ambiguous: "Ambiguous match",
    ocr_low_confidence: "Low OCR confidence", low_confidence: "Low confidence", finding: "Finding",
  };

  /** The filter bar after a load: each value with what choosing it would give. */
  // The filter bar's chips and options are made once and updated in place after each load:
  // replacing them would take the focus from the chip just pressed (and have the browser lay
  // the page out there and then to move it).
  const chips = new Map(); // "facet:value" → button
  function chipFor(facet, value, container) {
    const id = `${facet}:${value ?? ""}`;
    if (!chips.has(id)) {
      const button = h("button", {
        type: "button", class: "chip", "aria-pressed": "false", "data-facet": facet, "data-value": value ?? "",
        onclick: () => { query[facet] = query[facet] === value ? null : value; requery(); },
      });
      container.append(button);
      chips.set(id, button);
    }
    return chips.get(id);
  }
  const noFlags = h("span", { class: "muted small", hidden: true }, "none");
  const statusOptions = new Map(); // value → option
  statusSelect.append(h("option", { value: "" }, "Any status"));

  function updateChip(button, label, count, pressed, shown) {
    const text = count === null ? label : `${label} (${count.toLocaleString()})`;
    if (button.textContent !== text) button.textContent = text;
    button.setAttribute("aria-pressed", String(pressed));
    button.hidden = !shown;
  }

  /** The filter bar after a load: each value with what choosing it would give. */
  function renderFilters() {
    const counts = page.counts || { status: [], review: [], flag: [] };
    updateChip(chipFor("review", null, reviewChips), "All", null, query.review === null, true);
    for (const c of counts.review) {
      updateChip(chipFor("review", c.value, reviewChips), REVIEW_WORDS[c.value] || c.value, c.documents,
        query.review === c.value, c.documents > 0 || query.review === c.value);
    }
    updateChip(chipFor("flag", null, flagChips), "Any", null, query.flag === null, true);
    let anyFlag = false;
    for (const c of counts.flag) {
      const shown = c.documents > 0 || query.flag === c.value;
      anyFlag = anyFlag || shown;
      updateChip(chipFor("flag", c.value, flagChips), FLAG_WORDS[c.value] || c.value, c.documents,
        query.flag === c.value, shown);
    }
    if (!noFlags.isConnected) flagChips.append(noFlags);
    noFlags.hidden = anyFlag;
    for (const c of counts.status) {
      if (!statusOptions.has(c.value)) {
        const option = h("option", { value: c.value });
        statusSelect.append(option);
        statusOptions.set(c.value, option);
      }
      const option = statusOptions.get(c.value);
      option.textContent = `${STATUS_WORDS[c.value] || c.value} (${c.documents.toLocaleString()})`;
      option.hidden = !(c.documents > 0 || query.status === c.value);
    }
    statusSelect.value = query.status || "";
    sortSelect.value = query.sort === "value" ? `value:${query.sort_variable_id}` : query.sort;
    orderSelect.value = query.order;
    clearButton.hidden = !(query.variable_id || query.status || query.review || query.flag || query.name || query.value);
  }

  // -- paging: Previous / Next, updated in place (the button just pressed keeps the focus) ----------
  const previousButton = h("button", { type: "button" }, "Previous");
  const nextButton = h("button", { type: "button" }, "Next");
  const pageText = h("span", { class: "muted" });
  const pagerNav = h("nav", { class: "pager", "aria-label": "Pages of documents", hidden: true }, previousButton, pageText, nextButton);
  const pagerNote = h("p", { class: "muted pager-summary", hidden: true });
  add(pagerSlot, pagerNav, pagerNote);
  const goTo = (next) => { offset = next; active = { row: 0, col: active.col }; load(); };
  previousButton.addEventListener("click", () => goTo(Math.max(0, offset - prefs.pageSize)));
  nextButton.addEventListener("click", () => goTo(offset + prefs.pageSize));

  function renderPager() {
    const { total } = page;
    const single = total <= prefs.pageSize && offset === 0;
    pagerNav.hidden = single;
    pagerNote.hidden = !single;
    pagerNote.textContent = total === 1 ? "1 document" : `${total.toLocaleString()} documents`;
    const first = total === 0 ? 0 : offset + 1;
    const last = Math.min(offset + prefs.pageSize, total);
    pageText.textContent = `${first.toLocaleString()}–${last.toLocaleString()} of ${total.toLocaleString()} documents`;
    previousButton.disabled = offset === 0;
    nextButton.disabled = offset + prefs.pageSize >= total;
  }

  // -- loading ------------------------------------------------------------------------------------

  /**
   * One page of the grid from GET …/results (sorted and filtered there); `focus` is where the
   * keyboard lands afterwards: {row: n | "last", col}.
   */
  function load({ keepFocus = false, focus = null, findings = false } = {}) {
    const token = ++loadToken;
    const run = (async () => {
      showError(gridErrors, null);
      gridWrap.setAttribute("aria-busy", "true");
      let result;
      let openFindings = null;
      try {
        // Counts are the same for every page of a query: asked for once per query (and
        // on Refresh), then left out, which lets the server read only the page's cells.
        const params = pageParams(offset, { counted: !findings });
        [result, openFindings] = await Promise.all([
          fetchPage(params),
          findings ? get(`/projects/${pid}/findings`, { status: "open", limit: 500 }, { signal: ctx.signal }) : null,
        ]);
      } catch (error) {
        if (token === loadToken && error.name !== "AbortError") showError(gridErrors, error);
        return;
      } finally {
        if (token === loadToken) gridWrap.removeAttribute("aria-busy");
      }
      if (token !== loadToken) return; // a later load overtook this one
      if (!result.items.length && result.total > 0 && offset > 0) {
        // The page went away (filtered rows were reviewed, documents deleted): the last one.
        offset = Math.max(0, Math.floor((result.total - 1) / prefs.pageSize) * prefs.pageSize);
        await load({ keepFocus, focus });
        return;
      }
      if (openFindings) renderFindings(openFindings.items);
      if (result.counts) {
        countsOf = queryKey();
      } else {
        result.counts = page.counts;
      }
      page = result;
      documents = result.items.map((row) => row.document);
      cells = new Map();
      const byId = new Map(variables.map((v) => [v.id, v]));
      for (const row of result.items) {
        for (const c of row.cells) {
          const variable = byId.get(c.variable_id);
          if (!variable) continue;
          cells.set(key(row.document.id, c.variable_id), { doc: row.document, variable, ...cellState(c), detail: null });
        }
      }
      if (focus) {
        active = { row: focus.row === "last" ? documents.length - 1 : focus.row, col: focus.col };
      }
      active.row = Math.min(Math.max(0, active.row), Math.max(0, documents.length - 1));
      renderFilters();
      renderGrid({ keepScroll: keepFocus && !focus });
      renderSummary();
      renderPager();
      // The focus moves now (the next key must find the new page), the scrolling to it in the
      // next frame: it reads the layout, which that frame computes anyway.
      if (keepFocus || focus) {
        const td = focusActive({ scroll: false });
        if (td) afterFrame.push(() => td.scrollIntoView({ block: "nearest", inline: "nearest" }));
      }
      await nextFrame();
      for (const step of afterFrame.splice(0)) step();
      if (token !== loadToken) return;
      if (focus && !panel.hidden) followFocus();
      if (panelKey) {
        if (cells.has(panelKey)) openPanel(cells.get(panelKey), {});
        else closePanel(false);
      }
    })();
    const tracked = run.finally(() => { if (loading === tracked) loading = null; });
    loading = tracked;
    return run;
  }

  /** What the grid keeps of a cell of GET …/results. */
  function cellState(c) {
    return {
      extraction: c.extraction, review: c.review, finding: c.finding, flags: c.flags, flag: c.flag,
      model_hidden: c.model_hidden, dual_review: c.dual_review,
    };
  }

  function renderSummary() {
    const first = page.total ? offset + 1 : 0;
    const last = Math.min(offset + documents.length, page.total);
    const filtered = page.total !== page.documents_total;
    summary.textContent = page.total
      ? `Documents ${first.toLocaleString()}–${last.toLocaleString()} of ${page.total.toLocaleString()}`
        + (filtered ? ` matching (${page.documents_total.toLocaleString()} in the project)` : "")
      : "";
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
            h("button", { type: "button", class: "link", onclick: () => openFindingCell(d, f.variable_id) }, d.filename),
            d.page ? ` p. ${d.page}` : "", d.evidence ? h("q", {}, d.evidence) : ""))))),
        h("button", { type: "button", class: "quiet", "data-needs": "review", onclick: () => resolveFinding(f, { resolution: "both_correct" }) }, "Both correct"),
        f.values.map((v) => h("button", { type: "button", class: "quiet", "data-needs": "review", onclick: () => resolveFinding(f, { resolution: "value", value: v.value }) },
          `${formatValue(v.value)} is right`))))));
  }

  /** A finding's document: its cell on this page, else the grid narrowed to its name. */
  async function openFindingCell(source, variableId) {
    let cell = cells.get(key(source.document_id, variableId));
    if (!cell) {
      Object.assign(query, {
        name: source.filename, variable_id: null, status: null, review: null, flag: null, value: "", document_id: null,
      });
      if (linkedNotice) linkedNotice.hidden = true; // no longer only the linked documents
      nameSearch.value = source.filename;
      valueSearch.value = "";
      columnSelect.value = "";
      offset = 0;
      await load();
      cell = cells.get(key(source.document_id, variableId));
    }
    if (cell) {
      setActive(documents.findIndex((d) => d.id === cell.doc.id), variables.findIndex((v) => v.id === variableId));
      openPanel(cell, { focusPanel: true });
    }
  }

  async function resolveFinding(finding, body) {
    try {
      await post(`/projects/${pid}/findings/${finding.id}/resolution`, body, { signal: ctx.signal });
      notify("Finding resolved.");
      await load({ keepFocus: true, findings: true });
    } catch (error) {
      if (error.name !== "AbortError") showError(gridErrors, error);
    }
  }

  async function chooseRow(cell, matchKey) {
    try {
      await post(`/projects/${pid}/extractions/${cell.detail.id}/match`, { key: matchKey }, { signal: ctx.signal });
      notify(matchKey ? `Matched to ${matchKey}.` : "Marked as matching no row.");
      await load({ keepFocus: true, findings: true });
    } catch (error) {
      if (error.name !== "AbortError") showError(gridErrors, error);
    }
  }

  // -- the grid -------------------------------------------------------------------------------------
  const afterFrame = []; // what waits for the next frame after a page is drawn
  const scrolled = { top: 0 }; // kept by a listener: reading it would lay the page out
  gridWrap.addEventListener("scroll", () => { scrolled.top = gridWrap.scrollTop; }, { passive: true });
  let table = null;
  let cols = [];
  const nameStyle = {};

  function defaultWidth() {
    return prefs.narrow ? NARROW_COLUMN_PX : COLUMN_PX;
  }

  function widthOf(id) {
    return prefs.widths[id] || (id === "doc" ? DOC_COLUMN_PX : defaultWidth());
  }

  /** Column widths from the preferences, set through the CSSOM (allowed by the strict CSP,
   * which forbids only style attributes in markup). */
  function applyWidths() {
    if (!table) return;
    let total = 0;
    cols.forEach((col) => {
      const px = widthOf(col.dataset.column);
      col.style.width = `${px}px`;
      total += px;
    });
    table.style.width = `${total}px`;
    table.querySelectorAll(".col-resize").forEach((handle) => {
      handle.setAttribute("aria-valuenow", String(widthOf(handle.dataset.resize)));
    });
    gridWrap.style.scrollPaddingLeft = `${widthOf("doc")}px`;
    fitNames();
  }

  function resizeColumn(id, px, { announceIt = false } = {}) {
    const width = Math.round(Math.min(MAX_COLUMN_PX, Math.max(MIN_COLUMN_PX, px)));
    prefs.widths[id] = width;
    applyWidths();
    if (announceIt) {
      const v = variables.find((x) => x.id === id);
      announce(`${v ? v.label : "Document"} column ${width} pixels wide.`);
    }
    return width;
  }

  /** Filenames cut in the middle to fit their column: copies differ at the end. */
  function fitNames() {
    if (!table) return;
    const names = table.querySelectorAll("tbody th.doc-name");
    if (!names.length) return;
    // The name cells' font and padding, read once per density (reading them from a table just
    // built would have the browser compute its styles there and then).
    const density = prefs.compact ? "compact" : "regular";
    if (!nameStyle[density]) {
      const style = getComputedStyle(names[0]);
      nameStyle[density] = { font: style.font, padding: parseFloat(style.paddingLeft) + parseFloat(style.paddingRight) };
    }
    const room = widthOf("doc") - nameStyle[density].padding - 2;
    const measure = textMeasurer(nameStyle[density].font);
    names.forEach((th) => {
      const shown = th.querySelector(".doc-name-text");
      shown.textContent = middleCut(th.dataset.filename, room, measure);
    });
  }

  function sortState(columnId) {
    if (columnId === "doc") return query.sort === "filename" ? query.order : null;
    return query.sort === "value" && query.sort_variable_id === columnId ? query.order : null;
  }

  function headerCell(columnId, label, extra, title) {
    const state = sortState(columnId);
    const button = h("button", {
      type: "button", class: "sort-button", tabindex: "-1",
      title: `Sort by ${columnId === "doc" ? "document name" : `the value of ${label}`}`,
      onclick: () => {
        const order = state === "asc" ? "desc" : "asc";
        setSort(columnId === "doc" ? "filename" : `value:${columnId}`, order);
        requery();
      },
    }, label, extra, h("span", { class: "sort-mark", "aria-hidden": "true" }, state === "asc" ? " ▲" : state === "desc" ? " ▼" : ""));
    const handle = h("span", {
      class: "col-resize", role: "separator", "aria-orientation": "vertical",
      "aria-label": `Resize the ${label} column`, "aria-valuenow": String(widthOf(columnId)),
      "aria-valuemin": String(MIN_COLUMN_PX), "aria-valuemax": String(MAX_COLUMN_PX), "data-resize": columnId,
    });
    return h("th", {
      scope: "col", role: "columnheader", title,
      "aria-sort": state === "asc" ? "ascending" : state === "desc" ? "descending" : "none",
      "data-column": columnId,
    }, button, handle);
  }

  function renderGrid({ keepScroll = false } = {}) {
    if (!documents.length) {
      const filtered = clearButton.hidden === false;
      setChildren(gridWrap, h("p", { class: "empty" }, filtered
        ? "No documents match these filters."
        : "No documents yet. Upload documents and start a run to see results here."));
      table = null;
      return;
    }
    cols = [h("col", { "data-column": "doc" }), ...variables.map((v) => h("col", { "data-column": v.id }))];
    const body = document.createDocumentFragment();
    documents.forEach((doc, row) => {
      const tr = document.createElement("tr");
      tr.setAttribute("role", "row");
      tr.setAttribute("aria-rowindex", String(offset + row + 2));
      const th = document.createElement("th");
      th.scope = "row";
      th.setAttribute("role", "rowheader");
      th.className = "doc-name";
      th.title = doc.filename;
      th.dataset.filename = doc.filename;
      // The full name for screen readers; the visible one may be cut in the middle.
      th.append(h("span", { class: "doc-name-text", "aria-hidden": "true" }, doc.filename),
        h("span", { class: "visually-hidden" }, doc.filename));
      tr.append(th);
      variables.forEach((variable, col) => tr.append(cellElement(cells.get(key(doc.id, variable.id)), row, col)));
      body.append(tr);
    });
    const tbody = document.createElement("tbody");
    tbody.append(body);
    table = h("table", {
      class: "results-grid", role: "grid", "aria-label": "Results: a row per document, a column per variable",
      "aria-rowcount": String(page.total + 1), "aria-colcount": String(variables.length + 1),
    },
    h("colgroup", {}, cols),
    h("thead", {}, h("tr", { role: "row", "aria-rowindex": "1" },
      headerCell("doc", "Document", null, "Sort by document name"),
      variables.map((v) => headerCell(v.id, v.label, h("span", { class: "slug" }, v.name), v.description)))),
    tbody);
    table.addEventListener("keydown", onGridKey);
    table.addEventListener("click", onGridClick);
    table.addEventListener("focusin", onGridFocus);
    table.addEventListener("pointerdown", onResizeStart);
    setChildren(gridWrap, table);
    applyWidths();
    // The scroller keeps its offsets across the new table: a re-drawn page stays where it was,
    // a new one starts at its top (written in the next frame, with the layout that frame does
    // anyway: written here it would lay the new table out in this task as well).
    if (!keepScroll && scrolled.top > 0) afterFrame.push(() => { gridWrap.scrollTop = 0; });
  }

  function cellElement(cell, row, col) {
    const td = document.createElement("td");
    td.setAttribute("role", "gridcell");
    td.tabIndex = row === active.row && col === active.col ? 0 : -1;
    td.dataset.row = String(row);
    td.dataset.col = String(col);
    td.dataset.document = cell.doc.filename;
    td.dataset.variable = cell.variable.name;
    td.setAttribute("aria-selected", key(cell.doc.id, cell.variable.id) === panelKey ? "true" : "false");
    fillCell(td, cell);
    return td;
  }

  function fillCell(td, cell) {
    const d = describeCell(cell);
    td.className = ["cell", `cell-${d.state}`, ...d.flags.map(([f]) => `flag-${f}`)].join(" ");
    td.dataset.state = d.state;
    td.dataset.flags = d.flags.map(([f]) => f).join(" ");
    // A plain value is one text node; only flagged cells get their mark and words. The
    // browser's layout and paint of a page of cells grow with its elements, not its text.
    if (!d.flags.length && !d.words.length) {
      td.textContent = d.text;
    } else {
      setChildren(td,
        d.flags.length ? h("span", { class: "cell-flags", "aria-hidden": "true" }, d.flags.map(([, m]) => m).join("")) : null,
        d.text,
        d.words.length ? h("span", { class: "visually-hidden" }, `, ${d.words.join(", ")}`) : null,
      );
    }
    td.title = [d.text, ...d.words].filter(Boolean).join(" · ");
  }

  function onGridClick(event) {
    const td = event.target.closest("td[role=gridcell]");
    if (!td) return;
    const row = Number(td.dataset.row);
    const col = Number(td.dataset.col);
    setActive(row, col);
    openPanel(cellAtIndex(row, col), { focusPanel: false });
  }

  function onGridFocus(event) {
    const td = event.target.closest("td[role=gridcell]");
    if (td) active = { row: Number(td.dataset.row), col: Number(td.dataset.col) };
  }

  /** Dragging a header's right edge resizes its column. */
  function onResizeStart(event) {
    const handle = event.target.closest(".col-resize");
    if (!handle || event.button !== 0) return;
    event.preventDefault();
    const id = handle.dataset.resize;
    const startX = event.clientX;
    const startWidth = widthOf(id);
    handle.setPointerCapture(event.pointerId);
    handle.classList.add("dragging");
    let frame = 0;
    let latest = startWidth;
    const onMove = (e) => {
      latest = startWidth + e.clientX - startX;
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; resizeColumn(id, latest); });
    };
    const onUp = () => {
      handle.removeEventListener("pointermove", onMove);
      handle.removeEventListener("pointerup", onUp);
      handle.removeEventListener("pointercancel", onUp);
      handle.classList.remove("dragging");
      cancelAnimationFrame(frame);
      resizeColumn(id, latest);
      savePrefs(pid, prefs);
    };
    handle.addEventListener("pointermove", onMove);
    handle.addEventListener("pointerup", onUp);
    handle.addEventListener("pointercancel", onUp);
  }

  function cellAt(row, col) {
    return table ? table.querySelector(`td[data-row="${row}"][data-col="${col}"]`) : null;
  }

  function cellAtIndex(row, col) {
    const doc = documents[row];
    const variable = variables[col];
    return doc && variable ? cells.get(key(doc.id, variable.id)) : null;
  }

  function setActive(row, col) {
    const previous = cellAt(active.row, active.col);
    if (previous) previous.tabIndex = -1;
    active = { row, col };
    const td = cellAt(row, col);
    if (td) td.tabIndex = 0;
    return td;
  }

  function focusActive({ scroll = true } = {}) {
    const td = cellAt(active.row, active.col) || cellAt(0, 0);
    if (td) {
      td.tabIndex = 0;
      td.focus({ preventScroll: true });
      if (scroll) td.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
    return td;
  }

  function activeCell() {
    return cellAtIndex(active.row, active.col);
  }

  function followFocus() {
    // The panel follows the focused cell, so reviewing is arrow, look, key.
    clearTimeout(followTimer);
    followTimer = setTimeout(() => {
      const cell = activeCell();
      if (cell && key(cell.doc.id, cell.variable.id) !== panelKey) openPanel(cell, { focusPanel: false });
    }, 150);
  }

  function move(row, col) {
    const r = Math.min(Math.max(0, row), documents.length - 1);
    const c = Math.min(Math.max(0, col), variables.length - 1);
    const td = setActive(r, c);
    if (!td) return;
    td.focus({ preventScroll: true });
    td.scrollIntoView({ block: "nearest", inline: "nearest" });
    if (!panel.hidden) followFocus();
    prefetchNeighbour(r);
  }

  // A page the keyboard is about to go on to is asked for ahead (near the end of a page, the
  // next one; near its start, the previous), so crossing a page boundary does not wait for the
  // server. Any load, review or filter change drops what was fetched ahead.
  const ahead = new Map(); // the query, as JSON → promise of its page
  let countsOf = null; // the query (as JSON) whose counts the filter bar shows
  let recountTimer = null;
  const queryKey = () => JSON.stringify(query);
  ctx.cleanup(() => clearTimeout(recountTimer));

  /** Reviews change the counts: they are asked for again once the reviewer pauses, without
   * drawing the page again (the rows stay where the keyboard is). */
  function recountLater() {
    clearTimeout(recountTimer);
    recountTimer = setTimeout(async () => {
      const asked = queryKey();
      try {
        const fresh = await get(`/projects/${pid}/results`, { ...query, limit: 1, offset: 0 }, { signal: ctx.signal });
        if (asked !== queryKey() || loading) return;
        page.counts = fresh.counts;
        page.total = fresh.total;
        renderFilters();
        renderSummary();
        renderPager();
      } catch {
        // the next load counts again
        countsOf = null;
      }
    }, RECOUNT_DELAY_MS);
  }
  function pageParams(at, { counted = true } = {}) {
    const params = { ...query, limit: prefs.pageSize, offset: at };
    if (counted && countsOf === queryKey() && page.counts) params.counts = false;
    return params;
  }
  function fetchPage(params) {
    const hit = ahead.get(JSON.stringify(params));
    ahead.clear();
    return hit || get(`/projects/${pid}/results`, params, { signal: ctx.signal });
  }
  function prefetchNeighbour(row) {
    let at = null;
    if (row >= documents.length - PREFETCH_ROWS && offset + documents.length < page.total) at = offset + prefs.pageSize;
    else if (row < PREFETCH_ROWS && offset > 0) at = Math.max(0, offset - prefs.pageSize);
    if (at === null || loading) return;
    const params = pageParams(at);
    const id = JSON.stringify(params);
    if (ahead.has(id)) return;
    const promise = get(`/projects/${pid}/results`, params, { signal: ctx.signal });
    promise.catch(() => ahead.delete(id));
    ahead.set(id, promise);
  }

  /** Another page, landing on `row` ("last" or a number) of the same column. */
  function turnPage(nextOffset, row) {
    offset = nextOffset;
    announce(`Page ${Math.floor(offset / prefs.pageSize) + 1} of ${Math.max(1, Math.ceil(page.total / prefs.pageSize))}.`);
    return load({ focus: { row, col: active.col } });
  }

  // Keys pressed while the next page is on its way wait for it, in order: they are meant for
  // the cell the keyboard lands on, not for the page leaving.
  const waitingKeys = [];
  async function replayWaitingKeys() {
    while (loading) await loading;
    while (waitingKeys.length && !loading) handleKey(waitingKeys.shift());
    if (waitingKeys.length) replayWaitingKeys();
  }

  function onGridKey(event) {
    const td = event.target.closest("td[role=gridcell]");
    if (!td || event.altKey || event.metaKey) return;
    const pressed = { key: event.key, ctrlKey: event.ctrlKey, shiftKey: event.shiftKey };
    if (loading && isGridKey(pressed)) {
      event.preventDefault();
      if (waitingKeys.length < 20) waitingKeys.push(pressed);
      if (waitingKeys.length === 1) replayWaitingKeys();
      return;
    }
    if (handleKey(pressed)) event.preventDefault();
  }

  function isGridKey({ key: name, ctrlKey }) {
    return GRID_KEYS.has(name) || (!ctrlKey && REVIEW_KEYS.has(name.toLowerCase()));
  }

  /** What a key does on the active cell; true when it was the grid's. */
  function handleKey({ key: name, ctrlKey, shiftKey }) {
    if (!documents.length) return false;
    const { row, col } = active;
    const lastRow = documents.length - 1;
    const lastCol = variables.length - 1;
    const hasNext = offset + documents.length < page.total;
    const hasPrevious = offset > 0;
    if (shiftKey && (name === "ArrowLeft" || name === "ArrowRight")) {
      const id = variables[col].id;
      resizeColumn(id, widthOf(id) + (name === "ArrowRight" ? RESIZE_STEP_PX : -RESIZE_STEP_PX), { announceIt: true });
      savePrefs(pid, prefs);
      const td = cellAt(row, col);
      if (td) td.scrollIntoView({ block: "nearest", inline: "nearest" });
      return true;
    }
    switch (name) {
      case "ArrowUp":
      case "PageUp":
        if (row === 0 && hasPrevious) turnPage(Math.max(0, offset - prefs.pageSize), "last");
        else move(row - (name === "PageUp" ? PAGE_KEY_ROWS : 1), col);
        return true;
      case "ArrowDown":
      case "PageDown":
        if (row === lastRow && hasNext) turnPage(offset + prefs.pageSize, 0);
        else move(row + (name === "PageDown" ? PAGE_KEY_ROWS : 1), col);
        return true;
      case "ArrowLeft": move(row, col - 1); return true;
      case "ArrowRight": move(row, col + 1); return true;
      case "Home": move(ctrlKey ? 0 : row, 0); return true;
      case "End": move(ctrlKey ? lastRow : row, lastCol); return true;
      case "Enter":
      case " ":
        openPanel(activeCell(), { focusPanel: true });
        return true;
      case "Escape":
        if (panel.hidden) return false;
        closePanel();
        return true;
      default:
        break;
    }
    if (ctrlKey || shiftKey) return false;
    const letter = name.toLowerCase();
    if (letter === "a") { review(activeCell(), "accepted"); return true; }
    if (letter === "r") { review(activeCell(), "rejected"); return true; }
    if (letter === "c") { openPanel(activeCell(), { correct: true }); return true; }
    return false;
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
      if (cell.dual_review) await refetchCell(cell);
    } catch (error) {
      if (error.name !== "AbortError") showError(box, error);
      return false;
    }
    refreshCell(cell);
    ahead.clear(); // fetched before this review
    recountLater();
    const words = { accepted: "Accepted", corrected: "Corrected", rejected: "Rejected" }[status];
    announce(`${words}: ${cell.variable.label} of ${cell.doc.filename}.`);
    notify(`${words} ${cell.variable.name} of ${cell.doc.filename}.`, "success");
    if (panelKey === key(cell.doc.id, cell.variable.id) && !panel.hidden) renderPanel(cell, { focusPanel: focusInPanel });
    return true;
  }

  /** The cell again from the server: its row of GET …/results, and its panel's detail. */
  async function refetchCell(cell) {
    const fresh = await get(`/projects/${pid}/results`,
      { document_id: [cell.doc.id], counts: false, limit: 1, offset: 0 }, { signal: ctx.signal });
    const row = fresh.items[0];
    const c = row && row.cells.find((x) => x.variable_id === cell.variable.id);
    if (c) Object.assign(cell, cellState(c));
    cell.detail = null;
    if (cell.extraction) await loadDetail(cell);
  }

  function closePanel(refocus = true) {
    panelToken += 1;
    panel.hidden = true;
    setChildren(panel);
    const old = panelKey;
    panelKey = null;
    if (table) table.querySelectorAll("td[aria-selected=true]").forEach((td) => td.setAttribute("aria-selected", "false"));
    if (old && refocus) focusActive();
  }

  /** The cell's current extraction in full (evidence, spans, boxes, candidates, the second
   * profile's answer), for the panel: the grid's page holds only what its cells show. */
  async function loadDetail(cell) {
    const items = await listAll(`/projects/${pid}/extractions`,
      { document_id: cell.doc.id, variable_id: cell.variable.id }, { signal: ctx.signal });
    cell.detail = currentExtraction(items);
    if (cell.detail && cell.detail.review && (!cell.review || !cell.review.created_at)) cell.review = cell.detail.review;
  }

  async function openPanel(cell, options) {
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
    const token = ++panelToken;
    const fresh = panelKey !== newKey;
    panelKey = newKey;
    panel.hidden = false;
    if (cell.extraction && !cell.detail) {
      if (fresh) setChildren(panel, h("p", { class: "muted" }, "Loading…"));
      try {
        await loadDetail(cell);
      } catch (error) {
        if (token === panelToken && error.name !== "AbortError") setChildren(panel, h("p", { class: "error" }, error.message));
        return;
      }
      if (token !== panelToken) return; // closed, or another cell opened meanwhile
    }
    if (fresh) panel.scrollTop = 0;
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
    const e = cell.detail;
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
    const dual = (e && e.dual_review) || cell.dual_review;
    const verdictWords = (review) => {
      const said = { accepted: "Accepted", corrected: "Corrected", rejected: "Rejected" }[review.status] || review.status;
      return [badge(said, review.status === "rejected" ? "bad" : "ok"),
        review.status !== "rejected" ? h("strong", { class: "panel-reviewed-value" }, ` ${review.value === null ? "not stated" : formatValue(review.value)}`) : "",
        review.created_at ? h("span", { class: "muted small" }, ` · ${formatDate(review.created_at)}`) : ""];
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

  await load({ findings: true });
  const row = documents.findIndex((d) => d.id === linked.document);
  if (row >= 0) {
    const col = Math.max(0, variables.findIndex((v) => v.id === linked.variable));
    setActive(row, col);
    if (linked.variable) await openPanel(activeCell(), { focusPanel: true });
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

