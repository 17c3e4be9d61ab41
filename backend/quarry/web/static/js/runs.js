// Runs: choose documents and variables, see the estimated size, start; a live progress bar fed
// by server-sent events; counts; cancel; retry failed; the processing log.

import { ApiError, api, get, listAll, post, readEventStream, sleep } from "./api.js";
import { can } from "./access.js";
import {
  add, badge, confirmDialog, errorBox, formatDate, formatNumber, formatTime, formatUsd, h,
  humanize, notify, pager, RUN_STATUS_LABELS, setChildren, showError, uid, withBusy,
} from "./ui.js";

const ACTIVE = new Set(["preparing", "queued", "running"]);
const PAGE_SIZE = 20;
const RECONNECT_MS = 2000;
const SETTLE_POLL_MS = 2000;

function runBadge(status) {
  const kind = {
    preparing: "busy", queued: "busy", running: "busy", completed: "ok",
    completed_with_errors: "warn",
    failed: "bad", cancelled: "muted",
  }[status];
  return badge(RUN_STATUS_LABELS[status] || status, kind);
}

/** Cost-like fields a run may carry (cost_usd, budget_usd, …), shown when present. */
function costEntries(run) {
  return Object.entries(run).filter(([key, value]) =>
    /(cost|budget)/i.test(key) && value !== null && value !== undefined && typeof value !== "object");
}

function formatField(key, value) {
  if (/usd$/i.test(key)) return formatUsd(value);
  if (typeof value === "number") return formatNumber(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

/** Extractions that ran to an end (cancelled ones are shown apart: they did not run). */
function finished(run) {
  return run.counts.succeeded + run.counts.not_found + run.counts.failed;
}

function share(run) {
  return run.total ? finished(run) / run.total : 1;
}

function percent(run) {
  return `${Math.floor(share(run) * 100)}%`;
}

/** "40% · 320 of 800 extractions done · 480 cancelled" */
function progressWords(run) {
  const cancelled = run.counts.cancelled;
  return `${percent(run)} · ${formatNumber(finished(run))} of ${formatNumber(run.total)} extractions done`
    + (cancelled ? ` · ${formatNumber(cancelled)} cancelled` : "");
}

// -- the runs page: start a run, list runs ---------------------------------------------------------

export async function renderRuns(ctx) {
  const { project } = ctx;
  const base = `/projects/${project.id}/runs`;
  const [documents, variablesPage] = await Promise.all([
    listAll(`/projects/${project.id}/documents`, { status: "ready" }, { signal: ctx.signal }),
    get(`/projects/${project.id}/variables`, {}, { signal: ctx.signal }),
  ]);
  const variables = variablesPage.items;

  add(ctx.root, h("h2", { tabindex: "-1" }, "Runs"));
  if (!documents.length || !variables.length) {
    add(ctx.root, h("div", { class: "notice" }, !variables.length
      ? h("p", {}, "Define the codebook first: ", h("a", { href: `#/projects/${project.id}/codebook` }, "add variables"), ".")
      : h("p", {}, "No document is ready yet: ", h("a", { href: `#/projects/${project.id}/documents` }, "upload documents"), ".")));
  } else if (can(project, "edit")) {
    add(ctx.root, startForm(ctx, documents, variables));
  } else {
    add(ctx.root, h("p", { class: "muted" }, `Starting a run needs the editor role; you are ${
      /^[aeiou]/.test(project.role) ? "an" : "a"} ${project.role} here.`));
  }

  const listErrors = errorBox();
  const list = h("div", { class: "runs" });
  add(ctx.root, h("h3", {}, "Previous runs"), listErrors, list);
  let offset = 0;
  let refreshTimer = null;
  ctx.cleanup(() => clearTimeout(refreshTimer));

  async function load() {
    clearTimeout(refreshTimer);
    let page;
    try {
      page = await get(base, { limit: PAGE_SIZE, offset }, { signal: ctx.signal });
    } catch (error) {
      if (error.name !== "AbortError") showError(listErrors, error);
      return;
    }
    showError(listErrors, null);
    if (!page.items.length) {
      setChildren(list, h("p", { class: "empty" }, "No runs yet."));
      return;
    }
    const costKeys = [...new Set(page.items.flatMap((run) => costEntries(run).map(([k]) => k)))];
    setChildren(list, 
      h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, "Runs of this project, newest first"),
        h("thead", {}, h("tr", {},
          ["Started", "Status", "Progress", "Succeeded", "Not found", "Failed", "Model", "Tokens"]
            .map((t) => h("th", { scope: "col" }, t)),
          costKeys.map((k) => h("th", { scope: "col" }, humanize(k))))),
        h("tbody", {}, page.items.map((run) => h("tr", { "data-run-id": run.id },
          h("th", { scope: "row" }, h("a", { href: `#/projects/${project.id}/runs/${run.id}` }, formatDate(run.created_at))),
          h("td", {}, runBadge(run.status)),
          h("td", { class: "nowrap" },
            h("progress", { max: 1, value: share(run), "aria-label": `Progress of the run started ${formatDate(run.created_at)}` }),
            ` ${percent(run)}`),
          h("td", { class: "num" }, run.counts.succeeded),
          h("td", { class: "num" }, run.counts.not_found),
          h("td", { class: "num" }, run.counts.failed),
          h("td", {}, run.model),
          h("td", { class: "num" }, formatNumber(run.tokens_in + run.tokens_out)),
          costKeys.map((k) => h("td", { class: "num" }, run[k] === undefined || run[k] === null ? "" : formatField(k, run[k]))),
        )))),
      pager(page, (next) => { offset = next; load(); }, "runs"),
    );
    // Keep the list fresh while a run on it is going.
    if (page.items.some((run) => ACTIVE.has(run.status)) && !ctx.signal.aborted) {
      refreshTimer = setTimeout(load, 3000);
    }
  }
  await load();
}

