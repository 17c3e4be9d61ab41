// Webhooks: the project's subscriptions (a URL, or email to the owner), the signing secret shown
// once when it is made, and each webhook's delivery log with "Send again".

import { del, get, patch, post } from "./api.js";
import {
  add, badge, confirmDialog, errorBox, formatDate, h, notify, pager, setChildren, showError, withBusy,
} from "./ui.js";

const EVENTS = [
  ["run.finished", "A run finished (completed, or completed with errors)"],
  ["run.failed", "A run failed (every pair failed)"],
  ["run.budget_reached", "A run reached its budget"],
  ["document.failed", "A document could not be read"],
];
const STATUS_KIND = { delivered: "ok", failed: "bad", pending: "busy" };
const PAGE = 20;

export async function renderWebhooks(ctx) {
  const { project } = ctx;
  const base = `/projects/${project.id}/webhooks`;
  const errors = errorBox();
  const list = h("div", { class: "webhook-list" });
  const secretBox = h("div", { class: "notice", role: "status", hidden: true });
  const log = h("section", { class: "delivery-log", "aria-label": "Deliveries", hidden: true });

  // -- the form ---------------------------------------------------------------------------------
  const url = h("input", {
    id: "webhook-url", type: "url", required: true, placeholder: "https://example.org/hooks/quarry",
    autocomplete: "off",
  });
  const secret = h("input", {
    id: "webhook-secret", type: "text", minlength: "16", autocomplete: "off",
    placeholder: "leave empty to have one generated",
  });
  const boxes = EVENTS.map(([name, label]) => {
    const input = h("input", { type: "checkbox", name: "events", value: name, checked: name === "run.finished" });
    return { input, row: h("label", { class: "check" }, input, " ", h("code", {}, name), " — ", label) };
  });
  const channel = h("select", { id: "webhook-channel" },
    h("option", { value: "webhook" }, "A URL (signed JSON)"),
    h("option", { value: "email" }, "Email to the project owner (if the server sends email)"));
  const urlField = h("div", { class: "field" }, h("label", { for: "webhook-url" }, "URL"), url);
  const secretField = h("div", { class: "field" },
    h("label", { for: "webhook-secret" }, "Signing secret (optional)"), secret);
  channel.addEventListener("change", () => {
    const email = channel.value === "email";
    urlField.hidden = email;
    secretField.hidden = email;
    url.required = !email;
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Add webhook");
  const form = h("form", { class: "webhook-form", "aria-label": "Add a webhook" },
    h("div", { class: "field" }, h("label", { for: "webhook-channel" }, "Send to"), channel),
    urlField,
    h("fieldset", {}, h("legend", {}, "Events"), boxes.map((b) => b.row)),
    secretField,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(errors, null);
    const events = boxes.filter((b) => b.input.checked).map((b) => b.input.value);
    const body = channel.value === "email"
      ? { channel: "email", events }
      : { url: url.value.trim(), events };
    if (secret.value && channel.value !== "email") body.secret = secret.value;
    try {
      const created = await withBusy(submit, "Adding…", () => post(base, body));
      url.value = "";
      secret.value = "";
      if (created.secret) showSecret(created);
      notify("Webhook added.", "success");
      await refresh();
    } catch (error) {
      showError(errors, error);
    }
  });

  function showSecret(created) {
    secretBox.hidden = false;
    setChildren(secretBox,
      h("p", {}, "The signing secret of ", h("code", {}, created.url), " — copy it now: it is not shown again."),
      h("p", {}, h("code", { class: "secret", "data-secret": "" }, created.secret)),
      h("button", { type: "button", onclick: () => { secretBox.hidden = true; secretBox.replaceChildren(); } }, "Done"),
    );
  }

  // -- the list ---------------------------------------------------------------------------------
  async function refresh() {
    const page = await get(base);
    if (!page.items.length) {
      setChildren(list, h("p", { class: "muted" }, "No webhooks yet."));
      return;
    }
    setChildren(list, h("table", { class: "data" },
      h("caption", { class: "visually-hidden" }, "Webhooks"),
      h("thead", {}, h("tr", {}, ["Target", "Events", "Secret", "State", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, page.items.map((hook) => row(hook))),
    ));
  }

  function row(hook) {
    const toggle = h("button", { type: "button" }, hook.enabled ? "Pause" : "Resume");
    toggle.addEventListener("click", async () => {
      try {
        await withBusy(toggle, null, () => patch(`${base}/${hook.id}`, { enabled: !hook.enabled }));
        await refresh();
      } catch (error) { showError(errors, error); }
    });
    const remove = h("button", { type: "button", class: "danger" }, "Delete");
    remove.addEventListener("click", async () => {
      const ok = await confirmDialog({
        title: "Delete this webhook?",
        message: `${hook.url || "Email to the owner"} and its delivery log are deleted; nothing more is sent to it.`,
        confirmLabel: "Delete", danger: true,
      });
      if (!ok) return;
      try {
        await del(`${base}/${hook.id}`);
        log.hidden = true;
        await refresh();
      } catch (error) { showError(errors, error); }
    });
    const show = h("button", { type: "button", onclick: () => showLog(hook, 0) }, "Deliveries");
    return h("tr", { "data-webhook": hook.id },
      h("td", {}, hook.channel === "email" ? "Email to the project owner" : h("code", {}, hook.url)),
      h("td", {}, hook.events.map((e) => h("div", {}, h("code", {}, e)))),
      h("td", {}, hook.secret_hint || "—"),
      h("td", {}, hook.enabled ? badge("active", "ok") : badge("paused", "muted")),
      h("td", {}, h("div", { class: "row-actions" }, show, toggle, remove)),
    );
  }

  // -- a webhook's deliveries -------------------------------------------------------------------
  async function showLog(hook, offset) {
    log.hidden = false;
    const page = await get(`${base}/${hook.id}/deliveries`, { limit: PAGE, offset });
    const refreshLog = h("button", { type: "button", onclick: () => showLog(hook, offset) }, "Refresh");
    setChildren(log,
      h("h3", { tabindex: "-1" }, "Deliveries to ", hook.url ? h("code", {}, hook.url) : "the owner's email"),
      refreshLog,
      page.items.length
        ? h("table", { class: "data" },
          h("caption", { class: "visually-hidden" }, "Deliveries, newest first"),
          h("thead", {}, h("tr", {}, ["When", "Event", "Status", "Attempts", "Last answer", ""].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, page.items.map((d) => deliveryRow(hook, d, offset))))
        : h("p", { class: "muted" }, "Nothing has been sent to this webhook yet."),
      page.total > page.limit || offset
        ? pager(page, (next) => showLog(hook, next), "deliveries")
        : h("p", { class: "muted" }, page.total === 1 ? "1 delivery" : `${page.total} deliveries`),
    );
  }

  function deliveryRow(hook, d, offset) {
    const answer = d.error || (d.response_status ? `HTTP ${d.response_status}` : "—");
    let action = null;
    if (d.status !== "pending") {
      action = h("button", { type: "button" }, "Send again");
      action.addEventListener("click", async () => {
        try {
          await withBusy(action, "Queued…", () => post(`${base}/${hook.id}/deliveries/${d.id}/redeliver`));
          notify("The delivery will be sent again.", "success");
          await showLog(hook, offset);
        } catch (error) { showError(errors, error); }
      });
    }
    return h("tr", { "data-delivery": d.id },
      h("td", {}, formatDate(d.created_at)),
      h("td", {}, h("code", {}, d.event)),
      h("td", {}, badge(d.status, STATUS_KIND[d.status])),
      h("td", {}, String(d.attempts)),
      h("td", {}, answer),
      h("td", {}, action),
    );
  }

  add(ctx.root,
    h("h2", { tabindex: "-1" }, "Webhooks"),
    h("p", {}, "Quarry POSTs a signed JSON message (ids and counts, never document text) to each URL when ",
      "the events it receives happen, and retries until the receiver answers 2xx. ",
      "See the README's Webhooks section for how to check the Quarry-Signature header."),
    errors,
    secretBox,
    form,
    list,
    log,
  );
  await refresh();
}
