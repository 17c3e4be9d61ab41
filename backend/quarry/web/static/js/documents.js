// Documents: drag-and-drop or picker upload of many files with per-file progress, status
// polling until parsing settles, the document list, and a page-by-page text viewer.

import { del, get, listAll, request, uploadDocuments } from "./api.js";
import {
  add, badge, confirmDialog, DOCUMENT_STATUS_LABELS, errorBox, formatBytes, formatDate,
  formatNumber, h, notify, pager, scrollToWithin, setChildren, showError, uid,
} from "./ui.js";

const PAGE_SIZE = 50;
const LIST_PAGE = 500; // the API's largest page
const PARALLEL_UPLOADS = 3;
// Small files go several to a request (the API takes up to 100 a request): 200 notes are 20
// requests, not 200 against the API's per-minute limit.
const SMALL_FILE_BYTES = 512 * 1024;
const FILES_PER_REQUEST = 10;
const POLL_MS = 1000;
const ACCEPT = ".pdf,.docx,.txt,.md,.markdown,application/pdf,text/plain,text/markdown,"
  + "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

function statusBadge(doc) {
  const kind = { ready: "ok", failed: "bad", parsing: "busy", uploaded: "busy" }[doc.status];
  return badge(DOCUMENT_STATUS_LABELS[doc.status] || doc.status, kind);
}

/** The document's notes (how it was read, e.g. a text file named .docx), or null. */
function documentNotes(doc) {
  const notes = doc.notes || [];
  return notes.length ? h("span", { class: "note" }, ` ${notes.join(" ")}`) : null;
}

