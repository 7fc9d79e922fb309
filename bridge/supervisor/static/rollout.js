// The rollout panel: drawn from what GET /api/console/rollout describes (variants with their weights and health side
// by side, health columns, editable settings), so a rollout of another shape changes the server's description, not
// this module. Changes: an admin edits, gives a reason, reviews the change the server computed (POST
// .../preview), then saves it (PUT).

import { request } from "./api.js";
import { $, h } from "./dom.js";
import { EDITOR } from "./kinds.js";

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
    : "Only an admin can change a rollout.";
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
  if (value && typeof value === "object") {
    const parts = Object.entries(value).filter(([, v]) => !Array.isArray(v) || v.length)
      .map(([k, v]) => `${k}: ${text(v)}`);
    return parts.length ? parts.join("; ") : "(none)";
  }
  if (value === true) return "on";
  if (value === false) return "off";
  return String(value);
}

function cell(key, value) {
  if (value === null || value === undefined) return "n/a";
  if (key.endsWith("_rate")) return `${(value * 100).toFixed(1)} %`;
  if (key.endsWith("_ms")) return `${Math.round(value)} ms`;
  if (key.endsWith("_usd")) return `$${value.toFixed(4)}`;
  return String(value);
}

// The difference from the safe variant with its always-valid 95 % interval, drawn on [-scale, scale] around zero;
// coloured only when the interval excludes zero (worse: higher is worse for every metric).
function intervalBar(lo, hi) {
  const scale = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  const x = (v) => 50 + (v / scale) * 50;
  const kind = lo > 0 ? "worse" : hi < 0 ? "better" : "unsure";
  return h("span", { class: `ci ${kind}`, title: `95 % interval [${lo}, ${hi}]` },
    h("span", { class: "ci-range", style: `left:${x(lo)}%;width:${Math.max(x(hi) - x(lo), 1)}%` }),
    h("span", { class: "ci-zero" }));
}

