// The rollout panel: drawn from what GET /api/console/rollout describes (variants with their weights and health side
// by side, health columns, editable settings, the guarded rollout: rollout_experiment.js), so a rollout of another
// shape changes the server's description, not this module. Changes: an admin edits, gives a reason, reviews the
// change the server computed (POST .../preview), then saves it (PUT). A supervisor has the kill switch alone, on top
// of the card: confirmed with a reason, then PUT .../kill. Who holds a kill switch that is on is shown beside it; a
// switch this account may not turn off (another's, of a higher role) keeps its button focusable but inert, with the
// server's reason in words beside it.

import { request } from "./api.js";
import { $, h, utc, zone } from "./dom.js";
import { EDITOR } from "./kinds.js";
import { cell } from "./rollout_chart.js";
import { experimentSection } from "./rollout_experiment.js";

let canChange = false;
let canKill = false;
let labels = {}; // the experiment's metric key -> label
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
  canKill = r.data.can_kill;
  labels = Object.fromEntries((r.data.metrics || []).map((m) => [m.key, m.label]));
  $("rollout-note").textContent = canChange
    ? "Changes need a reason and apply to the next call."
    : canKill
      ? "You may turn the kill switch on or off, with a reason (one an admin turned on, only an admin turns off); " +
        "other changes need an admin."
      : "Only an admin can change a rollout.";
  if (!r.data.dialplans.length) $("rollout-note").textContent += " No rollout dialplan yet.";
  const cards = r.data.dialplans.map(card);
  // what someone unfolded stays unfolded through the refresh
  const opened = new Set([...$("rollouts").querySelectorAll("details[open][data-keep]")].map((d) => d.dataset.keep));
  for (const fresh of cards) {
    for (const folded of fresh.querySelectorAll("details[data-keep]")) folded.open = opened.has(folded.dataset.keep);
    // a form someone is typing in survives the refresh (a call ending refreshes the health table)
    for (const form of ["form.editor", "form.kill"]) {
      const editing = $("rollouts").querySelector(`article[data-dialplan="${CSS.escape(fresh.dataset.dialplan)}"] ${form}[data-dirty]`);
      const blank = fresh.querySelector(form);
      if (editing && blank) blank.replaceWith(editing);
    }
  }
  $("rollouts").replaceChildren(...cards);
  $("audit").tBodies[0].replaceChildren(...r.data.audit.map(auditRow));
}

// "ada (admin) since 2025-01-02 03:04:05 UTC" (the clock's zone); a holder the flag does not name: "nobody recorded (counted as admin)"
function holderText(held) {
  if (!held.by) return `nobody recorded (counted as ${held.role})`;
  return `${held.by} (${held.role})` + (held.at ? ` since ${utc(held.at)} ${zone()}` : "");
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
  if (value === null) return "–"; // a moment unset (the kill switch's kill_at when it is off)
  return String(value);
}

// Whether the health window decides anything: the sliding-window rule runs only for a plan that names one.
function healthCaption(dp) {
  const why = dp.rollback_rule
    ? "its rollback rule below acts on it, beside the guarded rollout's tests"
    : "shown for reference: the guarded rollout's tests decide";
  return `Variants, and their recent health (last ${dp.health.window_s} s; ${why})`;
}

function rollbackRule(dp) {
  const rule = dp.health.rollback;
  return h("p", { class: "muted rollback-rule" },
    `Rollback rule: to ${dp.safe_variant} at ≥ ${rule.min_calls} calls of a variant in the window and a model ` +
    `failure rate over ${(rule.failure_rate_threshold * 100).toFixed(0)} % and above ${dp.safe_variant}'s.`);
}

// A variant's calls that ran on its fallback model (its own failed to connect): the health row says how many, and
// the variant's name is marked, so a candidate that looks healthy only thanks to its fallback is seen.
function fellBack(v, row) {
  const n = (row || {}).fallbacks;
  if (!n) return null;
  const model = v.fallback_model || "its fallback model";
  return [" ", h("span", { class: "mark warn fallback", title: `${v.model} failed to connect; the call ran on ${model}` },
    `${n} on ${model}`)];
}