/** The "start a run" form: selection, estimate (dry run), start. */
function startForm(ctx, documents, variables) {
  const { project } = ctx;
  const base = `/projects/${project.id}/runs`;
  const errors = errorBox();
  const estimateBox = h("div", { class: "estimate", "aria-live": "polite" });
  const startButton = h("button", { type: "submit", class: "primary", disabled: true }, "Start run");
  let estimateFor = null; // the selection key the estimate on screen belongs to
  let estimateSeq = 0;

  function chooser(kind, items, labelOf) {
    const name = uid(kind);
    const allRadio = h("input", { type: "radio", name, value: "all", id: `${name}-all`, checked: true });
    const someRadio = h("input", { type: "radio", name, value: "some", id: `${name}-some` });
    const boxes = items.map((item) => h("input", {
      type: "checkbox", value: item.id, id: `${name}-${item.id}`, checked: true,
    }));
    const list = h("ul", { class: "checklist", hidden: true },
      items.map((item, i) => h("li", {}, boxes[i], h("label", { for: boxes[i].id }, labelOf(item)))));
    const update = () => {
      list.hidden = !someRadio.checked;
      refreshEstimate();
    };
    allRadio.addEventListener("change", update);
    someRadio.addEventListener("change", update);
    boxes.forEach((b) => b.addEventListener("change", refreshEstimate));
    const title = kind === "documents" ? "Documents" : "Variables";
    const element = h("fieldset", { class: "field" },
      h("legend", {}, title),
      h("div", { class: "radio" }, allRadio, h("label", { for: allRadio.id },
        kind === "documents" ? `All ready documents (${items.length})` : `All variables (${items.length})`)),
      h("div", { class: "radio" }, someRadio, h("label", { for: someRadio.id }, `Only some ${kind}`)),
      list);
    return {
      element,
      /** null = all (the API default), else the chosen ids. */
      selected: () => (allRadio.checked ? null : boxes.filter((b) => b.checked).map((b) => b.value)),
    };
  }

  const docChooser = chooser("documents", documents, (d) => d.filename);
  const varChooser = chooser("variables", variables, (v) => `${v.label} (${v.name})`);

  function body() {
    const out = {};
    const docs = docChooser.selected();
    const vars = varChooser.selected();
    if (docs) out.document_ids = docs;
    if (vars) out.variable_ids = vars;
    return out;
  }

  function renderEstimate(estimate, fallbackNote) {
    const rows = [];
    const nDocs = (docChooser.selected() || documents).length;
    const nVars = (varChooser.selected() || variables).length;
    const pairs = estimate && estimate.pairs !== undefined ? estimate.pairs : nDocs * nVars;
    rows.push(["Extractions (documents × variables)", `${formatNumber(pairs)} = ${nDocs} × ${nVars}`]);
    if (estimate) {
      for (const [key, value] of Object.entries(estimate)) {
        if (key === "pairs" || value === null || value === undefined || typeof value === "object") continue;
        rows.push([humanize(key), formatField(key, value)]);
      }
    }
    setChildren(estimateBox, 
      h("h4", {}, "Estimated size"),
      h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-key": k }, v)])),
      fallbackNote ? h("p", { class: "muted small" }, fallbackNote) : null,
    );
  }

  // Ticking through checkboxes should not send a dry run per click.
  let estimateTimer = null;
  function refreshEstimate() {
    estimateFor = null;
    startButton.disabled = true;
    clearTimeout(estimateTimer);
    estimateTimer = setTimeout(estimateNow, 250);
  }

  async function estimateNow() {
    const request = body();
    const key = JSON.stringify(request);
    estimateFor = null;
    startButton.disabled = true;
    showError(errors, null);
    const nDocs = (docChooser.selected() || documents).length;
    const nVars = (varChooser.selected() || variables).length;
    if (!nDocs || !nVars) {
      setChildren(estimateBox, h("p", { class: "muted" }, "Choose at least one document and one variable."));
      return;
    }
    const seq = ++estimateSeq;
    setChildren(estimateBox, h("p", { class: "muted" }, "Estimating…"));
    let estimate = null;
    let note = null;
    try {
      estimate = await post(base, { ...request, dry_run: true }, { signal: ctx.signal });
      if (estimate && estimate.id && estimate.status) {
        // A server that does not know dry runs would have started the run: go and watch it.
        ctx.navigate(`#/projects/${project.id}/runs/${estimate.id}`);
        return;
      }
    } catch (error) {
      if (error.name === "AbortError" || seq !== estimateSeq) return;
      const unknownDryRun = error instanceof ApiError && (error.status === 422
        || (error.status === 400 && /dry.?run/i.test(error.message)));
      if (!unknownDryRun) {
        setChildren(estimateBox);
        showError(errors, error);
        return;
      }
      note = "This server gives no token or cost estimate; the size is documents × variables.";
    }
    if (seq !== estimateSeq) return;
    renderEstimate(estimate, note);
    estimateFor = key;
    startButton.disabled = false;
  }

  const form = h("form", { class: "card start-run", "aria-labelledby": "start-run-title" },
    h("h3", { id: "start-run-title" }, "Start a run"),
    h("div", { class: "grid-2" }, docChooser.element, varChooser.element),
    estimateBox,
    errors,
    h("div", { class: "actions" }, startButton));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const request = body();
    if (estimateFor !== JSON.stringify(request)) return; // only start what was estimated
    showError(errors, null);
    try {
      const run = await withBusy(startButton, "Starting…", () => post(base, request));
      notify("Run started.", "success");
      ctx.navigate(`#/projects/${project.id}/runs/${run.id}`);
    } catch (error) {
      if (error.name !== "AbortError") showError(errors, error);
    }
  });
  estimateNow();
  return form;
}