function experimentTable(dp) {
  const exp = dp.experiment;
  if (!exp) return null;
  const rows = [];
  for (const [variant, metrics] of Object.entries(exp.estimates)) {
    for (const [metric, m] of Object.entries(metrics)) {
      if (metric === "calls" || m.value === null) continue;
      const vs = m.vs_safe;
      rows.push(h("tr", { "data-variant": variant, "data-metric": metric },
        h("td", {}, variant), h("td", {}, metric), h("td", { class: "value" }, cell(metric, m.value)),
        h("td", { class: "diff" }, vs ? `${vs.diff > 0 ? "+" : ""}${cell(metric, vs.diff)} [${cell(metric, vs.ci95[0])}, ${cell(metric, vs.ci95[1])}]` : ""),
        h("td", { class: "bar" }, vs ? intervalBar(vs.ci95[0], vs.ci95[1]) : ""),
        h("td", { class: "more" }, m.more_calls ? `about ${m.more_calls} more candidate calls to decide` : "")));
    }
  }
  const calls = Object.entries(exp.estimates).map(([v, m]) => `${v}: ${m.calls}`).join(", ");
  return h("div", { class: "table-box experiment" },
    h("table", {},
      h("caption", {}, `Experiment since the weights last changed (calls ${calls || "none yet"})`),
      h("thead", {}, h("tr", {}, ["Variant", "Metric", "Value", "Difference from safe (95 %)", "", "To decide"]
        .map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)),
    exp.decisions.map((d) => h("p", { class: "decided" }, `Decided: ${d.action} ${d.variant}: ${d.reason}`)));
}

function card(dp) {
  const health = dp.health;
  const rows = Object.fromEntries(health.rows.map((row) => [row.variant, row]));
  const variants = h("table", { class: "variants" },
    h("caption", {}, `Variants, and their health over the last ${health.window_s} s`),
    h("thead", {}, h("tr", {}, ["Variant", "Weight", "Share", "Dialect", "Model", "Voice"].map((t) => h("th", {}, t)),
      health.columns.map((c) => h("th", {}, c.label)))),
    h("tbody", {}, dp.variants.map((v) =>
      h("tr", { "data-variant": v.name },
        h("td", { class: "name" }, v.name, v.safe ? h("span", { class: "muted" }, " (safe)") : null),
        h("td", { class: "weight" }, String(v.weight)), h("td", { class: "share" }, `${v.share_percent} %`),
        h("td", {}, v.dialect), h("td", { class: "model" }, v.model + (v.fallback_model ? ` → ${v.fallback_model}` : "")),
        h("td", {}, v.voice),
        health.columns.map((c) => h("td", { "data-key": c.key }, cell(c.key, (rows[v.name] || {})[c.key])))))));
  const shutdowns = dp.variants.filter((v) => v.shutdown).map((v) =>
    h("li", {}, `${v.name}: ${v.model} shuts down on ${v.shutdown} (in ${v.shutdown_days} days)`));
  const facts = h("dl", { class: "flag" },
    h("dt", {}, "Kill switch"), h("dd", { "data-setting": "kill" }, text(dp.kill)),
    h("dt", {}, "Allow lists"), h("dd", { "data-setting": "allow" }, text(dp.allow)),
    h("dt", {}, "Deny lists"), h("dd", { "data-setting": "deny" }, text(dp.deny)),
    h("dt", {}, "Safe variant"), h("dd", {}, dp.safe_variant));
  return h("article", { class: "rollout", "data-dialplan": dp.dialplan },
    h("h3", {}, dp.dialplan, dp.stored ? "" : h("span", { class: "muted" }, " (defaults: never changed)")),
    h("div", { class: "table-box" }, variants), experimentTable(dp), facts,
    shutdowns.length ? h("ul", { class: "shutdowns" }, shutdowns) : null,
    h("p", { class: "muted" },
      `Automatic rollback to ${dp.safe_variant} at ≥ ${health.rollback.min_calls} calls of a variant and a failure ` +
      `rate over ${(health.rollback.failure_rate_threshold * 100).toFixed(0)} % and above ${dp.safe_variant}'s.`),
    canChange ? editor(dp) : null);
}

function field(setting, value, names) {
  if (setting.kind === EDITOR.WEIGHTS) {
    return h("span", { class: "weights" }, names.map((n) =>
      h("label", {}, n, " ", h("input", { name: `${setting.setting}:${n}`, type: "number", min: 0, step: "any",
        value: value[n] ?? 0 }))));
  }
  if (setting.kind === EDITOR.SWITCH) {
    const box = h("input", { name: setting.setting, type: "checkbox" });
    box.checked = Boolean(value);
    return box;
  }
  return h("span", { class: "lists" }, names.map((n) => {
    const area = h("textarea", { name: `${setting.setting}:${n}`, rows: 2, placeholder: `callers for ${n}, one per line` });
    area.value = (value[n] || []).join("\n");
    return h("label", {}, n, " ", area);
  }));
}

function read(form, setting, names) {
  if (setting.kind === EDITOR.SWITCH) return form.elements.namedItem(setting.setting).checked;
  const out = {};
  for (const n of names) {
    const input = form.elements.namedItem(`${setting.setting}:${n}`);
    out[n] = setting.kind === EDITOR.WEIGHTS
      ? (input.value === "" ? NaN : Number(input.value))
      : input.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
  }
  return out;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function editor(dp) {
  const names = dp.variants.map((v) => v.name);
  const out = h("div", { class: "review", role: "status" });
  const message = h("p", { class: "message", role: "alert" });
  const save = h("button", { type: "button", class: "save", disabled: true }, "Save change");
  const form = h("form", { class: "editor", autocomplete: "off" },
    h("h4", {}, "Change"),
    dp.editable.map((s) => h("fieldset", { "data-setting": s.setting }, h("legend", {}, s.label),
      field(s, dp.values[s.setting], names))),
    h("label", {}, "Reason (required) ", h("input", { name: "reason", maxlength: 500 })),
    h("button", { type: "submit", class: "review-button" }, "Review change"), save, out, message);
  let pending = null;

  function changes() {
    const out = {};
    for (const s of dp.editable) {
      const value = read(form, s, names);
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
      h("p", { class: "shares" }, `Shares after: ${Object.entries(r.data.shares).map(([n, v]) => `${n} ${v} %`).join(", ")}`),
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