// What the failure figures count, under the table (the same words as docs/operating.md, The rollout card).
const HEALTH_TERMS = "Failed calls: calls that failed their caller (no model, or the session lost and not back); a " +
  "call its fallback model took is recovered on fallback, not failed. Model failure rate: connect failures of the " +
  "variant's own model (those recovered on fallback too) and dropped sessions, per call: what the rollback rule reads.";

// A health column's value; connect failures with those its fallback model then took beside them (recovered on
// fallback: the variant's own model failed, the caller did not).
function healthCell(key, row) {
  const value = cell(key, row[key]);
  return key === "connect_failures" && row.fallbacks ? `${value} (${row.fallbacks} recovered on fallback)` : value;
}

// Each candidate's configuration digest and the green replay report that attests it (rollout attest), by name.
function gateText(gate) {
  const each = Object.entries(gate.variants).map(([name, v]) => v.attested
    ? `${name} #${v.digest}: green report ${v.attested.report} (${v.attested.who}, ${v.attested.when})`
    : `${name} #${v.digest}: no green report`);
  return [gate.required ? "required" : "off (rollout.require_gate)", ...each].join("; ");
}

function card(dp) {
  const health = dp.health;
  const rows = Object.fromEntries(health.rows.map((row) => [row.variant, row]));
  // the table scrolls sideways in its box on a narrow screen: what it is and what decides stays in view above it
  const title = h("p", { class: "muted health-note", id: `health-${dp.dialplan}` }, healthCaption(dp));
  const variants = h("table", { class: "variants", "aria-labelledby": title.id },
    h("thead", {}, h("tr", {}, ["Variant", "Weight", "Share", "Dialect", "Model", "Voice"].map((t) => h("th", {}, t)),
      health.columns.map((c) => h("th", {}, c.label)))),
    h("tbody", {}, dp.variants.map((v) =>
      h("tr", { "data-variant": v.name, class: (rows[v.name] || {}).fallbacks ? "fell-back" : null },
        h("td", { class: "name" }, v.name, v.safe ? h("span", { class: "muted" }, " (safe)") : null,
          fellBack(v, rows[v.name])),
        h("td", { class: "weight" }, String(v.weight)), h("td", { class: "share" }, `${v.share_percent} %`),
        h("td", {}, v.dialect), h("td", { class: "model" }, v.model + (v.fallback_model ? ` → ${v.fallback_model}` : "")),
        h("td", {}, v.voice),
        health.columns.map((c) => h("td", { "data-key": c.key }, healthCell(c.key, rows[v.name] || {})))))));
  const shutdowns = dp.variants.filter((v) => v.shutdown).map((v) =>
    h("li", {}, `${v.name}: ${v.model} shuts down on ${v.shutdown} (in ${v.shutdown_days} days)`));
  const facts = h("dl", { class: "flag" },
    h("dt", {}, "Kill switch"), h("dd", { "data-setting": "kill" }, text(dp.kill)),
    dp.kill_holder ? [h("dt", {}, "Held by"), h("dd", { "data-setting": "kill-holder" }, holderText(dp.kill_holder))] : null,
    dp.kill_reason ? [h("dt", {}, "Turned on because"), h("dd", { "data-setting": "kill-reason" }, dp.kill_reason)] : null,
    h("dt", {}, "Allow lists"), h("dd", { "data-setting": "allow" }, text(dp.allow)),
    h("dt", {}, "Deny lists"), h("dd", { "data-setting": "deny" }, text(dp.deny)),
    h("dt", {}, "Safe variant"), h("dd", {}, dp.safe_variant),
    dp.gate ? [h("dt", {}, "Replay gate"), h("dd", { "data-setting": "gate" }, gateText(dp.gate))] : null);
  return h("article", { class: "rollout", "data-dialplan": dp.dialplan },
    h("h3", {}, dp.dialplan, dp.stored ? "" : h("span", { class: "muted" }, " (defaults: never changed)")),
    canKill && !canChange ? killSwitch(dp) : null, // an admin has the kill switch in the editor below
    title, h("div", { class: "table-box" }, variants), h("p", { class: "muted health-terms" }, HEALTH_TERMS),
    dp.rollback_rule ? rollbackRule(dp) : null,
    experimentSection(dp, labels), facts,
    shutdowns.length ? h("ul", { class: "shutdowns" }, shutdowns) : null,
    canChange ? editor(dp) : null);
}