// -- one run: live progress, cancel, retry, log ---------------------------------------------------

export async function renderRun(ctx, runId) {
  const { project } = ctx;
  const base = `/projects/${project.id}/runs/${runId}`;
  let run = await get(base, {}, { signal: ctx.signal });
  const seenLogIds = new Set();
  let lastLogId = 0;
  let watching = false;

  const heading = h("h2", { tabindex: "-1" }, `Run of ${formatDate(run.created_at)}`);
  const statusEl = h("span", { class: "run-status" });
  const progress = h("progress", { max: 1, value: 0, id: "run-progress" });
  const progressText = h("span", { class: "progress-text" });
  const facts = h("dl", { class: "facts counts" });
  const errorText = h("p", { class: "error", hidden: true });
  const actionErrors = errorBox();
  const cancelButton = h("button", { type: "button", class: "danger", "data-needs": "edit", onclick: cancel }, "Cancel run");
  const retryButton = h("button", { type: "button", "data-needs": "edit", onclick: () => retry() }, "Retry failed");
  // A run stopped by its budget goes on with a higher one.
  const budgetInput = h("input", { type: "number", min: "0.01", step: "0.01", id: "run-new-budget", required: true });
  const budgetForm = h("form", { class: "budget-form", "data-needs": "edit", hidden: true, onsubmit: raiseBudget },
    h("label", { for: "run-new-budget" }, "New budget (USD)"), budgetInput,
    h("button", { type: "submit" }, "Raise budget and go on"));
  // The failed extractions by reason (GET of the run; progress events omit it).
  const failureSlot = h("div", { class: "failures" });
  let failures = run.failures || null;
  const logBody = h("tbody");
  const logEmpty = h("p", { class: "empty" }, "Nothing logged yet.");
  const liveNote = h("p", { class: "muted small", "aria-live": "polite" });
  // A two-profile run's agreement per variable (GET of the run; progress events omit it).
  const agreementSlot = h("div", { class: "agreement" });
  let agreement = run.agreement || null;

  add(ctx.root, 
    h("p", {}, h("a", { href: `#/projects/${project.id}/runs` }, "← All runs")),
    heading,
    h("div", { class: "card run-card" },
      h("p", {}, "Status: ", statusEl),
      h("div", { class: "progress-row" }, h("label", { for: "run-progress" }, "Progress"), progress, progressText),
      facts,
      failureSlot,
      agreementSlot,
      errorText,
      budgetForm,
      actionErrors,
      h("div", { class: "actions" }, cancelButton, retryButton,
        h("a", { class: "button", href: `#/projects/${project.id}/results` }, "See results")),
      liveNote),
    h("h3", {}, "Log"),
    h("table", { class: "data log" },
      h("caption", { class: "visually-hidden" }, "The run's processing log, oldest first"),
      h("thead", {}, h("tr", {}, ["Time", "Level", "Message"].map((t) => h("th", { scope: "col" }, t)))),
      logBody),
    logEmpty,
  );

  let announcedStatus = null;
  function renderProgress() {
    setChildren(statusEl, runBadge(run.status));
    progress.value = share(run);
    progressText.textContent = progressWords(run);
    progress.setAttribute("aria-valuetext", progressWords(run));
    const rows = [
      ["Succeeded", run.counts.succeeded],
      ["Not found", run.counts.not_found],
      ["Failed", run.counts.failed],
      ["Pending", run.counts.pending],
      ["Running", run.counts.running],
      ["Cancelled", run.counts.cancelled],
      ["Model", run.profiles ? run.profiles.map((p) => `${p.profile} (${p.model})`).join(" and ") : run.model],
      ["Tokens in / out", `${formatNumber(run.tokens_in)} / ${formatNumber(run.tokens_out)}`],
      ...costEntries(run).map(([k, v]) => [humanize(k), formatField(k, v)]),
      ["Finished", run.finished_at ? formatDate(run.finished_at) : "—"],
    ];
    setChildren(facts, ...rows.flatMap(([k, v]) => [
      h("dt", {}, k),
      h("dd", { "data-count": k.toLowerCase().replace(/[^a-z]+/g, "_") }, String(v)),
    ]));
    if (run.agreement) agreement = run.agreement;
    renderAgreement();
    if (run.failures) failures = run.failures;
    renderFailures();
    budgetForm.hidden = !(run.budget_reached && !ACTIVE.has(run.status));
    if (!budgetForm.hidden && !budgetInput.value && run.budget_usd) {
      budgetInput.value = String(Math.round(run.budget_usd * 200) / 100); // twice the old one
    }
    errorText.hidden = !run.error;
    errorText.textContent = run.error || "";
    cancelButton.hidden = !ACTIVE.has(run.status);
    const retryable = run.counts.failed + run.counts.cancelled;
    retryButton.hidden = ACTIVE.has(run.status) || retryable === 0;
    retryButton.textContent = `Retry ${retryable} failed or cancelled`;
    if (announcedStatus !== null && announcedStatus !== run.status) {
      liveNote.textContent = `The run is now ${(RUN_STATUS_LABELS[run.status] || run.status).toLowerCase()}.`;
    }
    announcedStatus = run.status;
  }

  function renderFailures() {
    if (!failures || !failures.length || !run.counts.failed) {
      setChildren(failureSlot);
      return;
    }
    setChildren(failureSlot,
      h("h3", {}, `Why ${formatNumber(run.counts.failed)} failed`),
      h("ul", { class: "failure-reasons" }, failures.map((f) => h("li", {},
        h("strong", {}, `${formatNumber(f.count)} × `), f.reason,
        f.next_step ? h("span", { class: "next-step" }, ` ${f.next_step}`) : ""))));
  }

  function renderAgreement() {
    if (!agreement) {
      setChildren(agreementSlot);
      return;
    }
    const rate = (r) => (r === null || r === undefined ? "—" : `${Math.round(r * 1000) / 10}%`);
    const row = (name, c) => h("tr", {}, h("th", { scope: "row" }, name),
      [c.compared, c.agreed, c.disagreed, c.one_missing].map((n) => h("td", {}, formatNumber(n))),
      h("td", {}, rate(c.rate)));
    const [first, second] = agreement.profiles;
    setChildren(agreementSlot,
      h("h3", {}, `Agreement of ${first} and ${second}`),
      h("table", { class: "data agreement-table" },
        h("caption", { class: "visually-hidden" }, "How often the two profiles gave the same answer, per variable"),
        h("thead", {}, h("tr", {}, ["Variable", "Compared", "Agreed", "Disagreed", "One answered", "Agreement"]
          .map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, agreement.per_variable.map((v) => row(v.name, v)), row("All variables", agreement.overall))),
      h("p", { class: "muted small" },
        `The value shown and exported is ${first}'s; disagreements come first in review.`));
  }

  function addLog(entry) {
    if (seenLogIds.has(entry.id)) return;
    seenLogIds.add(entry.id);
    lastLogId = Math.max(lastLogId, entry.id);
    logEmpty.hidden = true;
    add(logBody, h("tr", { class: `level-${entry.level}` },
      h("td", { class: "nowrap", title: formatDate(entry.created_at) }, formatTime(entry.created_at)),
      h("td", {}, entry.level),
      h("td", {}, entry.message)));
  }

  async function loadLogs() {
    // The log is paged by id: fetch everything after the last line we have.
    for (;;) {
      const page = await get(`${base}/logs`, { after_id: lastLogId, limit: 1000 }, { signal: ctx.signal });
      page.items.forEach(addLog);
      if (page.items.length < 1000) break;
    }
  }

  /** Stream the run's events until it ends, reconnecting with Last-Event-ID when cut off. */
  async function stream() {
    let lastEventId = lastLogId ? String(lastLogId) : "";
    let ended = false;
    while (!ended && !ctx.signal.aborted) {
      try {
        liveNote.textContent = "Live: following the run as it goes.";
        lastEventId = await readEventStream(`${base}/events`, {
          signal: ctx.signal,
          lastEventId,
          onEvent: (event) => {
            let data = null;
            try {
              data = JSON.parse(event.data);
            } catch {
              return;
            }
            if (event.type === "progress") {
              run = data;
              renderProgress();
            } else if (event.type === "log") {
              addLog(data);
            } else if (event.type === "end") {
              ended = true;
            }
          },
        });
      } catch (error) {
        if (ctx.signal.aborted || error.name === "AbortError") return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 404)) {
          if (error.status === 404) showError(actionErrors, error);
          return;
        }
        liveNote.textContent = "Connection lost; reconnecting…";
      }
      if (!ended) await sleep(RECONNECT_MS, ctx.signal);
    }
  }

  /**
   * Follow the run: live while it is active, then — since calls already under way when a run
   * is cancelled still finish — by reading it every few seconds until nothing is running.
   */
  async function watch() {
    if (watching) return;
    watching = true;
    try {
      for (;;) {
        if (ACTIVE.has(run.status)) await stream();
        if (ctx.signal.aborted) return;
        run = await get(base, {}, { signal: ctx.signal });
        renderProgress();
        await loadLogs();
        if (ACTIVE.has(run.status)) continue; // retried in the meantime
        if (run.counts.running + run.counts.pending === 0) return;
        liveNote.textContent = "Waiting for the calls already under way to finish…";
        await sleep(SETTLE_POLL_MS, ctx.signal);
      }
    } catch (error) {
      if (error.name !== "AbortError") showError(actionErrors, error);
    } finally {
      watching = false;
      if (!ctx.signal.aborted) liveNote.textContent = "";
    }
  }

  async function cancel() {
    const ok = await confirmDialog({
      title: "Cancel this run?",
      message: "No new extraction will start; calls already under way finish and are kept. "
        + "You can retry the cancelled ones later.",
      confirmLabel: "Cancel run",
      danger: true,
    });
    if (!ok) return;
    showError(actionErrors, null);
    try {
      run = await withBusy(cancelButton, "Cancelling…", () => api("POST", `${base}/cancel`));
      renderProgress();
      watch();
      notify("Run cancelled.", "success");
      if (!retryButton.hidden) retryButton.focus();
    } catch (error) {
      showError(actionErrors, error);
    }
  }

  async function raiseBudget(event) {
    event.preventDefault();
    const budget = Number(budgetInput.value);
    if (!(budget > 0)) {
      showError(actionErrors, new Error("Enter a budget in US dollars, more than 0."));
      return;
    }
    await retry({ budget_usd: budget }, budgetForm.querySelector("button"));
  }

  async function retry(body = undefined, button = retryButton) {
    showError(actionErrors, null);
    try {
      run = await withBusy(button, "Retrying…", () => api("POST", `${base}/retry`, body ? { json: body } : {}));
      renderProgress();
      notify("Retrying the failed extractions.", "success");
      cancelButton.focus();
      watch();
    } catch (error) {
      showError(actionErrors, error);
    }
  }

  renderProgress();
  await loadLogs();
  if (ACTIVE.has(run.status) || run.counts.running + run.counts.pending > 0) watch();
  ctx.focusTarget = heading;
}
