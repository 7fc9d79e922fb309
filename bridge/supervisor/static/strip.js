// The per-plan strip at the top of the page: each plan's live calls, holds and outages now, and the last hour's
// handle time, transfer rate, calls the agent resolved alone, and the p95 of the greeting (agent-first plans) and of
// the first reply (GET /api/plans/stats; docs/operating.md defines each figure).

import { request } from "./api.js";
import { $, clock, h, ms } from "./dom.js";

const EVERY_MS = 5000;
let timer = null;
let running = false;

// Resolves once the strip has its first rows (or its error): the panels below it start after that, so that the
// rows a supervisor acts on do not move down when the strip fills.
export function start() {
  running = true;
  const first = load();
  clearInterval(timer);
  timer = setInterval(load, EVERY_MS);
  document.addEventListener("console:call-ended", load);
  return first;
}

export function stop() {
  running = false;
  clearInterval(timer);
  timer = null;
  document.removeEventListener("console:call-ended", load);
  $("plans").tBodies[0].replaceChildren();
}

function percent(rate) {
  return rate === null || rate === undefined ? "–" : `${Math.round(rate * 100)} %`;
}

function row(p) {
  return h("tr", { "data-dialplan": p.dialplan },
    h("th", { class: "dialplan", scope: "row" }, p.dialplan || "(none)"),
    h("td", { class: "active" }, p.active),
    h("td", { class: `on-hold${p.on_hold ? " warn" : ""}` }, p.on_hold),
    h("td", { class: `in-outage${p.in_outage ? " warn" : ""}` }, p.in_outage),
    h("td", { class: "ended" }, p.ended),
    h("td", { class: "handle" }, p.avg_handle_s === null ? "–" : clock(p.avg_handle_s)),
    h("td", { class: "transfer-rate" }, percent(p.transfer_rate)),
    h("td", { class: "resolved" }, `${p.resolved_alone} (${percent(p.resolved_alone_rate)})`),
    h("td", { class: "greeting-p95" }, ms(p.greeting_p95_ms)),
    h("td", { class: "first-reply-p95" }, ms(p.first_reply_p95_ms)),
    h("td", { class: "had-outage" }, p.had_outage),
  );
}

async function load() {
  if (!running) return;
  const r = await request("GET", "/api/plans/stats");
  if (!running) return;
  if (!r.ok) {
    $("plans-note").textContent = r.data.error || `HTTP ${r.status}`;
    return;
  }
  $("plans").tBodies[0].replaceChildren(...r.data.plans.map(row));
  $("plans-note").textContent = r.data.capped ? "Only the most recent calls were counted." : "";
  $("plans-panel").dataset.loaded = "1"; // the strip has its rows: the panels below it stay where they are
}
