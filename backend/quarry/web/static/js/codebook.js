// The codebook editor: add, edit, reorder and delete variables of every type, with allowed
// values and examples edited in place, inline validation, and each variable's prompt preview.

import { del, downloadFile, get, importCodebook, patch, post } from "./api.js";
import {
  add, badge, confirmDialog, errorBox, h, notify, setChildren, showError, TYPE_LABELS, uid,
  withBusy,
} from "./ui.js";

const SLUG = /^[a-z][a-z0-9_]{0,63}$/;
const RESERVED = new Set(["document_id", "filename"]);
const CATEGORICAL = new Set(["category", "multi_category"]);
const MAX_EXAMPLES = 20;
const MAX_ALLOWED = 200;

const EXAMPLE_HINTS = {
  text: "e.g. Randomised controlled trial of aspirin",
  integer: "a whole number, e.g. 120",
  number: "a number, e.g. 61.5",
  boolean: "yes or no",
  date: "e.g. 2020-03-15, 2020-03 or 2020",
  category: "one of the allowed values",
  multi_category: "allowed values separated by ;",
  list: "items separated by ;",
};

/** The slug a label suggests: "Sample size (n)" → "sample_size_n". */
function slugify(text) {
  let slug = text.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase()
    .replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "");
  if (slug && !/^[a-z]/.test(slug)) slug = `v_${slug}`;
  return slug.slice(0, 64).replace(/_+$/, "");
}

/** A stored example value as the text the example field shows. */
function exampleText(value) {
  if (Array.isArray(value)) return value.join("; ");
  if (value === null || value === undefined) return "";
  return String(value);
}

function looseKey(text) {
  return text.normalize("NFKC").toLowerCase().split(/\s+/).filter(Boolean).join(" ");
}

/** A sentence when `text` cannot be a value of `type`, else null. The server has the last word. */
function checkExampleValue(text, type, allowed) {
  const value = text.trim();
  if (!value) return "Give the example's value.";
  const plain = value.replace(/[\s,_]/g, "");
  if (type === "integer" && !/^[-+]?\d+$/.test(plain)) return "Write a whole number, e.g. 120.";
  if (type === "number" && !/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(plain)) {
    return "Write a number, e.g. 61.5 (without the unit).";
  }
  if (type === "boolean" && !/^(yes|no|true|false|y|n)$/i.test(value)) return "Write yes or no.";
  if (type === "category" || type === "multi_category") {
    const keys = new Set(allowed.map(looseKey));
    const items = type === "category" ? [value] : value.split(/[;\n]/).map((s) => s.trim()).filter(Boolean);
    const unknown = items.filter((item) => !keys.has(looseKey(item)));
    if (unknown.length) return `“${unknown[0]}” is not one of the allowed values.`;
  }
  return null;
}

