// A supervisor's actions on the open call (POST /api/calls/{id}/hangup, /transfer, /whisper, /takeover): each one
// asks for a confirmation in the page first. Viewers get no buttons (the server refuses them anyway). Take-over's
// microphone, socket and hand-back are takeover.js's.
//
// The question stays through every refresh of the call until the supervisor answers it, the call ends (the page
// says the action was not sent) or EXPIRE_MS pass (it says so too). A Yes always ends in a line under the buttons:
// "<action>: done (<worker>)", or why it failed; the line stays after the call ends, and says when it has.

import { request } from "./api.js";
import { $, show } from "./dom.js";
import * as takeover from "./takeover.js";

const EXPIRE_MS = 30000;
const QUESTIONS = {
  hangup: () => "Hang up this call? The agent says goodbye, then the call ends.",
  transfer: () => "Transfer this call to the plan's human target?",
  whisper: (text) => `Tell the agent “${text}” for the rest of the call?`,
  takeover: () => "Take over this call? The agent is muted and the caller hears your microphone until you hand back.",
};
const NAMES = { hangup: "the hang-up", transfer: "the transfer", whisper: "the whisper", takeover: "the take-over" };
let allowed = false;
let callId = null;
let live = null; // true: live; false: ended; null: not known yet (the call's facts have not come)
let pending = null; // { action, id, text, timer, ticker, until }
let typing = false; // the whisper's text is wanted: its field gets the focus once the buttons show

export function allow(yes) {
  allowed = yes;
  takeover.allow(yes);
  if (!yes) drop();
  showCall(callId, live);
}

// The detail shows call `id` (null: none); `isLive` as above. Called on every refresh of the call's facts: only
// another call, or the end of this one, ends a pending question.
export function showCall(id, isLive) {
  if (id !== callId) {
    drop();
    status("");
  } else if (isLive === false && live !== false) {
    if (pending) {
      const what = NAMES[pending.action];
      drop();
      status(`The call has ended: ${what} was not sent.`, "failed");
    } else if ($("action-state").textContent) {
      status(`${$("action-state").textContent} The call has ended.`, $("action-state").dataset.result);
    }
  }
  callId = id;
  live = isLive;
  show($("actions"), allowed && Boolean(id) && isLive === true);
  if (typing && !$("actions").hidden) {
    typing = false;
    $("whisper-text").focus();
  }
  takeover.showCall(id, isLive === true);
}

function status(text, result) {
  const line = $("action-state");
  line.textContent = text;
  line.className = `action-state${result ? ` ${result}` : ""}`;
  if (result) line.dataset.result = result;
  else delete line.dataset.result;
}

// Asks to confirm `action` on the open call (from the detail's buttons, or a live row's).
export function ask(action) {
  if (!allowed || !callId || live === false) return;
  const text = $("whisper-text").value.trim();
  if (action === "whisper" && !text) {
    status("Type what the agent should do, then press Whisper.");
    typing = $("actions").hidden;
    $("whisper-text").focus();
    return;
  }
  drop();
  const until = Date.now() + EXPIRE_MS;
  pending = { action, id: callId, text, until };
  pending.timer = setTimeout(() => {
    drop();
    status(`No answer within ${EXPIRE_MS / 1000} s: ${NAMES[action]} was not sent.`, "failed");
  }, EXPIRE_MS);
  pending.ticker = setInterval(countdown, 1000);
  $("action-question").textContent = QUESTIONS[action](text);
  $("action-confirm").dataset.action = action;
  countdown();
  show($("action-confirm"), true);
  status("");
  $("action-no").focus(); // the question has the focus, on its harmless answer; Escape answers No too
}

function countdown() {
  if (pending) $("action-expires").textContent = `(${Math.max(0, Math.ceil((pending.until - Date.now()) / 1000))} s)`;
}

function drop() {
  if (pending) {
    clearTimeout(pending.timer);
    clearInterval(pending.ticker);
  }
  pending = null;
  delete $("action-confirm").dataset.action;
  show($("action-confirm"), false);
}

async function confirmed() {
  const p = pending;
  drop();
  if (!p) return;
  if (p.action === "takeover") return takeover.start(p.id);
  const body = p.action === "whisper" ? { text: p.text } : p.action === "transfer" ? {} : undefined;
  status(`${p.action}: sending…`);
  const r = await request("POST", `/api/calls/${encodeURIComponent(p.id)}/${p.action}`, body);
  const other = p.id === callId ? "" : ` (call ${p.id})`;
  if (r.ok) {
    if (p.action === "whisper" && $("whisper-text").value.trim() === p.text) $("whisper-text").value = "";
    status(`${p.action}: done (${r.data.worker})${other}`, "done");
  } else {
    status(`${p.action} failed${other}: ${r.data.error || `HTTP ${r.status}`}`, "failed");
  }
  document.dispatchEvent(new CustomEvent("console:acted", { detail: { call_id: p.id, action: p.action } }));
}

export function wire() {
  for (const button of document.querySelectorAll("#actions button[data-action]")) {
    button.addEventListener("click", () => ask(button.dataset.action));
  }
  $("whisper-text").addEventListener("keydown", (e) => e.key === "Enter" && ask("whisper"));
  $("action-yes").addEventListener("click", confirmed);
  const no = () => {
    drop();
    status("Not sent.");
  };
  $("action-no").addEventListener("click", no);
  $("action-confirm").addEventListener("keydown", (e) => e.key === "Escape" && no());
  takeover.wire();
}
