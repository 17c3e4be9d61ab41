// Export: CSV, Excel and JSON downloads in the wide and long layouts, fetched with the token as a
// blob (a plain link cannot carry the bearer token) and saved under the server's filename.

import { downloadFile } from "./api.js";
import { add, errorBox, h, notify, showError, withBusy } from "./ui.js";

const FORMATS = [
  ["csv", "CSV", "UTF-8 with a BOM, opens cleanly in Excel."],
  ["xlsx", "Excel", "One workbook: a Results sheet (wide), a Details sheet (long) and the Codebook."],
  ["json", "JSON", "Keeps the value types: numbers, true/false, lists."],
];
const LAYOUTS = [
  ["wide", "Wide", "a row per document, a column per variable"],
  ["long", "Long", "a row per document × variable, with status, evidence, page, confidence and review"],
];

export async function renderExport(ctx) {
  function exportButton(format, label, layout, words) {
    const button = h("button", {
      type: "button", "data-format": format, "data-layout": layout,
    }, `Download ${label} (${words})`);
    button.addEventListener("click", () => download(button, format, layout));
    return button;
  }

  const { project } = ctx;
  const errors = errorBox();
  const status = h("p", { class: "muted", "aria-live": "polite" });

  const flagsId = `export-flags-${project.id}`;
  const flagsBox = h("input", { type: "checkbox", id: flagsId });

  async function download(button, format, layout) {
    showError(errors, null);
    status.textContent = "";
    const query = { format, layout };
    if (flagsBox.checked && format !== "xlsx" && layout === "wide") query.flags = "true";
    try {
      const file = await withBusy(button, "Preparing…", () => downloadFile(
        `/projects/${project.id}/export`, query, `quarry-${layout}.${format}`));
      status.textContent = `Downloaded ${file.name}.`;
      notify(`Downloaded ${file.name}.`, "success");
    } catch (error) {
      if (error.name !== "AbortError") showError(errors, error);
    }
  }

  add(ctx.root, 
    h("h2", { tabindex: "-1" }, "Export"),
    h("p", {}, "Reviewed values are used where a cell was reviewed; otherwise the latest extracted value. ",
      "Cells that are not stated are left empty."),
    h("table", { class: "data export-table" },
      h("caption", { class: "visually-hidden" }, "Downloads by format and layout"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Format"),
        LAYOUTS.map(([, label, hint]) => h("th", { scope: "col" }, label, h("div", { class: "muted small" }, hint))))),
      h("tbody", {}, FORMATS.map(([format, label, hint]) => h("tr", {},
        h("th", { scope: "row" }, label, h("div", { class: "muted small" }, hint)),
        // One workbook holds both layouts: one button, not two that download the same file.
        format === "xlsx"
          ? h("td", { colspan: String(LAYOUTS.length) }, exportButton(format, label, "wide", "both layouts"))
          : LAYOUTS.map(([layout, layoutLabel]) => h("td", {},
            exportButton(format, label, layout, layoutLabel.toLowerCase()))))))),
    h("p", { class: "field-inline" }, flagsBox,
      h("label", { for: flagsId }, " Wide CSV and JSON: add a ", h("code", {}, "<name>__flag"),
        " column after each variable (failed, not stated, ungrounded, low confidence…)")),
    errors,
    status,
  );
}
