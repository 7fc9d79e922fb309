// One call as it happens (GET /api/live/calls/{id}): both sides' transcript, the phase timeline, barge-ins, tool
// calls (a business tool's with its outcome and latency), latency per segment, the first-audio time and the longest
// the caller waited in silence; for an ended call, its record from Redis.

import { events } from "./api.js";
import { $, h, ms, show } from "./dom.js";
import * as actions from "./actions.js";
import * as listen from "./listen.js";

let source = null;
let startedAt = null;
let count = 0;

const FACTS = [
  ["caller", "Caller"], ["called", "Called"], ["dialplan", "Dialplan"], ["variant", "Variant"], ["dialect", "Dialect"],
  ["model", "Model"],
  ["voice", "Voice"], ["phase", "Phase"], ["worker", "Worker"], ["end_reason", "Ended because"],
];

export function open(callId) {
  close();
  $("detail-id").textContent = callId;
  $("detail-state").textContent = "connecting";
  show($("detail-panel"), true);
  listen.showCall(callId, false);
  actions.showCall(callId, false);
  source = events(`/api/live/calls/${encodeURIComponent(callId)}`, {
    call: facts,
    entries: (list) => {
      reset();
      list.forEach(add);
    },
    entry: add,
    latency,
    done: () => {
      $("detail-state").textContent = "ended: record from Redis";
      listen.showCall(callId, false);
      actions.showCall(callId, false);
      source.close();
    },
    missing: () => {
      $("detail-state").textContent = "no such call in Redis";
      listen.showCall(callId, false);
      actions.showCall(callId, false);
      source.close();
    },
    store: (data) => {
      $("detail-state").textContent = `Redis unavailable: ${data.error || "no answer"}`;
    },
  });
  $("detail-panel").scrollIntoView({ block: "nearest" });
}

export function close() {
  if (source) source.close();
  source = null;
  listen.showCall(null, false);
  actions.showCall(null, false);
  reset();
  $("detail-facts").replaceChildren();
  $("longest-silence").textContent = "–"; // from the call's hash (facts), not its entries
  show($("detail-panel"), false);
}

function reset() {
  count = 0;
  for (const id of ["transcript", "phases", "barge-ins", "tools", "events"]) $(id).replaceChildren();
  $("latency").tBodies[0].replaceChildren();
  $("first-audio").textContent = "–";
  $("events-count").textContent = "0";
}

function facts(state) {
  startedAt = state.started_at ? Number(state.started_at) : null;
  const ended = state.phase === "ENDED";
  $("longest-silence").textContent = ms(state.longest_silence_ms ? Number(state.longest_silence_ms) : null);
  $("detail-state").textContent = ended ? "ended" : "live";
  listen.showCall($("detail-id").textContent, !ended);
  actions.showCall($("detail-id").textContent, !ended);
  $("detail-facts").replaceChildren(
    ...FACTS.filter(([key]) => state[key]).flatMap(([key, label]) => [
      h("dt", {}, label),
      h("dd", { "data-field": key }, state[key]),
    ]),
  );
}

function at(entry) {
  if (entry.t === null || startedAt === null) return "";
  return `+${(entry.t - startedAt).toFixed(1)} s`;
}

function add(entry) {
  const when = at(entry);
  count += 1;
  $("events-count").textContent = String(count);
  $("events").append(h("li", {}, h("time", {}, when), h("code", {}, entry.kind), " ", entry.summary));
  const kind = entry.kind;
  if (kind === "caller_transcript" || kind === "agent_transcript") {
    const who = kind === "caller_transcript" ? "caller" : "agent";
    $("transcript").append(
      h("li", { class: who }, h("span", { class: "who" }, who === "caller" ? "Caller" : "Agent"),
        h("time", {}, when), h("span", { class: "line" }, entry.summary)),
    );
  } else if (kind === "phase") {
    $("phases").append(h("li", {}, h("time", {}, when), `${entry.data.old || "?"} → ${entry.data.new || "?"}`,
      h("span", { class: "muted" }, ` ${entry.summary.split(": ").slice(1).join(": ")}`)));
  } else if (kind === "barge_in") {
    $("barge-ins").append(h("li", {}, h("time", {}, when), entry.summary));
  } else if (kind === "tool_call") {
    $("tools").append(h("li", {}, h("time", {}, when), h("code", {}, entry.data.name || ""), " ", entry.summary));
  } else if (kind === "tool_result") {
    const latency = entry.data.latency_ms ? Number(entry.data.latency_ms) : null;
    $("tools").append(h("li", { "data-tool": entry.data.name || "", "data-outcome": entry.data.outcome || "" },
      h("time", {}, when), h("code", {}, entry.data.name || ""), ` ${entry.data.outcome || "?"} in ${ms(latency)}`));
  }
}

function latency(data) {
  $("first-audio").textContent = ms(data.first_audio_ms);
  $("latency").tBodies[0].replaceChildren(
    ...data.segments.map((s) =>
      h("tr", { "data-segment": s.segment }, h("td", {}, s.label), h("td", {}, ms(s.last_ms)),
        h("td", {}, ms(s.median_ms)), h("td", {}, ms(s.max_ms)), h("td", {}, String(s.count))),
    ),
  );
}
