// The rollout panel: drawn from what GET /api/console/rollout describes (arms, health columns, editable settings),
// so a rollout of another shape changes the server's description, not this module. Changes: an operator edits,
// gives a reason, reviews the change the server computed (POST .../preview), then saves it (PUT).

import { request } from "./api.js";
import { $, h } from "./dom.js";

let canChange = false;
let reloadTimer = null;

export function start() {
  $("rollout-refresh").onclick = load;
  document.addEventListener("console:call-ended", soon); // a finished call changes the health window
  return load();
}

export function stop() {
  document.removeEventListener("console:call-ended", soon);
  $("rollouts").replaceChildren();
  $("audit").tBodies[0].replaceChildren();
}

function soon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(load, 1000);
}

export async function load() {
  const r = await request("GET", "/api/console/rollout");
  if (!r.ok) {
    $("rollout-note").textContent = r.data.error || `HTTP ${r.status}`;
    return;
  }
  canChange = r.data.can_change;
  $("rollout-note").textContent = canChange
    ? "Changes need a reason and apply to the next call."
    : "Read-only session: only an operator can change a rollout.";
  if (!r.data.dialplans.length) $("rollout-note").textContent += " No rollout dialplan yet.";
  const cards = r.data.dialplans.map(card);
  for (const fresh of cards) {
    // an editor someone is typing in survives the refresh (a call ending refreshes the health table)
    const editing = $("rollouts").querySelector(`article[data-dialplan="${CSS.escape(fresh.dataset.dialplan)}"] form.editor[data-dirty]`);
    const blank = fresh.querySelector("form.editor");
    if (editing && blank) blank.replaceWith(editing);
  }
  $("rollouts").replaceChildren(...cards);
  $("audit").tBodies[0].replaceChildren(...r.data.audit.map(auditRow));
}

function text(value) {
  if (Array.isArray(value)) return value.length ? value.join(", ") : "(none)";
  if (value === true) return "on";
  if (value === false) return "off";
  return String(value);
}

function cell(key, value) {
  if (value === null || value === undefined) return "n/a";
  if (key === "failure_rate") return `${(value * 100).toFixed(1)} %`;
  return String(value);
}

function card(dp) {
  const health = dp.health;
  const arms = h("table", { class: "arms" },
    h("thead", {}, h("tr", {}, h("th", {}, "Arm"), h("th", {}, "Share"), h("th", {}, "Model"), h("th", {}, ""))),
    h("tbody", {}, dp.arms.map((a) =>
      h("tr", { "data-arm": a.name }, h("td", {}, a.label), h("td", { class: "share" }, `${a.share_percent} %`),
        h("td", {}, a.model), h("td", {}, a.safe ? "safe" : "")))));
  const healthTable = h("table", { class: "health" },
    h("thead", {}, h("tr", {}, h("th", {}, "Arm"), health.columns.map((c) => h("th", {}, c.label)))),
    h("tbody", {}, health.rows.map((row) =>
      h("tr", { "data-arm": row.arm }, h("td", {}, row.arm),
        health.columns.map((c) => h("td", { "data-key": c.key }, cell(c.key, row[c.key])))))));
  const facts = h("dl", { class: "flag" },
    h("dt", {}, "Kill switch"), h("dd", { "data-setting": "kill" }, text(dp.kill)),
    h("dt", {}, "Allow list"), h("dd", { "data-setting": "allow" }, text(dp.allow)),
    h("dt", {}, "Deny list"), h("dd", { "data-setting": "deny" }, text(dp.deny)),
    h("dt", {}, "Safe arm"), h("dd", {}, dp.safe_arm));
  return h("article", { class: "rollout", "data-dialplan": dp.dialplan },
    h("h3", {}, dp.dialplan, dp.stored ? "" : h("span", { class: "muted" }, " (defaults: never changed)")),
    arms, facts,
    h("h4", {}, `Health over the last ${health.window_s} s`), healthTable,
    h("p", { class: "muted" },
      `Automatic rollback to beta at ≥ ${health.rollback.min_calls} GA calls and a failure rate over ` +
      `${(health.rollback.failure_rate_threshold * 100).toFixed(0)} %.`),
    canChange ? editor(dp) : null);
}

