// One call as it happens (GET /api/live/calls/{id}): its marks (as the lists show them), both sides' transcript, the
// supervisors' actions on it (from the call-actions audit: who, what, whether a worker took it), the phase timeline,
// barge-ins, tool calls (a business tool's with its outcome and latency), latency per segment, and the call's
// figures as its worker measured them (the hash: greeting, first reply, longest wait, longest dead air; defined in
// docs/operating.md), its trace (linked to the trace UI when one is set); for an ended call, its record from Redis.
//
// An agent line is stamped when its audio began (the first phase -> SPEAKING after its item was added; the
// transcript's own entry comes when the line is over), and marked as interrupted when a barge-in cut it (a
// "truncate" entry names its item; a dialect that cannot truncate: the barge-in while it played). The lists follow
// their newest entry unless the reader has scrolled up in them. A caller's line is stamped when they began speaking
// (the first speech_started since their previous line; its transcript comes once they stop).

import { events } from "./api.js";
import { $, h, ms, show } from "./dom.js";
import * as actions from "./actions.js";
import * as listen from "./listen.js";
import { chips } from "./marks.js";
import { ITEM_TYPE, KIND, PHASE } from "./kinds.js";

let source = null;
let startedAt = null;
let count = 0;
let shown = null; // the call id on show
let said = null; // per agent item: { audioAt, li, cutMs }; and where the call is: { items, adding, speaking, phase }
let bulk = false; // the first entries, drawn at once: the lists are scrolled to their end after them
let opener = null; // what had the focus when the call was opened (a row, a link): Close gives it back
const FOLLOWED = ["transcript", "call-actions", "phases", "barge-ins", "tools"];

const FACTS = [
  ["caller", "Caller"], ["called", "Called"], ["original_called", "Originally called"], ["dialplan", "Dialplan"],
  ["variant", "Variant"], ["dialect", "Dialect"], ["model", "Model"],
  ["voice", "Voice"], ["phase", "Phase"], ["worker", "Worker"], ["end_reason", "Ended because"],
];

// The call's figures, from its hash (the same numbers as the plan strip and the metrics): field, element.
const FIGURES = [["greeting_ms", "greeting"], ["first_reply_ms", "first-reply"], ["longest_wait_ms", "longest-wait"],
  ["longest_silence_ms", "longest-silence"]];

export function current() {
  return shown;
}

