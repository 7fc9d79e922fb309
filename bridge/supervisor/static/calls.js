// The live-calls table, kept up to date by the server's events (GET /api/live/calls): no polling here. The only
// timer redraws the durations from each call's start time, once a second, without asking the server anything.
// A supervisor's row has its actions (listen, whisper, take over, hang up): one click opens the call beside the
// table and starts the action, or asks its confirmation (actions.js).

import { events } from "./api.js";
import { $, clock, h, show } from "./dom.js";
import { flagged, markOptions, marks, severity } from "./marks.js";
import { ROW_STATUS } from "./kinds.js";

let source = null;
let timer = null;
let offset = 0; // server clock minus this browser's, in seconds
const rows = new Map(); // call id -> { call, tr }
let onOpen = () => {};
let onAct = () => {};
let acting = false; // the signed-in role may act on calls
let selected = null; // the call open beside the table

const ACTIONS = [["listen", "Listen"], ["whisper", "Whisper"], ["takeover", "Take over"], ["hangup", "Hang up"]];

// `act(callId, action)` runs a row's action; rows have them only while `allow(true)`.
export function start(open, act) {
  onOpen = open;
  onAct = act || onAct;
  document.addEventListener("console:call-shown", mark);
  if ($("filter-flag").options.length === 1) markOptions($("filter-flag"));
  for (const id of ["filter-dialplan", "filter-variant", "filter-phase", "filter-flag", "filter-caller"]) {
    $(id).oninput = filter;
  }
  stop();
  source = events("/api/live/calls", {
    snapshot: (data) => {
      offset = data.now_unix - Date.now() / 1000;
      for (const id of [...rows.keys()]) drop(id, false);
      for (const call of data.calls) upsert(call);
      banner("");
      $("calls-panel").dataset.loaded = "1";
    },
    upsert,
    remove: (data) => drop(data.call_id, true),
    store: (data) => banner(data.ok ? "" : `Redis unavailable: ${data.error || "no answer"}`),
    closed: () => banner("Live calls stopped: reload the page."),
  });
  timer = setInterval(tick, 1000);
  count();
}

export function stop() {
  if (source) source.close();
  source = null;
  if (timer) clearInterval(timer);
  timer = null;
  for (const id of [...rows.keys()]) drop(id, false);
  delete $("calls-panel").dataset.loaded; // set again by the next snapshot
  document.removeEventListener("console:call-shown", mark);
}

export function allow(can) {
  acting = can;
  $("calls").classList.toggle("acting", can);
  for (const { call, tr } of rows.values()) tr.replaceChildren(...cells(call));
}

function mark(e) {
  selected = e.detail.call_id;
  for (const [id, { tr }] of rows) tr.classList.toggle("selected", id === selected);
}

function actionButtons(call) {
  if (!acting) return null;
  return h("div", { class: "acts" }, ACTIONS.map(([action, label]) =>
    h("button", { type: "button", class: action, "data-action": action, title: `${label}: ${call.call_id}`,
      onclick: (e) => {
        e.stopPropagation();
        onAct(call.call_id, action);
      } }, label)));
}

function banner(text) {
  $("banner").textContent = text;
  show($("banner"), Boolean(text));
}

function duration(call) {
  return call.started_at_unix ? clock(Date.now() / 1000 + offset - call.started_at_unix) : "–";
}

// A forwarded call: the number it was first placed to (Diversion, History-Info), masked as its caller is.
function diverted(call) {
  return call.original_called ? h("span", { class: "original-called muted" }, ` from ${call.original_called}`) : null;
}

// A row's cells (a viewer's has no actions cell: none at all, not an empty one).
function cells(call) {
  return [
    h("td", { class: "caller" }, call.caller),
    h("td", { class: "called" }, call.called, diverted(call)),
    h("td", { class: "dialplan" }, call.dialplan),
    h("td", { class: "variant" }, call.variant || "–"),
    h("td", { class: "dialect" }, call.dialect, call.model ? h("span", { class: "muted" }, ` ${call.model}`) : null),
    h("td", { class: "phase" }, call.activity || call.phase, call.status === ROW_STATUS.LOST ? h("span", { class: "lost-mark" }, " (worker lost)") : null,
      call.taken_over_by ? h("span", { class: "taken-over mark warn" }, ` taken over by ${call.taken_over_by}`) : null,
      call.transfer ? h("span", { class: `transfer ${call.transfer}` }, ` transfer: ${call.transfer.replace("_", " ")}`) : null),
    marks(call),
    h("td", { class: `status ${call.status}` }, call.status),
    h("td", { class: "duration" }, duration(call)),
    h("td", { class: "last-line" }, h("span", { class: "clamp" }, call.last_transcript)),
    acting ? h("td", { class: "row-actions" }, actionButtons(call)) : null,
  ].filter(Boolean);
}

function upsert(call) {
  const known = rows.get(call.call_id);
  const tr = known ? known.tr : h("tr", { "data-call-id": call.call_id, tabindex: 0 });
  if (!known) {
    tr.addEventListener("click", () => onOpen(call.call_id));
    // Enter on the row itself (not on one of its buttons, which act): the call opens and takes the focus
    tr.addEventListener("keydown", (e) => e.key === "Enter" && e.target === tr && onOpen(call.call_id));
    $("calls").tBodies[0].append(tr);
  }
  tr.className = [call.status === ROW_STATUS.LOST ? "lost" : "", call.call_id === selected ? "selected" : "", severity(call)]
    .join(" ").trim();
  tr.replaceChildren(...cells(call));
  rows.set(call.call_id, { call, tr });
  filter();
  count();
}

// The filters: a dialplan, a variant, a phase (each from the calls seen), a part of the caller's number.
const FILTERS = [["dialplan", "filter-dialplan"], ["variant", "filter-variant"], ["activity", "filter-phase"]];

export function filter() {
  for (const [key, id] of FILTERS) {
    const select = $(id);
    const known = new Set([...select.options].map((o) => o.value));
    for (const { call } of rows.values()) {
      const value = call[key] || "";
      if (value && !known.has(value)) {
        select.append(h("option", { value }, value));
        known.add(value);
      }
    }
  }
  const text = $("filter-caller").value.trim();
  for (const { call, tr } of rows.values()) {
    const match = FILTERS.every(([key, id]) => !$(id).value || call[key] === $(id).value) &&
      (!text || (call.caller || "").includes(text)) && flagged(call, $("filter-flag").value);
    show(tr, match);
  }
  count();
}

function drop(callId, endedNow) {
  const known = rows.get(callId);
  if (!known) return;
  known.tr.remove();
  rows.delete(callId);
  count();
  if (!endedNow) return;
  document.dispatchEvent(new CustomEvent("console:call-ended", { detail: { call_id: callId } }));
}

// "(3)", or "(2 of 3 shown)" while a filter hides some: the heading counts what the table shows.
function count() {
  const shown = [...rows.values()].filter(({ tr }) => !tr.hidden).length;
  $("calls-count").textContent = !rows.size ? "" : shown === rows.size ? `(${rows.size})` : `(${shown} of ${rows.size} shown)`;
  show($("calls-empty"), rows.size === 0);
}

function tick() {
  for (const { call, tr } of rows.values()) {
    const cell = tr.querySelector("td.duration");
    if (cell) cell.textContent = duration(call);
  }
}