// The kill switch alone (a supervisor's): the button asks first, with a reason, and only then changes the flag. A
// switch held by someone this account may not overrule: the button stays in the tab order (aria-disabled, not
// disabled) and described by the reason, and pressing it says the reason instead of asking.
function killSwitch(dp) {
  const turnOn = !dp.kill;
  const held = dp.kill_holder
    ? h("p", { class: "holder", id: `kill-holder-${dp.dialplan}` }, `Held by ${holderText(dp.kill_holder)}.`)
    : null;
  const because = dp.kill && dp.kill_reason
    ? h("p", { class: "kill-reason", id: `kill-reason-${dp.dialplan}` }, `Turned on because: “${dp.kill_reason}”`)
    : null;
  const refused = dp.lift_refused
    ? h("p", { class: "refused", id: `kill-refused-${dp.dialplan}` },
      `${dp.lift_refused[0].toUpperCase()}${dp.lift_refused.slice(1)}.`)
    : null;
  const question = turnOn
    ? `Send every new call of ${dp.dialplan} to ${dp.safe_variant}, whatever the weights and lists?`
    : `Turn the kill switch off: new calls of ${dp.dialplan} split by the weights again?`;
  const message = h("p", { class: "message", role: "alert" });
  const reason = h("input", { name: "reason", maxlength: 500, autocomplete: "off" });
  const asked = `kill-question-${dp.dialplan}`; // the question names the dialog it is in
  const confirm = h("div", { class: "confirm", role: "alertdialog", "aria-labelledby": asked, hidden: true },
    h("p", { id: asked }, question), h("label", {}, "Reason (required) ", reason), " ",
    h("button", { type: "submit", class: "yes" }, turnOn ? "Yes: every call on the safe variant" : "Yes: turn it off"),
    " ", h("button", { type: "button", class: "no" }, "Cancel"));
  const ask = h("button", { type: "button", class: turnOn ? "ask kill-on" : "ask kill-off",
    "aria-disabled": refused ? "true" : null,
    "aria-describedby": [held, because, refused].filter(Boolean).map((p) => p.id).join(" ") || null },
  turnOn ? "Kill switch: every call on the safe variant" : "Turn the kill switch off");
  const form = h("form", { class: "kill", autocomplete: "off" }, ask, held, because, refused, confirm, message);
  const close = () => {
    confirm.hidden = true;
    ask.hidden = false;
    reason.value = "";
    delete form.dataset.dirty;
  };
  ask.addEventListener("click", () => {
    if (refused) {
      message.textContent = refused.textContent;
      return;
    }
    message.textContent = "";
    confirm.hidden = false;
    ask.hidden = true;
    form.dataset.dirty = "1"; // asked: the question survives a refresh until it is answered
    reason.focus();
  });
  confirm.querySelector("button.no").addEventListener("click", close);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const why = reason.value.trim();
    if (!why) {
      message.textContent = "A reason is required.";
      return;
    }
    const r = await request("PUT", `/api/rollout/${encodeURIComponent(dp.dialplan)}/kill`, { kill: turnOn, reason: why });
    if (!r.ok) {
      message.textContent = r.data.error || `HTTP ${r.status}`;
      return;
    }
    close();
    await load();
  });
  return form;
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
    return h("label", {}, box, " on"); // named "on" within its fieldset's legend
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
  const keys = Object.keys(a.new).filter((k) => !k.endsWith("_unix")); // a moment's Unix seconds: beside it, not a setting
  return h("tr", { "data-audit-id": a.id },
    h("td", { class: "when" }, utc(a.when)), h("td", {}, a.dialplan), h("td", { class: "who" }, a.who),
    h("td", { class: "reason" }, a.reason),
    h("td", {}, h("ul", {}, keys.map((k) => h("li", {}, h("code", {}, k), `: ${text(a.old[k])} → ${text(a.new[k])}`)))));
}