function field(setting, value) {
  if (setting.kind === "percent") {
    return h("input", { name: setting.setting, type: "number", min: 0, max: 100, step: "0.01", value });
  }
  if (setting.kind === "switch") {
    const box = h("input", { name: setting.setting, type: "checkbox" });
    box.checked = Boolean(value);
    return box;
  }
  const area = h("textarea", { name: setting.setting, rows: 2, placeholder: "one number per line" });
  area.value = (value || []).join("\n");
  return area;
}

function read(form, setting) {
  const input = form.elements.namedItem(setting.setting);
  if (setting.kind === "percent") return input.value === "" ? NaN : Number(input.value);
  if (setting.kind === "switch") return input.checked;
  return input.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function editor(dp) {
  const out = h("div", { class: "review", role: "status" });
  const message = h("p", { class: "message", role: "alert" });
  const save = h("button", { type: "button", class: "save", disabled: true }, "Save change");
  const form = h("form", { class: "editor", autocomplete: "off" },
    h("h4", {}, "Change"),
    dp.editable.map((s) => h("label", {}, s.label, " ", field(s, dp.values[s.setting]))),
    h("label", {}, "Reason (required) ", h("input", { name: "reason", maxlength: 500 })),
    h("button", { type: "submit", class: "review-button" }, "Review change"), save, out, message);
  let pending = null;

  function changes() {
    const out = {};
    for (const s of dp.editable) {
      const value = read(form, s);
      if (!same(value, dp.values[s.setting])) out[s.setting] = value;
    }
    return out;
  }

  form.addEventListener("input", () => {
    form.dataset.dirty = "1";
    pending = null;
    save.disabled = true;
    out.replaceChildren();
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    message.textContent = "";
    const reason = form.elements.namedItem("reason").value.trim();
    const wanted = changes();
    if (!Object.keys(wanted).length) {
      message.textContent = "Nothing to change.";
      return;
    }
    if (!reason) {
      message.textContent = "A reason is required.";
      return;
    }
    const r = await request("POST", `/api/rollout/${encodeURIComponent(dp.dialplan)}/preview`, wanted);
    if (!r.ok) {
      message.textContent = r.data.error || `HTTP ${r.status}`;
      return;
    }
    pending = { changes: wanted, reason };
    out.replaceChildren(
      h("p", {}, `Saving changes ${dp.dialplan} for the next call. Reason: `, h("q", {}, reason)),
      h("ul", {}, r.data.changes.map((c) =>
        h("li", { "data-setting": c.setting }, h("code", {}, c.setting), `: ${text(c.old)} → ${text(c.new)}`))),
    );
    save.disabled = false;
  });
  save.addEventListener("click", async () => {
    if (!pending) return;
    save.disabled = true;
    const r = await request("PUT", `/api/rollout/${encodeURIComponent(dp.dialplan)}`,
      { ...pending.changes, reason: pending.reason });
    if (!r.ok) {
      message.textContent = r.data.error || `HTTP ${r.status}`;
      return;
    }
    pending = null;
    delete form.dataset.dirty;
    await load();
  });
  return form;
}

function auditRow(a) {
  const keys = Object.keys(a.new);
  return h("tr", { "data-audit-id": a.id },
    h("td", {}, a.when.replace("T", " ").replace("Z", "")), h("td", {}, a.dialplan), h("td", { class: "who" }, a.who),
    h("td", { class: "reason" }, a.reason),
    h("td", {}, h("ul", {}, keys.map((k) => h("li", {}, h("code", {}, k), `: ${text(a.old[k])} → ${text(a.new[k])}`)))));
}
