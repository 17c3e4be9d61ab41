// DOM helpers, formatting, notices and dialogs. Everything is built with DOM calls and
// textContent (never innerHTML): filenames, document text and model output are untrusted, and
// the Content-Security-Policy forbids inline scripts and style attributes anyway.

const BOOLEAN_PROPS = new Set([
  "checked", "disabled", "hidden", "multiple", "readOnly", "required", "selected", "open",
]);

/**
 * Create an element: h("button", {class: "primary", onclick: fn}, "Save").
 * Keys starting with "on" add listeners; "text" sets textContent; "class" takes a string or
 * an array (falsy entries dropped); boolean properties are set as properties; null/undefined/
 * false values are skipped; everything else is an attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "value") {
      el.value = value;
    } else if (key === "for") {
      el.htmlFor = value;
    } else if (BOOLEAN_PROPS.has(key)) {
      el[key] = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Append children, skipping null/undefined/false (native append would print "null"). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

/** Replace an element's children, with the same skipping as `add`. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
/** A unique element id with a readable prefix. */
export function uid(prefix = "q") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

// -- formatting -------------------------------------------------------------------------------

export function formatBytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// One formatter each, made on first use: toLocaleString() builds a new one per call, which cost
// a millisecond a date — tens of them per table drawn, and the upload list froze the page.
const formatters = {};
function formatter(kind, make) {
  if (!formatters[kind]) formatters[kind] = make();
  return formatters[kind];
}

export function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return formatter("date", () => new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }))
    .format(date);
}

export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return formatter("time", () => new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" }))
    .format(date);
}

/** An extracted or reviewed value as a person reads it. */
export function formatValue(value) {
  if (value === null || value === undefined) return "";
  if (value === true) return "Yes";
  if (value === false) return "No";
  if (Array.isArray(value)) return value.map(formatValue).join("; ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function formatNumber(n) {
  if (n === null || n === undefined || n === "") return "";
  return typeof n === "number" ? formatter("number", () => new Intl.NumberFormat()).format(n) : String(n);
}

export function formatUsd(n) {
  if (n === null || n === undefined || n === "") return "";
  const value = Number(n);
  if (Number.isNaN(value)) return String(n);
  return `$${value.toFixed(value !== 0 && Math.abs(value) < 0.01 ? 4 : 2)}`;
}

/** "estimated_input_tokens" → "Estimated input tokens". */
export function humanize(key) {
  const text = String(key).replace(/_/g, " ").replace(/\busd\b/i, "(USD)");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export const TYPE_LABELS = {
  text: "Text",
  integer: "Integer",
  number: "Number",
  boolean: "Yes / no",
  date: "Date",
  category: "Category (one of)",
  multi_category: "Categories (any of)",
  list: "List of text",
};

export const RUN_STATUS_LABELS = {
  preparing: "Preparing",
  queued: "Queued",
  running: "Running",
  completed: "Completed",
  completed_with_errors: "Completed with errors",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const DOCUMENT_STATUS_LABELS = {
  uploaded: "Waiting to be parsed",
  parsing: "Parsing",
  ready: "Ready",
  failed: "Failed",
};

// -- notices ------------------------------------------------------------------------------------

/** A short-lived message in the polite live region (successes, background facts). */
export function notify(message, kind = "info") {
  const region = document.getElementById("toasts");
  if (!region) return;
  const toast = h("div", { class: ["toast", `toast-${kind}`] }, message);
  toast.dataset.shownAt = String(Date.now());
  region.append(toast);
  while (region.children.length > 3) region.firstElementChild.remove();
  setTimeout(() => toast.remove(), kind === "error" ? 10000 : 4000);
}

/** Leaving a page: its toasts go, except one just shown (the action that led here says so). */
export function clearToasts(keepMs = 1500) {
  const region = document.getElementById("toasts");
  if (!region) return;
  const now = Date.now();
  for (const toast of [...region.children]) {
    if (now - Number(toast.dataset.shownAt || 0) > keepMs) toast.remove();
  }
}

/** Say something to screen-reader users without showing it. */
export function announce(message) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A fresh text node after clearing makes repeated identical messages be read again.
  setTimeout(() => { region.textContent = message; }, 30);
}

/** Show an API (or any) error's human sentence in `box`, an element with role="alert". */
export function showError(box, error) {
  if (!box) return;
  if (!error) {
    box.replaceChildren();
    box.hidden = true;
    return;
  }
  const message = error && error.message ? error.message : String(error);
  const problems = (error && error.problems) || [];
  box.hidden = false;
  if (problems.length > 1) {
    box.replaceChildren(
      h("p", {}, error.code === "invalid_codebook"
        ? "The codebook was not imported and nothing was changed:"
        : "The request was not accepted:"),
      h("ul", {}, problems.map((p) => h("li", {}, p))),
    );
  } else {
    box.replaceChildren(h("p", {}, message));
  }
}

export function errorBox() {
  return h("div", { class: "error", role: "alert", hidden: true });
}

/** A button that shows `busyLabel` and is disabled while `action` runs. */
export async function withBusy(button, busyLabel, action) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  if (busyLabel) button.textContent = busyLabel;
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    if (busyLabel) button.textContent = label;
  }
}

