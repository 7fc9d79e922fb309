// "Recently ended": the ended calls Redis still holds (GET /api/calls/ended), a page at a time, searched by words
// said, plan, variant, end reason or the model's disposition; each row shows the model's disposition and summary
// (or why there is none) and the compliance checks that failed, opens the call's record, and downloads it as JSON
// or text.

import { current } from "./api.js";
import { $, clock, fieldsQuery, h, searchForm, show, utc } from "./dom.js";
import { markOptions, marks, severity } from "./marks.js";

let page = 1;
let onOpen = () => {};
let soon = null;
let running = false;

export function start(open) {
  onOpen = open;
  running = true;
  page = 1;
  load();
}

export function stop() {
  running = false;
  $("ended").tBodies[0].replaceChildren();
  $("ended-count").textContent = "";
}

export function wire() {
  const first = () => {
    page = 1;
    load();
  };
  markOptions($("ended-flag"));
  searchForm("ended-search", ["ended-q", "ended-dialplan", "ended-variant", "ended-reason", "ended-disposition",
    "ended-flag"], first, 300);
  $("ended-newer").addEventListener("click", () => { page -= 1; load(); });
  $("ended-older").addEventListener("click", () => { page += 1; load(); });
  // A call that ends shows up at the top of the first page (the writer needs a moment to index it).
  document.addEventListener("console:call-ended", () => {
    clearTimeout(soon);
    if (page === 1) soon = setTimeout(load, 1000);
  });
}

function query() {
  return fieldsQuery("/api/calls/ended", [["q", "ended-q"], ["dialplan", "ended-dialplan"],
    ["variant", "ended-variant"], ["reason", "ended-reason"], ["disposition", "ended-disposition"],
    ["flag", "ended-flag"]], { page: String(page) });
}

function download(callId, format, label) {
  const href = `/api/calls/${encodeURIComponent(callId)}/export?format=${format}`;
  return h("a", { href, download: "", class: `export ${format}`, onclick: (e) => e.stopPropagation() }, label);
}

function afterCall(call) {
  // under the end reason: the model's disposition, its summary (or why there is none: never one made up) and the
  // compliance checks that failed; nothing for a plan that asks for none, so the table still fits beside a call
  if (!call.disposition && !call.summary && !call.post_call_status && !call.failed_checks.length) return [];
  const why = call.post_call_status && call.post_call_status !== "ok" ? `no summary: ${call.post_call_status}` : "–";
  return [
    h("div", { class: "disposition" }, call.disposition || "–"),
    h("div", { class: call.summary ? "summary" : "summary muted", title: call.summary || why }, call.summary || why),
    h("div", { class: "failed-checks" }, call.failed_checks.length ? `failed check${call.failed_checks.length > 1 ? "s" : ""}: ` : "",
      ...call.failed_checks.map((name) => h("span", { class: "check bad" }, name))), // in words, not only in red
  ];
}

// A forwarded call: the number it was first placed to (Diversion, History-Info), masked as its caller is.
function diverted(call) {
  return call.original_called ? h("span", { class: "original-called muted" }, ` from ${call.original_called}`) : null;
}

function row(call) {
  const tr = h("tr", { "data-call-id": call.call_id, tabindex: 0 },
    h("td", { class: "ended-at" }, utc(call.ended_at_unix)),
    h("td", { class: "caller" }, call.caller),
    h("td", { class: "called" }, call.called, diverted(call)),
    h("td", { class: "dialplan" }, call.dialplan),
    h("td", { class: "variant" }, call.variant || "–"),
    h("td", { class: "duration" }, call.duration_s === null ? "–" : clock(call.duration_s)),
    h("td", { class: "reason" }, h("span", { class: "end-reason" }, call.end_reason), ...afterCall(call)),
    marks(call),
    h("td", { class: "last-line" }, call.last_transcript),
    h("td", { class: "downloads" }, download(call.call_id, "json", "JSON"), " ", download(call.call_id, "text", "Text")),
  );
  tr.className = severity(call);
  tr.addEventListener("click", () => onOpen(call.call_id));
  tr.addEventListener("keydown", (e) => e.key === "Enter" && e.target === tr && onOpen(call.call_id)); // not a link's
  return tr;
}

function remember(listId, values) {
  const list = $(listId);
  const known = new Set([...list.options].map((o) => o.value));
  for (const value of values) {
    if (value && !known.has(value)) {
      list.append(h("option", { value }));
      known.add(value);
    }
  }
}

async function load() {
  if (!running) return;
  const d = await current(query, () => running, $("ended-note"));
  if (d === null) return;
  page = d.page;
  $("ended").tBodies[0].replaceChildren(...d.calls.map(row));
  remember("ended-dialplans", d.calls.map((c) => c.dialplan));
  remember("ended-variants", d.calls.map((c) => c.variant));
  remember("ended-dispositions", d.calls.map((c) => c.disposition));
  $("ended-count").textContent = `(${d.total}${d.capped ? "+" : ""})`;
  $("ended-page").textContent = `page ${d.page} of ${d.pages}`;
  $("ended-newer").disabled = d.page <= 1;
  $("ended-older").disabled = d.page >= d.pages;
  $("ended-note").textContent = d.capped ? "Only the most recent calls were searched." : "";
  show($("ended-empty"), d.calls.length === 0);
}