// Opens call `callId` and takes the focus to its heading, so that a keyboard (Enter on a row) and a screen reader
// land in the call; Close (dismiss) gives the focus back.
export function open(callId) {
  const from = document.activeElement;
  close();
  if (from && from !== document.body && !$("detail-panel").contains(from)) {
    opener = from.closest("tr[data-call-id]") || from; // a row's button is drawn again with its row: the row stays
  }
  shown = callId;
  $("detail-id").textContent = callId;
  $("detail-state").textContent = "connecting";
  show($("detail-panel"), true);
  document.dispatchEvent(new CustomEvent("console:call-shown", { detail: { call_id: callId } }));
  listen.showCall(callId, false);
  actions.showCall(callId, null);
  source = events(`/api/live/calls/${encodeURIComponent(callId)}`, {
    call: facts,
    entries: (list) => {
      reset();
      bulk = true;
      list.forEach(add);
      bulk = false;
      for (const id of FOLLOWED) $(id).scrollTop = $(id).scrollHeight;
    },
    entry: add,
    latency,
    marks: (data) => {
      $("detail-marks").replaceChildren(...chips(data.flags));
      $("detail-marks").dataset.severity = data.severity || "";
    },
    actions: (list) => {
      followed($("call-actions")).replaceChildren(...list.map(actionItem));
      $("call-actions").scrollTop = $("call-actions").scrollHeight;
    },
    action: (entry) => follow($("call-actions"), actionItem(entry)),
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
  $("detail-heading").focus({ preventScroll: true });
}

// Close, from the panel's button: the focus goes back where the call was opened from (its row, if it is still
// there), or to the live calls.
export function dismiss() {
  const back = opener && opener.isConnected && !opener.closest("[hidden]") ? opener : $("calls-heading");
  opener = null;
  close();
  back.focus();
}

export function close() {
  if (source) source.close();
  source = null;
  shown = null;
  listen.showCall(null, false);
  actions.showCall(null, false);
  reset();
  $("call-actions").replaceChildren();
  $("detail-facts").replaceChildren();
  for (const id of FIGURES.map(([, el]) => el)) $(id).textContent = "–"; // from the call's hash (facts)
  $("detail-marks").replaceChildren();
  show($("detail-panel"), false);
  document.dispatchEvent(new CustomEvent("console:call-shown", { detail: { call_id: null } }));
}

function reset() {
  count = 0;
  said = { items: new Map(), adding: null, speaking: null, phase: null, truncated: false, callerFrom: null };
  for (const id of ["transcript", "phases", "barge-ins", "tools", "events"]) $(id).replaceChildren();
  for (const id of FOLLOWED) followed($(id)).dataset.follow = "1";
  $("latency").tBodies[0].replaceChildren();
  $("events-count").textContent = "0";
}

function facts(state) {
  startedAt = state.started_at_unix ?? null;
  const ended = state.phase === PHASE.ENDED;
  for (const [key, id] of FIGURES) $(id).textContent = ms(state[key] ? Number(state[key]) : null);
  $("detail-state").textContent = ended ? "ended" : "live";
  listen.showCall($("detail-id").textContent, !ended);
  actions.showCall($("detail-id").textContent, !ended);
  $("detail-facts").replaceChildren(
    ...FACTS.filter(([key]) => state[key]).flatMap(([key, label]) => [
      h("dt", {}, label),
      h("dd", { "data-field": key }, state[key]),
    ]),
    ...traceFact(state),
  );
}

// A traced call's trace id (tracing: otlp), a link to the trace UI when the server made one (tracing_ui_url: an
// http(s) template it checked, the id 32 hex digits); the id is text either way.
function traceFact(state) {
  if (!state.trace_id) return [];
  const url = String(state.trace_url || "");
  const id = /^https?:\/\//i.test(url)
    ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, state.trace_id)
    : state.trace_id;
  return [h("dt", {}, "Trace"), h("dd", { "data-field": "trace_id" }, id)];
}

function at(t) {
  if (t === null || t === undefined || startedAt === null) return "";
  return `+${(t - startedAt).toFixed(1)} s`;
}

// A list follows its newest entry (data-follow) until the reader scrolls up in it, and again once they scroll back
// to its end; a list that changes size (the window, the panel) keeps following.
const wired = new WeakSet();

function followed(list) {
  if (wired.has(list)) return list;
  wired.add(list);
  list.dataset.follow = "1";
  list.addEventListener("scroll", () => {
    list.dataset.follow = list.scrollTop + list.clientHeight >= list.scrollHeight - 8 ? "1" : "";
  });
  new ResizeObserver(() => {
    if (list.dataset.follow) list.scrollTop = list.scrollHeight;
  }).observe(list);
  return list;
}

function follow(list, li) {
  followed(list).append(li);
  if (!bulk && list.dataset.follow) list.scrollTop = list.scrollHeight;
}

function item(itemId) {
  if (!said.items.has(itemId)) said.items.set(itemId, { audioAt: null, li: null, cutMs: null });
  return said.items.get(itemId);
}

function markCut(known) {
  if (!known.li || known.li.classList.contains("interrupted")) return;
  known.li.classList.add("interrupted");
  const heard = known.cutMs === null ? "" : ` after ${(known.cutMs / 1000).toFixed(1)} s`;
  known.li.append(h("span", { class: "cut" }, `interrupted by the caller${heard}`));
}

function agentLine(entry) {
  const known = item(entry.data.item_id || `entry-${entry.id}`);
  const began = known.audioAt ?? entry.t_unix;
  known.li = h("li", { class: "agent", "data-item-id": entry.data.item_id || "", "data-t": began ?? "",
    title: entry.t_unix === null ? null : `line over at ${at(entry.t_unix)}` },
  h("span", { class: "who" }, "Agent"), h("time", {}, at(began)), h("span", { class: "line" }, entry.summary));
  if (known.cutMs !== null || known.cut) markCut(known);
  follow($("transcript"), known.li);
}

// What the entries tell about the agent's lines: when each one's audio began, and which a barge-in cut.
function track(entry) {
  const kind = entry.kind;
  if (kind === KIND.SPEECH_STARTED) {
    said.callerFrom ??= entry.t_unix; // the caller's line began here (its transcript comes once they stop)
  } else if (kind === KIND.CALLER_TRANSCRIPT_FAILED) {
    said.callerFrom = null; // that speech has no line
  } else if (kind === KIND.OUTPUT_ITEM && entry.data.item_type === ITEM_TYPE.MESSAGE) {
    said.adding = entry.data.item_id;
  } else if (kind === KIND.PHASE) {
    said.phase = entry.data.new;
    if (entry.data.new === PHASE.SPEAKING && said.adding) {
      const known = item(said.adding);
      if (known.audioAt === null) known.audioAt = entry.t_unix;
      said.speaking = said.adding;
      said.adding = null;
    }
  } else if (kind === KIND.TRUNCATE) {
    const known = item(entry.data.item_id);
    known.cutMs = Number(entry.data.audio_end_ms);
    said.truncated = true;
    markCut(known);
  } else if (kind === KIND.BARGE_IN) {
    if (!said.truncated && said.phase === PHASE.SPEAKING && said.speaking) {
      const known = item(said.speaking);
      known.cut = true;
      markCut(known);
    }
    said.truncated = false;
  }
}

function add(entry) {
  const when = at(entry.t_unix);
  count += 1;
  $("events-count").textContent = String(count);
  $("events").append(h("li", {}, h("time", {}, when), h("code", {}, entry.kind), " ", entry.summary));
  track(entry);
  const kind = entry.kind;
  if (kind === KIND.CALLER_TRANSCRIPT) {
    const began = said.callerFrom ?? entry.t_unix; // stamped when the caller began speaking, as agent lines are
    said.callerFrom = null;
    follow($("transcript"), h("li", { class: "caller", "data-t": began ?? "",
      title: entry.t_unix === null ? null : `transcribed at ${at(entry.t_unix)}` },
    h("span", { class: "who" }, "Caller"), h("time", {}, at(began)), h("span", { class: "line" }, entry.summary)));
  } else if (kind === KIND.AGENT_TRANSCRIPT) {
    agentLine(entry);
  } else if (kind === KIND.PHASE) {
    follow($("phases"), h("li", {}, h("time", {}, when), `${entry.data.old || "?"} → ${entry.data.new || "?"}`,
      h("span", { class: "muted" }, ` ${entry.data.why || ""}`)));
  } else if (kind === KIND.BARGE_IN) {
    follow($("barge-ins"), h("li", {}, h("time", {}, when), entry.summary));
  } else if (kind === KIND.TOOL_CALL) {
    follow($("tools"), h("li", {}, h("time", {}, when), h("code", {}, entry.data.name || ""), " ", entry.summary));
  } else if (kind === KIND.TOOL_RESULT) {
    const latency = entry.data.latency_ms ? Number(entry.data.latency_ms) : null;
    follow($("tools"), h("li", { "data-tool": entry.data.name || "", "data-outcome": entry.data.outcome || "" },
      h("time", {}, when), h("code", {}, entry.data.name || ""), ` ${entry.data.outcome || "?"} in ${ms(latency)}`));
  }
}

// One audited supervisor action on this call: when, who, what (a whisper's words, a transfer's target), the result.
function actionItem(a) {
  const what = a.text ? `: “${a.text}”` : a.target ? ` to ${a.target}` : "";
  const taken = a.action === "takeover-audio" ? "" : a.worker ? ` (done by ${a.worker})` : " (no worker took it)";
  return h("li", { "data-audit-id": a.id, "data-action": a.action, "data-who": a.who,
    class: a.action !== "takeover-audio" && !a.worker ? "failed" : null },
  h("time", {}, at(a.at_unix)), h("span", { class: "who" }, a.who), `${a.action}${what}${taken}`);
}

function latency(data) {
  $("latency").tBodies[0].replaceChildren(
    ...data.segments.map((s) =>
      h("tr", { "data-segment": s.segment }, h("td", {}, s.label), h("td", {}, ms(s.last_ms)),
        h("td", {}, ms(s.median_ms)), h("td", {}, ms(s.max_ms)), h("td", {}, String(s.count))),
    ),
  );
}