// -- dialogs ------------------------------------------------------------------------------------

const TABBABLE = "a[href], button:not(:disabled), input:not(:disabled), select:not(:disabled), "
  + "textarea:not(:disabled), [tabindex]:not([tabindex='-1'])";

/**
 * Keep Tab and Shift+Tab inside a modal dialog: the browser makes the page behind it inert,
 * but would still let focus leave to the document itself after the last control.
 */
function trapFocus(dialog) {
  dialog.addEventListener("keydown", (event) => {
    if (event.key !== "Tab") return;
    const stops = [...dialog.querySelectorAll(TABBABLE)].filter((el) => el.getClientRects().length);
    if (!stops.length) return;
    const first = stops[0];
    const last = stops[stops.length - 1];
    if (event.shiftKey && (document.activeElement === first || !dialog.contains(document.activeElement))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  });
}

function openDialog(dialog, initialFocus) {
  const opener = document.activeElement;
  // showModal() makes it modal; saying so too helps assistive tech that reads attributes.
  dialog.setAttribute("aria-modal", "true");
  trapFocus(dialog);
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
      resolve(dialog.returnValue);
    });
    dialog.showModal();
    if (initialFocus) {
      initialFocus.focus();
      if (initialFocus instanceof HTMLInputElement) initialFocus.select();
    }
  });
}

/** Ask for confirmation; resolves true when confirmed. Focus starts on Cancel for safety. */
export async function confirmDialog({ title, message, confirmLabel = "OK", danger = false }) {
  const titleId = uid("dlg-title");
  const cancel = h("button", { type: "submit", value: "cancel", formnovalidate: true }, "Cancel");
  const dialog = h(
    "dialog",
    { class: "dialog", "aria-labelledby": titleId },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: titleId }, title),
      message ? h("p", {}, message) : null,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", value: "confirm", class: danger ? "danger" : "primary" },
          confirmLabel),
        cancel,
      ),
    ),
  );
  return (await openDialog(dialog, cancel)) === "confirm";
}

/** Ask for one line of text; resolves the trimmed text, or null when cancelled. */
export async function promptDialog({ title, label, value = "", confirmLabel = "Save", maxLength }) {
  const titleId = uid("dlg-title");
  const inputId = uid("dlg-input");
  const input = h("input", {
    id: inputId, type: "text", value, required: true, maxlength: maxLength, autocomplete: "off",
  });
  const dialog = h(
    "dialog",
    { class: "dialog", "aria-labelledby": titleId },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: titleId }, title),
      h("div", { class: "field" }, h("label", { for: inputId }, label), input),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", value: "confirm", class: "primary" }, confirmLabel),
        h("button", { type: "submit", value: "cancel", formnovalidate: true }, "Cancel"),
      ),
    ),
  );
  const result = await openDialog(dialog, input);
  return result === "confirm" ? input.value.trim() : null;
}

// -- small widgets ------------------------------------------------------------------------------

/**
 * Scroll `container` so that `target` (inside it) is in the middle of it, and move nothing else.
 * Element.scrollIntoView() would scroll every scrolled ancestor too: the review panel opened
 * scrolled down, its title clipped, and the page behind it jumped.
 */
export function scrollToWithin(container, target) {
  const outer = container.getBoundingClientRect();
  const inner = target.getBoundingClientRect();
  container.scrollTop += inner.top - outer.top - (container.clientHeight - inner.height) / 2;
  if (inner.left < outer.left || inner.right > outer.right) {
    container.scrollLeft += inner.left - outer.left - (container.clientWidth - inner.width) / 2;
  }
}

/** Previous / next pagination for an API page {total, limit, offset}. */
export function pager({ total, limit, offset }, onPage, noun = "items") {
  if (total <= limit && offset === 0) {
    return h("p", { class: "muted pager-summary" }, total === 1 ? `1 ${noun.replace(/s$/, "")}` : `${total} ${noun}`);
  }
  const first = total === 0 ? 0 : offset + 1;
  const last = Math.min(offset + limit, total);
  return h(
    "nav",
    { class: "pager", "aria-label": `Pages of ${noun}` },
    h("button", {
      type: "button", disabled: offset === 0, onclick: () => onPage(Math.max(0, offset - limit)),
    }, "Previous"),
    h("span", { class: "muted" }, `${first}–${last} of ${total} ${noun}`),
    h("button", {
      type: "button", disabled: offset + limit >= total, onclick: () => onPage(offset + limit),
    }, "Next"),
  );
}

/** A status badge: a coloured word, never colour alone. */
export function badge(text, kind) {
  return h("span", { class: ["badge", kind && `badge-${kind}`] }, text);
}
