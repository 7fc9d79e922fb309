// The call-actions audit (GET /api/actions/audit): who did what to which call, and whether a worker took it; filtered
// by who, call and action. Read again after an action of this page, when a call ends, and every EVERY_MS.

import { current } from "./api.js";
import { $, fieldsQuery, h, searchForm, utc } from "./dom.js";

const EVERY_MS = 10000;
let running = false;
let timer = null;
let onOpen = () => {};

export function start(open) {
  onOpen = open;
  running = true;
  clearInterval(timer);
  timer = setInterval(load, EVERY_MS);
  return load();
}

export function stop() {
  running = false;
  clearInterval(timer);
  timer = null;
  $("actions-audit").tBodies[0].replaceChildren();
  $("actions-audit-count").textContent = "";
}

export function wire() {
  searchForm("actions-audit-filters", ["actions-audit-who", "actions-audit-call", "actions-audit-action"], load, 250);
  for (const name of ["console:acted", "console:call-ended"]) document.addEventListener(name, () => setTimeout(load, 300));
}

function query() {
  return fieldsQuery("/api/actions/audit", [["who", "actions-audit-who"], ["call", "actions-audit-call"],
    ["action", "actions-audit-action"]]);
}

function row(a) {
  const result = a.action === "takeover-audio" ? "microphone connected" : a.worker ? `done by ${a.worker}` : "no worker took it";
  const call = h("a", { href: "#detail-panel", class: "call-link", onclick: (e) => {
    e.preventDefault();
    onOpen(a.call_id);
  } }, a.call_id);
  return h("tr", { "data-audit-id": a.id, "data-action": a.action, "data-call-id": a.call_id },
    h("td", { class: "when" }, utc(a.at_unix)), h("td", { class: "who" }, a.who), h("td", { class: "call" }, call),
    h("td", { class: "action" }, a.action), h("td", { class: "said" }, a.text || a.target || ""),
    h("td", { class: `result${a.worker || a.action === "takeover-audio" ? "" : " failed"}` }, result));
}

function options(actions) {
  const select = $("actions-audit-action");
  const known = new Set([...select.options].map((o) => o.value));
  for (const action of actions) {
    if (!known.has(action)) select.append(h("option", { value: action }, action));
  }
}

export async function load() {
  if (!running) return;
  const d = await current(query, () => running, $("actions-audit-note"));
  if (d === null) return;
  options(d.actions || []);
  $("actions-audit").tBodies[0].replaceChildren(...d.audit.map(row));
  $("actions-audit-count").textContent = `(${d.audit.length}${d.capped ? "+" : ""})`;
  $("actions-audit-note").textContent = d.audit.length ? "" : "No action matches.";
  $("actions-audit-panel").dataset.loaded = "1";
}