export async function renderDocuments(ctx) {
  const { project } = ctx;
  const base = `/projects/${project.id}/documents`;
  let offset = 0;
  const tracked = new Map(); // document id → upload row updater (or null), until parsing settles
  let pollTimer = null;
  let activeUploads = 0;

  const warnOnLeave = (event) => {
    if (activeUploads > 0) {
      event.preventDefault();
      event.returnValue = "";
    }
  };
  window.addEventListener("beforeunload", warnOnLeave);
  ctx.cleanup(() => {
    window.removeEventListener("beforeunload", warnOnLeave);
    clearTimeout(pollTimer);
  });

  // -- the upload area --------------------------------------------------------------------------
  const inputId = uid("files");
  const input = h("input", { id: inputId, type: "file", multiple: true, accept: ACCEPT });
  const uploads = h("ul", { class: "uploads", "aria-label": "Uploads" });
  // Many files at once: one summary line, and the per-file list folded away.
  const uploadSummary = h("p", { class: "upload-summary", role: "status", "aria-live": "polite" });
  const uploadListLabel = h("summary", {}, "Files");
  const uploadList = h("details", { class: "upload-list", hidden: true }, uploadListLabel, uploads);
  const tally = { files: 0, sent: 0, failed: 0, duplicates: 0, bytes: 0, bytesSent: 0 };
  const FOLD_AT = 10;
  // Progress events come by the hundred a second while many files go: the rows and the
  // summary they change are drawn once a frame, not once an event (the page froze).
  const staleRows = new Set();
  let frame = 0;
  function redraw(drawRow) {
    if (drawRow) staleRows.add(drawRow);
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      for (const draw of staleRows) draw();
      staleRows.clear();
      renderTally();
    });
  }
  ctx.cleanup(() => cancelAnimationFrame(frame));
  const dropzone = h(
    "div",
    { class: "dropzone", "data-needs": "edit" },
    h("p", {}, "Drag PDF, DOCX, TXT or Markdown files here, or choose them (many at once)."),
    h("div", { class: "field" }, h("label", { for: inputId }, "Choose files to upload"), input),
  );
  input.addEventListener("change", () => {
    startUploads([...input.files]);
    input.value = "";
  });
  dropzone.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dropzone.classList.add("dragging");
  });
  dropzone.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    dropzone.classList.add("dragging");
  });
  dropzone.addEventListener("dragleave", (event) => {
    if (!dropzone.contains(event.relatedTarget)) dropzone.classList.remove("dragging");
  });
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("dragging");
    const files = [...(event.dataTransfer ? event.dataTransfer.files : [])];
    if (files.length) startUploads(files);
  });

  const listErrors = errorBox();
  const table = h("div", { class: "documents" });
  add(ctx.root, 
    h("h2", { tabindex: "-1" }, "Documents"),
    dropzone,
    uploadSummary,
    uploadList,
    h("h3", {}, "In this project"),
    listErrors,
    table,
  );

  function renderTally() {
    const busy = tally.sent < tally.files;
    const parts = [
      `${busy ? "Uploading" : "Uploaded"} ${formatNumber(tally.sent)} of ${formatNumber(tally.files)}`,
      `${formatBytes(tally.bytesSent)} of ${formatBytes(tally.bytes)}`,
    ];
    if (tally.failed) parts.push(`${formatNumber(tally.failed)} failed`);
    if (tally.duplicates) parts.push(`${formatNumber(tally.duplicates)} already in the project`);
    uploadSummary.textContent = parts.join(" · ");
    uploadListLabel.textContent = `Files (${formatNumber(tally.files)})`;
  }

  function uploadRow(file) {
    const progress = h("progress", { max: 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const status = h("span", { class: "upload-status" }, "Waiting");
    let counted = 0; // bytes of this file in tally.bytesSent
    let uploading = null; // the fraction sent, until the next frame draws it
    const row = h("li", { class: "upload" },
      h("span", { class: "upload-name" }, file.name),
      h("span", { class: "muted small" }, formatBytes(file.size)),
      progress, status);
    const sent = (bytes) => {
      tally.bytesSent += bytes - counted;
      counted = bytes;
    };
    const drawProgress = () => {
      if (uploading === null) return;
      progress.value = uploading;
      status.textContent = `Uploading ${Math.round(uploading * 100)}%`;
      uploading = null;
    };
    return {
      element: row,
      progress(fraction) {
        uploading = fraction;
        sent(Math.round(fraction * file.size));
        redraw(drawProgress);
      },
      uploaded(doc) {
        uploading = null;
        sent(file.size);
        tally.sent += 1;
        if (doc.duplicate_of) tally.duplicates += 1;
        redraw();
        this.document(doc);
      },
      document(doc) {
        progress.value = 1;
        row.dataset.status = doc.status;
        if (doc.duplicate_of) {
          row.dataset.status = "duplicate";
          setChildren(status, badge("Already in the project", "ok"), ` as ${doc.filename}; nothing new was stored.`);
        } else if (doc.status === "ready") {
          const pages = doc.page_count === 1 ? "1 page" : `${doc.page_count} pages`;
          setChildren(status, badge("Ready", "ok"), ` ${pages}`, documentNotes(doc));
        } else if (doc.status === "failed") {
          setChildren(status, badge("Failed", "bad"), ` ${doc.error || ""}`);
        } else {
          setChildren(status, badge(DOCUMENT_STATUS_LABELS[doc.status] || doc.status, "busy"));
        }
      },
      rejected(error) {
        uploading = null;
        row.dataset.status = "rejected";
        progress.value = 0;
        sent(0);
        tally.sent += 1;
        tally.failed += 1;
        redraw();
        setChildren(status, badge("Not uploaded", "bad"), ` ${error.message}`);
      },
    };
  }

  /** The files in requests: small ones together (up to FILES_PER_REQUEST), big ones alone. */
  function requests(entries) {
    const out = [];
    let group = [];
    for (const entry of entries) {
      if (entry.file.size > SMALL_FILE_BYTES) {
        out.push([entry]);
        continue;
      }
      group.push(entry);
      if (group.length === FILES_PER_REQUEST) {
        out.push(group);
        group = [];
      }
    }
    if (group.length) out.push(group);
    return out;
  }

  async function send(group) {
    const onProgress = (fraction) => group.forEach(({ row }) => row.progress(fraction));
    const docs = await uploadDocuments(project.id, group.map(({ file }) => file), onProgress).promise;
    group.forEach(({ row }, index) => {
      const doc = docs[index];
      row.uploaded(doc);
      const waiting = doc.status === "uploaded" || doc.status === "parsing";
      if (waiting && !doc.duplicate_of) tracked.set(doc.id, row);
    });
    schedulePoll(0);
  }

  async function startUploads(files) {
    tally.files += files.length;
    tally.bytes += files.reduce((sum, file) => sum + file.size, 0);
    uploadList.hidden = false;
    uploadList.open = tally.files <= FOLD_AT;
    const entries = files.map((file) => ({ file, row: uploadRow(file) }));
    // Newest first, put in at once.
    uploads.prepend(...entries.map(({ row }) => row.element).reverse());
    const queue = requests(entries);
    renderTally();
    let next = 0;
    const lane = async () => {
      while (next < queue.length) {
        const group = queue[next];
        next += 1;
        activeUploads += 1;
        try {
          try {
            await send(group);
          } catch (error) {
            // A request's files are taken all or none: one bad file refuses the others, so
            // they go again one by one and only the bad one is refused.
            if (group.length === 1 || error.name === "AbortError" || !(error.status >= 400 && error.status < 500)) throw error;
            for (const entry of group) {
              try {
                await send([entry]);
              } catch (alone) {
                entry.row.rejected(alone);
              }
            }
          }
        } catch (error) {
          group.forEach(({ row }) => row.rejected(error));
        } finally {
          activeUploads -= 1;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_UPLOADS, queue.length) }, lane));
    await loadTable();
  }

  // -- polling until every tracked document is ready or failed -----------------------------------
  // One poll at a time: two running side by side (each finished upload asks for one) let an
  // older answer put back a "parsing" that a newer one had already seen end, and that row
  // then waited for ever.
  let polling = false;
  let pollAgain = false;
  function schedulePoll(delay = POLL_MS) {
    if (ctx.signal.aborted) return;
    if (polling) {
      pollAgain = true;
      return;
    }
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, delay);
  }

  /**
   * The documents of `ids` as they are now, read from the end of the list (oldest first, so
   * those just uploaded are last): a page or two, not a request per document, which ran into
   * the API's request limit with a few hundred files.
   */
  async function currentDocuments(ids) {
    const found = new Map();
    let end = (await get(base, { limit: 1, offset: 0 }, { signal: ctx.signal })).total;
    // Not the whole of a large project for one document deleted meanwhile: what is not
    // found in these pages is asked for on its own.
    let pages = Math.ceil(ids.size / LIST_PAGE) + 1;
    while (end > 0 && found.size < ids.size && pages > 0) {
      pages -= 1;
      const offset = Math.max(0, end - LIST_PAGE);
      const page = await get(base, { limit: end - offset, offset }, { signal: ctx.signal });
      for (const doc of page.items) if (ids.has(doc.id)) found.set(doc.id, doc);
      end = offset;
    }
    return found;
  }

  async function poll() {
    if (ctx.signal.aborted || !tracked.size) return;
    polling = true;
    pollAgain = false;
    try {
      // Two filtered lists say which documents are still unsettled, however many there are.
      const [waiting, parsing] = await Promise.all([
        listAll(base, { status: "uploaded" }, { signal: ctx.signal }),
        listAll(base, { status: "parsing" }, { signal: ctx.signal }),
      ]);
      const unsettled = new Map([...waiting, ...parsing].map((d) => [d.id, d]));
      const settledIds = new Set([...tracked.keys()].filter((id) => !unsettled.has(id)));
      const settled = settledIds.size ? await currentDocuments(settledIds) : new Map();
      let settledAny = false;
      for (const [id, row] of [...tracked]) {
        // Uploaded after the lists were read, or deleted meanwhile: asked for on its own.
        const doc = unsettled.get(id) || settled.get(id)
          || await get(`${base}/${id}`, {}, { signal: ctx.signal })
            .catch((error) => (error.status === 404 ? { id, status: "deleted" } : Promise.reject(error)));
        if (doc.status === "deleted") {
          tracked.delete(id);
          continue;
        }
        if (row) row.document(doc);
        if (doc.status === "ready" || doc.status === "failed") {
          tracked.delete(id);
          settledAny = true;
        }
      }
      if (settledAny) await loadTable();
    } catch (error) {
      if (error.name === "AbortError") return;
      showError(listErrors, error);
    } finally {
      polling = false;
    }
    if (tracked.size) schedulePoll(pollAgain ? 0 : POLL_MS);
  }

  // -- the document list ------------------------------------------------------------------------
  let shownTable = null; // the page of the list on screen, as the API answered it
  async function loadTable() {
    if (ctx.signal.aborted) return;
    let page;
    try {
      page = await get(base, { limit: PAGE_SIZE, offset }, { signal: ctx.signal });
    } catch (error) {
      if (error.name !== "AbortError") showError(listErrors, error);
      return;
    }
    showError(listErrors, null);
    if (!page.items.length && offset > 0) {
      offset = Math.max(0, offset - PAGE_SIZE);
      await loadTable();
      return;
    }
    for (const doc of page.items) {
      if ((doc.status === "uploaded" || doc.status === "parsing") && !tracked.has(doc.id)) {
        tracked.set(doc.id, null);
        schedulePoll();
      }
    }
    // Asked again as each batch of uploads settles: the same page is not drawn again (a
    // table of 50 rows laid out and painted anew every second kept the page busy).
    const signature = JSON.stringify(page);
    if (signature === shownTable) return;
    shownTable = signature;
    if (!page.items.length) {
      setChildren(table, h("p", { class: "empty" }, "No documents yet. Upload some above."));
      return;
    }
    setChildren(table, 
      h("table", { class: "data" },
        h("caption", { class: "visually-hidden" }, "Documents in this project"),
        h("thead", {}, h("tr", {},
          ["Filename", "Status", "Pages", "Size", "Uploaded"].map((t) => h("th", { scope: "col" }, t)),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
        h("tbody", {}, page.items.map((doc) => h("tr", { "data-document-id": doc.id, "data-status": doc.status },
          h("th", { scope: "row" }, doc.status === "ready"
            ? h("a", { href: `#/projects/${project.id}/documents/${doc.id}` }, doc.filename)
            : doc.filename),
          h("td", {}, statusBadge(doc), doc.status === "failed" && doc.error
            ? h("span", { class: "reason" }, ` ${doc.error}`) : null, documentNotes(doc)),
          h("td", { class: "num" }, doc.page_count ?? ""),
          h("td", { class: "num nowrap" }, formatBytes(doc.size_bytes)),
          h("td", { class: "nowrap" }, formatDate(doc.created_at)),
          h("td", { class: "row-actions" },
            doc.status === "ready"
              ? h("a", { class: "button", href: `#/projects/${project.id}/documents/${doc.id}`, "aria-label": `View the text of ${doc.filename}` }, "View text")
              : null,
            h("button", {
              type: "button", class: "danger-quiet", "data-needs": "edit", "aria-label": `Delete ${doc.filename}`,
              onclick: () => remove(doc),
            }, "Delete")))))),
      pager(page, (next) => { offset = next; loadTable(); }, "documents"),
    );
  }

  async function remove(doc) {
    const ok = await confirmDialog({
      title: `Delete “${doc.filename}”?`,
      message: "Its extracted values and reviews are deleted too. This cannot be undone.",
      confirmLabel: "Delete document",
      danger: true,
    });
    if (!ok) return;
    try {
      await del(`${base}/${doc.id}`);
      tracked.delete(doc.id);
      notify(`“${doc.filename}” deleted.`, "success");
      await loadTable();
      input.focus();
    } catch (error) {
      showError(listErrors, error);
    }
  }

  await loadTable();
}

// -- reading a document's text --------------------------------------------------------------------

/**
 * A page-by-page viewer of a document's text (as GET …/documents/{id}/text answers it).
 * `highlight` = {start, end} in whole-document character offsets marks the evidence.
 * Returns {element, show(pageNumber)}.
 */
export function pageViewer(text, { page = 1, highlight = null, label = "Document text", onPage } = {}) {
  const pages = text.pages || [];
  const select = h("select", { "aria-label": "Page" },
    pages.map((p) => h("option", { value: String(p.number) }, String(p.number))));
  const prev = h("button", { type: "button", "aria-label": "Previous page" }, "‹ Previous");
  const next = h("button", { type: "button", "aria-label": "Next page" }, "Next ›");
  const body = h("pre", { class: "doctext", tabindex: "0", "aria-label": label });
  const nav = h("div", { class: "page-nav" }, prev,
    h("span", {}, h("span", { "aria-hidden": "true" }, "Page "), select, ` of ${pages.length}`), next);
  const element = h("div", { class: "page-viewer" }, pages.length > 1 ? nav : null, body);
  let current = 1;

  function show(number) {
    if (!pages.length) {
      setChildren(body, h("span", { class: "muted" }, "This document has no text."));
      return;
    }
    const index = Math.min(Math.max(1, number), pages.length) - 1;
    const p = pages[index];
    current = p.number;
    select.value = String(p.number);
    prev.disabled = index === 0;
    next.disabled = index === pages.length - 1;
    const start = highlight ? highlight.start - p.char_start : -1;
    const end = highlight ? highlight.end - p.char_start : -1;
    if (highlight && end > 0 && start < p.text.length) {
      const from = Math.max(0, start);
      const to = Math.min(p.text.length, end);
      const mark = h("mark", { class: "evidence" }, p.text.slice(from, to));
      setChildren(body, p.text.slice(0, from), mark, p.text.slice(to));
      requestAnimationFrame(() => scrollToWithin(body, mark));
    } else {
      setChildren(body, p.text);
      body.scrollTop = 0;
    }
    if (onPage) onPage(p.number);
  }
  prev.addEventListener("click", () => show(current - 1));
  next.addEventListener("click", () => show(current + 1));
  select.addEventListener("change", () => show(Number(select.value)));
  show(page);
  return { element, show };
}

const SVG = "http://www.w3.org/2000/svg";
/** Pixels wide the page images are asked for (sharp on a panel, a few hundred kB). */
const PAGE_IMAGE_WIDTH = 1200;

/** Whether a document has page images (GET …/pages/{n}/image): PDFs and images. */
export function hasPageImages(doc) {
  return doc.status === "ready" && (doc.content_type === "application/pdf" || doc.content_type.startsWith("image/"));
}

/**
 * A document's pages as images, with `boxes` ([{page, x0, y0, x1, y1}] in page units, as an
 * extraction's evidence has them) drawn over their page and scrolled into view. The boxes sit
 * in an SVG whose viewBox is the page in page units, so they scale with the image.
 * Returns {element, show(page), close()}; close() frees the images.
 */
export function pageImageViewer(projectId, doc, text, { page = 1, boxes = [], label = "Page image", signal } = {}) {
  const pages = text.pages || [];
  const select = h("select", { "aria-label": "Page" },
    pages.map((p) => h("option", { value: String(p.number) }, String(p.number))));
  const prev = h("button", { type: "button", "aria-label": "Previous page" }, "‹ Previous");
  const next = h("button", { type: "button", "aria-label": "Next page" }, "Next ›");
  const stage = h("div", { class: "page-stage", tabindex: "0", "aria-label": label });
  const caption = h("p", { class: "muted small page-caption" });
  const nav = h("div", { class: "page-nav" }, prev,
    h("span", {}, h("span", { "aria-hidden": "true" }, "Page "), select, ` of ${pages.length}`), next);
  const element = h("div", { class: "page-image-viewer" }, pages.length > 1 ? nav : null, stage, caption);
  const urls = [];
  let current = 1;
  let shown = 0;

  async function show(number) {
    if (!pages.length) {
      setChildren(stage, h("span", { class: "muted" }, "This document has no pages."));
      return;
    }
    const index = Math.min(Math.max(1, number), pages.length) - 1;
    const p = pages[index];
    current = p.number;
    const ticket = ++shown;
    select.value = String(p.number);
    prev.disabled = index === 0;
    next.disabled = index === pages.length - 1;
    setChildren(stage, h("p", { class: "muted" }, `Loading page ${p.number}…`));
    let url;
    try {
      const response = await request("GET", `/projects/${projectId}/documents/${doc.id}/pages/${p.number}/image`,
        { query: { width: PAGE_IMAGE_WIDTH }, signal });
      url = URL.createObjectURL(await response.blob());
      urls.push(url);
    } catch (error) {
      if (error.name === "AbortError" || ticket !== shown) return;
      setChildren(stage, h("p", { class: "error" }, error.message));
      return;
    }
    if (ticket !== shown) return;
    const img = h("img", { src: url, alt: `Page ${p.number} of ${doc.filename}`, class: "page-image" });
    const onPage = boxes.filter((box) => box.page === p.number);
    const frame = h("div", { class: "page-frame" }, img);
    if (p.width && p.height) {
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("class", "page-boxes");
      svg.setAttribute("viewBox", `0 0 ${p.width} ${p.height}`);
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("aria-hidden", "true");
      const pad = Math.max(p.width, p.height) / 400;
      for (const box of onPage) {
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("class", "evidence-box");
        rect.setAttribute("x", String(box.x0 - pad));
        rect.setAttribute("y", String(box.y0 - pad));
        rect.setAttribute("width", String(box.x1 - box.x0 + 2 * pad));
        rect.setAttribute("height", String(box.y1 - box.y0 + 2 * pad));
        svg.append(rect);
      }
      frame.append(svg);
    }
    setChildren(stage, frame);
    const source = p.text_source === "ocr"
      ? `read by OCR${p.ocr_confidence !== null && p.ocr_confidence !== undefined ? ` (confidence ${Math.round(p.ocr_confidence)} %)` : ""}`
      : p.text_source === "text_layer" ? "text from the PDF's text layer" : "";
    caption.textContent = [onPage.length ? "The evidence is outlined on the page." : "", source ? `Page ${p.number}: ${source}.` : "", p.note || ""]
      .filter(Boolean).join(" ");
    img.addEventListener("load", () => {
      const first = frame.querySelector("rect.evidence-box");
      if (first) scrollToWithin(stage, first);
    }, { once: true });
  }
  prev.addEventListener("click", () => show(current - 1));
  next.addEventListener("click", () => show(current + 1));
  select.addEventListener("change", () => show(Number(select.value)));
  show(page);
  return {
    element,
    show,
    close() { for (const url of urls.splice(0)) URL.revokeObjectURL(url); },
  };
}

export async function renderDocumentText(ctx, documentId) {
  const { project } = ctx;
  const base = `/projects/${project.id}/documents/${documentId}`;
  const [doc, text] = await Promise.all([
    get(base, {}, { signal: ctx.signal }),
    get(`${base}/text`, {}, { signal: ctx.signal }),
  ]);
  const page = Number(ctx.query.get("page")) || 1;
  const viewer = pageViewer(text, {
    page,
    label: `Text of ${doc.filename}`,
    onPage: (number) => {
      const hash = `#/projects/${project.id}/documents/${documentId}?page=${number}`;
      if (window.location.hash !== hash) history.replaceState(null, "", hash);
    },
  });
  add(ctx.root, 
    h("p", {}, h("a", { href: `#/projects/${project.id}/documents` }, "← All documents")),
    h("h2", { tabindex: "-1" }, doc.filename),
    h("p", { class: "muted" }, statusBadge(doc), " ",
      `${text.page_count} ${text.page_count === 1 ? "page" : "pages"} · ${formatBytes(doc.size_bytes)}`,
      doc.error ? ` · ${doc.error}` : "", documentNotes(doc)),
    viewer.element,
  );
}