export async function renderCodebook(ctx) {
  const { project } = ctx;
  const base = `/projects/${project.id}/variables`;
  let variables = [];
  let openEditor = null; // {close()} of the editor on screen, if any

  const errors = errorBox();
  const list = h("ol", { class: "variables", "aria-label": "Variables, in column order" });
  const newSlot = h("div", { class: "new-variable" });
  const addButton = h("button", { type: "button", class: "primary", "data-needs": "edit", onclick: () => startNew() },
    "Add variable");
  const fileInput = h("input", {
    type: "file", accept: ".yaml,.yml,.json,.csv,.xlsx", hidden: true,
    "aria-label": "Codebook file to import",
  });
  fileInput.addEventListener("change", () => importFile());
  const importButton = h("button", { type: "button", "data-needs": "edit", onclick: () => fileInput.click() },
    "Import codebook…");
  const formatSelect = h("select", { "aria-label": "Codebook file format" },
    h("option", { value: "yaml" }, "YAML"), h("option", { value: "json" }, "JSON"),
    h("option", { value: "xlsx" }, "Excel"), h("option", { value: "csv" }, "CSV"));
  const downloadButton = h("button", { type: "button", onclick: () => downloadCodebook() },
    "Download codebook");
  const fileStatus = h("p", { class: "muted", "aria-live": "polite" });
  add(ctx.root, 
    h("div", { class: "section-head" }, h("h2", { tabindex: "-1" }, "Codebook"),
      h("div", { class: "codebook-files" }, importButton, fileInput, formatSelect,
        downloadButton, addButton)),
    h("p", { class: "muted small" },
      "A codebook file (YAML, JSON, Excel or CSV) moves a codebook between projects: importing ",
      "one updates the variables of the same name, adds the new ones and keeps the others; ",
      "nothing changes if the file has a problem."),
    fileStatus,
    h("p", { class: "muted" },
      "Each variable becomes a column of the results. Describe it as you would to a colleague; ",
      "the order here is the column order of the export."),
    errors,
    list,
    newSlot,
  );

  async function importFile() {
    const file = fileInput.files && fileInput.files[0];
    fileInput.value = "";
    if (!file) return;
    showError(errors, null);
    fileStatus.textContent = "";
    try {
      const result = await withBusy(importButton, "Importing…",
        () => importCodebook(project.id, file, { signal: ctx.signal }));
      const parts = [["added", result.created], ["updated", result.updated],
        ["unchanged", result.unchanged], ["kept", result.kept]]
        .filter(([, names]) => names.length).map(([what, names]) => `${names.length} ${what}`);
      const message = `Imported ${file.name}: ${parts.join(", ") || "nothing to change"}.`;
      fileStatus.textContent = message;
      notify(message, "success");
      variables = result.variables;
      renderList();
    } catch (error) {
      if (error.name !== "AbortError") showError(errors, error);
    }
  }

  async function downloadCodebook() {
    showError(errors, null);
    const format = formatSelect.value;
    try {
      const file = await withBusy(downloadButton, "Preparing…", () => downloadFile(
        `/projects/${project.id}/codebook`, { format }, `codebook.${format}`));
      fileStatus.textContent = `Downloaded ${file.name}.`;
    } catch (error) {
      if (error.name !== "AbortError") showError(errors, error);
    }
  }

  async function load() {
    const page = await get(base, {}, { signal: ctx.signal });
    variables = page.items;
    renderList();
  }

  function renderList() {
    setChildren(list, ...variables.map((v, i) => card(v, i)));
    if (!variables.length) {
      add(list, h("li", { class: "empty" },
        "No variables yet. Add the first column you want extracted, such as “sample size”."));
    }
  }

  function focusInCard(variableId, label) {
    const li = list.querySelector(`li[data-variable-id="${CSS.escape(variableId)}"]`);
    if (!li) return;
    const buttons = [...li.querySelectorAll(".row-actions button")];
    const target = buttons.find((b) => b.dataset.action === label && !b.disabled)
      || buttons.find((b) => b.dataset.action === "edit");
    if (target) target.focus();
  }

  function card(v, index) {
    const previewId = uid("prompt");
    const preview = h("div", { id: previewId, class: "prompt-preview", hidden: true });
    const previewButton = h("button", {
      type: "button", "data-action": "prompt", "aria-expanded": "false", "aria-controls": previewId,
      onclick: () => togglePreview(v, previewButton, preview),
    }, "Show prompt");
    const li = h(
      "li",
      { class: "variable card", "data-variable-id": v.id },
      h("div", { class: "variable-head" },
        h("h3", {}, v.label, " ", h("code", { class: "slug" }, v.name)),
        badge(TYPE_LABELS[v.type] || v.type, "type"),
        v.unit ? badge(`unit: ${v.unit}`, "muted") : null,
        v.required ? badge("required", "muted") : null,
        h("span", { class: "muted small" }, `prompt v${v.prompt_version}`)),
      h("p", { class: "description" }, v.description),
      v.allowed_values && v.allowed_values.length
        ? h("div", { class: "allowed" }, h("span", { class: "muted" }, "Allowed values: "),
          h("ul", { class: "chips" }, v.allowed_values.map((a) => h("li", {}, a))))
        : null,
      v.examples && v.examples.length
        ? h("div", { class: "examples" }, h("span", { class: "muted" }, "Examples: "),
          h("ul", {}, v.examples.map((e) => h("li", {}, h("strong", {}, exampleText(e.value)),
            e.snippet ? h("span", { class: "muted" }, ` — “${e.snippet}”`) : null))))
        : null,
      v.instructions ? h("p", { class: "instructions" }, h("span", { class: "muted" }, "Instructions: "), v.instructions) : null,
      h("div", { class: "row-actions" },
        h("button", { type: "button", "data-action": "edit", "data-needs": "edit", "aria-label": `Edit ${v.name}`, onclick: () => startEdit(v, li) }, "Edit"),
        h("button", {
          type: "button", "data-action": "up", "data-needs": "edit", "aria-label": `Move ${v.name} up`,
          disabled: index === 0, onclick: () => move(index, -1),
        }, "Move up"),
        h("button", {
          type: "button", "data-action": "down", "data-needs": "edit", "aria-label": `Move ${v.name} down`,
          disabled: index === variables.length - 1, onclick: () => move(index, 1),
        }, "Move down"),
        previewButton,
        h("button", {
          type: "button", "data-action": "delete", "data-needs": "edit", class: "danger-quiet", "aria-label": `Delete ${v.name}`,
          onclick: () => remove(v),
        }, "Delete")),
      preview,
    );
    return li;
  }

  async function togglePreview(v, button, preview) {
    const open = button.getAttribute("aria-expanded") === "true";
    button.setAttribute("aria-expanded", String(!open));
    button.textContent = open ? "Show prompt" : "Hide prompt";
    preview.hidden = open;
    if (open) return;
    setChildren(preview, h("p", { class: "muted" }, "Loading the prompt…"));
    try {
      const [prompt, history] = await Promise.all([
        get(`${base}/${v.id}/prompt`, {}, { signal: ctx.signal }),
        get(`${base}/${v.id}/prompt-versions`, {}, { signal: ctx.signal }),
      ]);
      const runs = (n) => {
        if (n === 0) return "not used by a run yet";
        return n === 1 ? "used by 1 run" : `used by ${n} runs`;
      };
      setChildren(preview, 
        h("p", { class: "muted small" },
          `Version ${prompt.version}. The model receives the system instructions, then each `
          + "document's text, then this variable's part:"),
        h("pre", { class: "prompt", tabindex: "0", "aria-label": `Prompt for ${v.name}` }, prompt.variable_prompt),
        h("details", {}, h("summary", {}, "System instructions shared by every call"),
          h("pre", { class: "prompt", tabindex: "0" }, prompt.system)),
        history.items.length > 1
          ? h("details", { class: "prompt-history" },
            h("summary", {}, `Prompt history (${history.items.length} versions)`),
            h("ol", {}, history.items.map((version) => h("li", {},
              h("p", { class: "small" }, `Version ${version.version}`,
                version.current ? " (current)" : "", ` — ${runs(version.runs.length)}`),
              h("pre", { class: "prompt", tabindex: "0" }, version.prompt)))))
          : null,
      );
    } catch (error) {
      if (error.name === "AbortError") return;
      const box = errorBox();
      showError(box, error);
      setChildren(preview, box);
    }
  }

  async function move(index, delta) {
    const target = index + delta;
    if (target < 0 || target >= variables.length) return;
    const moved = variables[index];
    const order = [...variables];
    [order[index], order[target]] = [order[target], order[index]];
    showError(errors, null);
    list.setAttribute("aria-busy", "true");
    try {
      // No bulk reorder endpoint: give every variable whose place changed its new position.
      for (const [position, v] of order.entries()) {
        if (v.position !== position) await patch(`${base}/${v.id}`, { position });
      }
      await load();
      focusInCard(moved.id, delta < 0 ? "up" : "down");
    } catch (error) {
      showError(errors, error);
      await load().catch(() => {});
    } finally {
      list.removeAttribute("aria-busy");
    }
  }

  async function remove(v) {
    const ok = await confirmDialog({
      title: `Delete the variable “${v.name}”?`,
      message: "Its extracted values and reviews are deleted with it. This cannot be undone.",
      confirmLabel: "Delete variable",
      danger: true,
    });
    if (!ok) return;
    showError(errors, null);
    try {
      await del(`${base}/${v.id}`);
      notify(`Variable “${v.name}” deleted.`, "success");
      await load();
      addButton.focus();
    } catch (error) {
      showError(errors, error);
    }
  }

  function closeOpenEditor() {
    if (openEditor) openEditor.close();
    openEditor = null;
  }

  function startNew() {
    closeOpenEditor();
    const form = variableForm(null, {
      onSaved: async (saved) => {
        setChildren(newSlot);
        openEditor = null;
        notify(`Variable “${saved.name}” added.`, "success");
        await load();
        addButton.focus();
      },
      onCancel: () => {
        setChildren(newSlot);
        openEditor = null;
        addButton.focus();
      },
    });
    setChildren(newSlot, form.element);
    openEditor = { close: () => setChildren(newSlot) };
    form.focus();
  }

  function startEdit(v, li) {
    closeOpenEditor();
    const children = [...li.childNodes];
    const restore = () => setChildren(li, ...children);
    const form = variableForm(v, {
      onSaved: async (saved) => {
        openEditor = null;
        notify(`Variable “${saved.name}” saved.`, "success");
        await load();
        focusInCard(saved.id, "edit");
      },
      onCancel: () => {
        restore();
        openEditor = null;
        focusInCard(v.id, "edit");
      },
    });
    setChildren(li, form.element);
    openEditor = { close: restore };
    form.focus();
  }

  /** The add/edit form. `variable` is null for a new one. */
  function variableForm(variable, { onSaved, onCancel }) {
    const isNew = !variable;
    const v = variable || {
      name: "", label: "", description: "", type: "text", allowed_values: [], unit: null,
      examples: [], instructions: "", required: false,
    };
    const prefix = uid("var");
    const fields = {};

    function field(key, labelText, control, hint) {
      control.id = `${prefix}-${key}`;
      const hintEl = hint ? h("p", { class: "hint", id: `${prefix}-${key}-hint` }, hint) : null;
      const message = h("p", { class: "field-error", id: `${prefix}-${key}-error`, hidden: true });
      control.setAttribute("aria-describedby",
        [hintEl && hintEl.id, message.id].filter(Boolean).join(" "));
      const wrap = h("div", { class: "field" }, h("label", { for: control.id }, labelText),
        hintEl, control, message);
      fields[key] = { control, message, wrap };
      return wrap;
    }

    function fieldset(key, legend, body, hint) {
      const message = h("p", { class: "field-error", id: `${prefix}-${key}-error`, hidden: true });
      const hintEl = hint ? h("p", { class: "hint" }, hint) : null;
      const wrap = h("fieldset", { class: "field", "aria-describedby": message.id },
        h("legend", {}, legend), hintEl, body, message);
      fields[key] = { control: wrap, message, wrap };
      return wrap;
    }

    const label = h("input", { type: "text", value: v.label || "", maxlength: 200, autocomplete: "off" });
    const name = h("input", {
      type: "text", value: v.name, required: true, maxlength: 64, autocomplete: "off",
      spellcheck: "false",
    });
    let nameTouched = !isNew;
    name.addEventListener("input", () => { nameTouched = true; validate("name"); });
    label.addEventListener("input", () => {
      if (!nameTouched) name.value = slugify(label.value);
    });
    const description = h("textarea", { rows: 3, required: true, maxlength: 5000 }, v.description);
    description.value = v.description;
    const type = h("select", {}, Object.entries(TYPE_LABELS).map(([value, text]) =>
      h("option", { value, selected: value === v.type }, text)));
    const unit = h("input", { type: "text", value: v.unit || "", maxlength: 50, autocomplete: "off" });
    const instructions = h("textarea", { rows: 2, maxlength: 5000 });
    instructions.value = v.instructions || "";
    const required = h("input", { type: "checkbox", checked: v.required, id: `${prefix}-required` });

    // Allowed values: one text field per value, edited in place.
    const allowedList = h("ol", { class: "value-rows" });
    const addAllowed = h("button", { type: "button", onclick: () => addAllowedRow("", true) }, "Add value");
    function relabelAllowed() {
      [...allowedList.children].forEach((row, i) => {
        row.querySelector("input").setAttribute("aria-label", `Allowed value ${i + 1}`);
        row.querySelector("button").setAttribute("aria-label", `Remove allowed value ${i + 1}`);
      });
      addAllowed.disabled = allowedList.children.length >= MAX_ALLOWED;
    }
    function addAllowedRow(text, focus) {
      const input = h("input", { type: "text", value: text, maxlength: 200, autocomplete: "off" });
      const row = h("li", {}, input);
      const removeButton = h("button", {
        type: "button", class: "quiet",
        onclick: () => {
          const next = row.nextElementSibling || row.previousElementSibling;
          row.remove();
          relabelAllowed();
          validate("allowed_values");
          (next ? next.querySelector("input") : addAllowed).focus();
        },
      }, "Remove");
      add(row, removeButton);
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault(); // Enter adds the next value rather than submitting
          if (input.value.trim()) addAllowedRow("", true);
        }
      });
      input.addEventListener("change", () => validate("allowed_values"));
      add(allowedList, row);
      relabelAllowed();
      if (focus) input.focus();
    }
    (v.allowed_values || []).forEach((a) => addAllowedRow(a, false));
    const allowedValues = () => [...allowedList.querySelectorAll("input")]
      .map((i) => i.value.trim()).filter(Boolean);

    // Examples: a value and an optional snippet per row, edited in place.
    const exampleList = h("ol", { class: "example-rows" });
    const addExample = h("button", { type: "button", onclick: () => addExampleRow(null, true) }, "Add example");
    function relabelExamples() {
      [...exampleList.children].forEach((row, i) => {
        const [valueInput, snippetInput] = row.querySelectorAll("input");
        valueInput.setAttribute("aria-label", `Example ${i + 1} value`);
        snippetInput.setAttribute("aria-label", `Example ${i + 1} snippet (optional)`);
        row.querySelector("button").setAttribute("aria-label", `Remove example ${i + 1}`);
        valueInput.placeholder = EXAMPLE_HINTS[type.value] || "";
      });
      addExample.disabled = exampleList.children.length >= MAX_EXAMPLES;
    }
    function addExampleRow(example, focus) {
      const valueInput = h("input", { type: "text", value: example ? exampleText(example.value) : "", autocomplete: "off" });
      const snippetInput = h("input", {
        type: "text", value: (example && example.snippet) || "", maxlength: 2000,
        placeholder: "the passage it comes from (optional)", autocomplete: "off",
      });
      const row = h("li", {}, valueInput, snippetInput);
      add(row, h("button", {
        type: "button", class: "quiet",
        onclick: () => {
          const next = row.nextElementSibling || row.previousElementSibling;
          row.remove();
          relabelExamples();
          validate("examples");
          (next ? next.querySelector("input") : addExample).focus();
        },
      }, "Remove"));
      valueInput.addEventListener("change", () => validate("examples"));
      add(exampleList, row);
      relabelExamples();
      if (focus) valueInput.focus();
    }
    (v.examples || []).forEach((e) => addExampleRow(e, false));
    const examples = () => [...exampleList.children].map((row) => {
      const [valueInput, snippetInput] = row.querySelectorAll("input");
      return { value: valueInput.value.trim(), snippet: snippetInput.value.trim() || null };
    });

    const formErrors = errorBox();
    const save = h("button", { type: "submit", class: "primary" }, isNew ? "Save variable" : "Save changes");
    const titleId = `${prefix}-title`;
    const form = h(
      "form",
      { class: "card variable-form", "aria-labelledby": titleId, novalidate: true },
      h("h3", { id: titleId }, isNew ? "New variable" : `Edit “${v.name}”`),
      h("div", { class: "grid-2" },
        field("label", "Label", label, "The human name, e.g. “Sample size”."),
        field("name", "Column name", name, "Lower-case letters, digits and _; starts with a letter.")),
      field("description", "What to extract", description,
        "As you would tell a colleague, e.g. “Number of participants randomised”."),
      h("div", { class: "grid-2" },
        field("type", "Type", type),
        field("unit", "Unit (optional)", unit, "For numbers, e.g. years or mg.")),
      fieldset("allowed_values", "Allowed values", h("div", {}, allowedList, addAllowed),
        "Category: exactly one applies. Categories: any number apply."),
      fieldset("examples", "Examples (optional)", h("div", {}, exampleList, addExample),
        "A correct value and the passage it comes from help the model."),
      field("instructions", "Extra instructions (optional)", instructions),
      h("div", { class: "field checkbox" }, required,
        h("label", { for: required.id }, "Required: every document should state this")),
      formErrors,
      h("div", { class: "actions" }, save,
        h("button", { type: "button", onclick: () => onCancel() }, "Cancel")),
    );
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        onCancel();
      }
    });

    function showForType() {
      const t = type.value;
      fields.unit.wrap.hidden = t !== "number";
      fields.allowed_values.wrap.hidden = !CATEGORICAL.has(t);
      if (CATEGORICAL.has(t) && !allowedList.children.length) {
        addAllowedRow("", false);
        if (t === "category") addAllowedRow("", false);
      }
      relabelExamples();
    }
    type.addEventListener("change", () => {
      showForType();
      setError("allowed_values", null);
      setError("unit", null);
      if (examples().length) validate("examples");
    });
    showForType();
    description.addEventListener("change", () => validate("description"));
    unit.addEventListener("change", () => validate("unit"));

    function setError(key, message) {
      const f = fields[key];
      if (!f) return;
      f.message.textContent = message || "";
      f.message.hidden = !message;
      if (message) f.control.setAttribute("aria-invalid", "true");
      else f.control.removeAttribute("aria-invalid");
    }

    const checks = {
      name: () => {
        const value = name.value.trim();
        if (!value) return "Give the column a name.";
        if (!SLUG.test(value)) {
          return "Use lower-case letters, digits and _, starting with a letter (at most 64).";
        }
        if (RESERVED.has(value)) return `“${value}” is reserved for an export column; choose another.`;
        const clash = variables.find((other) => other.name === value && other.id !== v.id);
        if (clash) return `The project already has a variable named “${value}”.`;
        return null;
      },
      description: () => (description.value.trim() ? null : "Say what to extract."),
      unit: () => (type.value === "number" && unit.value.trim().length > 50
        ? "The unit must be at most 50 characters." : null),
      allowed_values: () => {
        if (!CATEGORICAL.has(type.value)) return null;
        const values = allowedValues();
        if (type.value === "category" && values.length < 2) {
          return "A category needs at least two allowed values.";
        }
        if (!values.length) return "Give at least one allowed value.";
        const seen = new Set();
        for (const value of values) {
          const key = looseKey(value);
          if (seen.has(key)) return `“${value}” is listed more than once.`;
          seen.add(key);
        }
        return null;
      },
      examples: () => {
        const allowed = allowedValues();
        for (const [i, example] of examples().entries()) {
          const problem = checkExampleValue(example.value, type.value, allowed);
          if (problem) return `Example ${i + 1}: ${problem}`;
        }
        return null;
      },
    };

    function validate(key) {
      const problem = checks[key] ? checks[key]() : null;
      setError(key, problem);
      return problem;
    }

    // A field already marked invalid is re-checked as the person types, so its message goes
    // away then — not on blur, where the layout shift could swallow a click on Save.
    for (const key of Object.keys(checks)) {
      fields[key].control.addEventListener("input", () => {
        if (fields[key].control.getAttribute("aria-invalid") === "true") validate(key);
      });
    }

    /** Put the API's sentence next to the field it is about, when that is clear. */
    function attachServerError(error) {
      const text = error.message || "";
      const rules = [
        [/^name:|variable named|reserved for an export column/i, "name"],
        [/^description:/i, "description"],
        [/^label:/i, "label"],
        [/allowed value|^allowed_values/i, "allowed_values"],
        [/unit/i, "unit"],
        [/^example|^examples/i, "examples"],
        [/^instructions:/i, "instructions"],
      ];
      for (const problem of error.problems && error.problems.length ? error.problems : [text]) {
        const rule = rules.find(([pattern]) => pattern.test(problem));
        if (rule) setError(rule[1], problem.replace(/^[a-z_.0-9]+: /, ""));
      }
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      showError(formErrors, null);
      const problems = Object.keys(checks).map((key) => [key, validate(key)]).filter(([, p]) => p);
      if (problems.length) {
        showError(formErrors, new Error(problems.length === 1
          ? "Please fix the highlighted field." : `Please fix the ${problems.length} highlighted fields.`));
        const first = fields[problems[0][0]].control;
        const focusable = first.matches("fieldset") ? first.querySelector("input, button") : first;
        if (focusable) focusable.focus();
        return;
      }
      const t = type.value;
      const body = {
        name: name.value.trim(),
        label: label.value.trim() || name.value.trim(),
        description: description.value.trim(),
        type: t,
        allowed_values: CATEGORICAL.has(t) ? allowedValues() : [],
        unit: t === "number" && unit.value.trim() ? unit.value.trim() : null,
        examples: examples(),
        instructions: instructions.value.trim(),
        required: required.checked,
      };
      try {
        const saved = await withBusy(save, "Saving…", () => (isNew
          ? post(base, body)
          : patch(`${base}/${v.id}`, body)));
        await onSaved(saved);
      } catch (error) {
        showError(formErrors, error);
        attachServerError(error);
        formErrors.scrollIntoView({ block: "nearest" });
      }
    });

    return {
      element: form,
      focus: () => label.focus(),
    };
  }

  await load();
}
